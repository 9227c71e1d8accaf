"""The other readers: Markov models (gzip bombs), magenta.js configs (numSteps), GPT-2
configs (the engine's and a Hugging Face folder's, with its safetensors header), MIDI
files (note pairing) and MIDI folders (link loops): refused within the limits, or read in
time linear in the file; and a fuzz test per reader under the memory and time limit.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import struct
from pathlib import Path

import pytest

SHIPPED = Path(__file__).resolve().parents[2] / "models_onnx"


# ---- Markov models ---------------------------------------------------------------------

def gzip_bomb(path: Path, unpacked: int, seed: int) -> Path:
    """A gzip file that unpacks to ``unpacked`` bytes of JSON-looking text (a long string
    in a valid document head), written in pieces so the test itself stays small."""
    rng = random.Random(seed)
    filler = rng.choice([b" ", b"a", b"[", b"0"])
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b'{"format": "encore-markov-lyricist", "version": 1, "pad": "')
        piece = filler * 2**20
        for _ in range(unpacked // len(piece)):
            f.write(piece)
        f.write(b'"}')
    return path


def test_gzip_bombs_are_refused_after_a_bounded_unpacking(tmp_path: Path, bounded) -> None:
    rng = random.Random(6)
    paths = [str(gzip_bomb(tmp_path / f"bomb{n}.json.gz", rng.randint(200, 1000) * 2**20, n))
             for n in range(3)]
    assert all(Path(p).stat().st_size < 3 * 2**20 for p in paths)  # megabytes that unpack
    bounded.all_refused("from engine.lyrics.markov import MarkovLyricist", f"""
        each_refused([(p, lambda p=p: MarkovLyricist.load(p)) for p in {paths!r}],
                     "{{label}}", "unpacks to more than")
        """)


def test_fuzz_markov_files(tmp_path: Path, bounded) -> None:
    """Random documents, gzipped or not, and the shipped model's bytes damaged at random."""
    bounded.fuzz("""
        import gzip, json
        from engine.lyrics.markov import MarkovLyricist
        """, f"""
        good = open({str(SHIPPED / 'lyrics_markov.json.gz')!r}, "rb").read()[:200_000]
        docs = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                            lambda c: st.lists(c, max_size=4) |
                            st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=12)
        path = {str(tmp_path / 'fuzz.json.gz')!r}

        @given(doc=docs, order=st.integers(-3, 5), raw=st.booleans(),
               cut=st.integers(0, 200_000), flip=st.binary(max_size=8))
        @fuzz(60)
        def test(doc, order, raw, cut, flip):
            if raw:
                data = good[:cut] + flip + good[cut + len(flip):]
            else:
                data = gzip.compress(json.dumps({{"format": "encore-markov-lyricist",
                                                  "version": 1, "order": order,
                                                  "counts": doc}}).encode())
            with open(path, "wb") as f:
                f.write(data)
            MarkovLyricist.load(path)

        test()
        """)


# ---- magenta.js configs -------------------------------------------------------------------

def test_magenta_sequence_lengths_out_of_range_are_refused(bounded) -> None:
    pytest.importorskip("torch")
    cases = [4096, 2**40, 0, -32, 33.0, "32", None, 10**30]
    bounded.all_refused("from export.convert_magenta_js import _parse_config", f"""
        def config(steps, segments=None):
            args = {{"numSteps": steps, "minPitch": 21, "maxPitch": 108}}
            if segments is not None:
                args["numSegments"] = segments
            return {{"type": "MusicVAE", "dataConverter": {{"type": "MelodyConverter",
                                                           "args": args}}}}

        calls = [(repr(s), lambda s=s: _parse_config(config(s))) for s in {cases!r}]
        calls += [(f"segments {{s}}", lambda s=s: _parse_config(config(32, s)))
                  for s in (2**40, -1, 1000)]
        each_refused(calls, "config.json: dataConverter.args.num")
        """)


def test_fuzz_magenta_configs(bounded) -> None:
    pytest.importorskip("torch")
    bounded.fuzz("from export.convert_magenta_js import _parse_config", """
        values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() |
                              st.text(max_size=20), lambda c: st.lists(c, max_size=4) |
                              st.dictionaries(st.text(max_size=10), c, max_size=4),
                              max_leaves=10)
        kinds = st.sampled_from(["MelodyConverter", "DrumsConverter", "TrioConverter", "x"])

        @given(kind=kinds, args=st.dictionaries(
            st.sampled_from(["numSteps", "numSegments", "minPitch", "maxPitch", "melArgs",
                             "bassArgs", "drumsArgs", "other"]), values, max_size=6),
            top=values)
        @fuzz(80)
        def test(kind, args, top):
            _parse_config({"type": "MusicVAE", "dataConverter": {"type": kind, "args": args}})
            _parse_config(top)

        test()
        """)


# ---- GPT-2: the engine's config and a Hugging Face folder --------------------------------

def _gpt2_folder(tmp_path: Path, **changes: object) -> Path:
    folder = tmp_path / "gpt2"
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((SHIPPED / "lyrics_gpt2" / "encore_gpt2.json").read_text())
    (folder / "encore_gpt2.json").write_text(json.dumps(config | changes))
    for name in ("model.onnx", "tokenizer.json"):
        if not (folder / name).exists():
            (folder / name).symlink_to(SHIPPED / "lyrics_gpt2" / name)
    return folder


def test_engine_gpt2_configs_of_absurd_sizes_are_refused(tmp_path: Path, bounded) -> None:
    cases = [{"n_layer": 100_000}, {"n_head": 0}, {"head_dim": 2**40}, {"vocab_size": 10**12},
             {"n_positions": -1}, {"n_layer": 1e5}]
    folders = [str(_gpt2_folder(tmp_path / str(n), **c)) for n, c in enumerate(cases)]
    (Path(folders[0]) / "encore_gpt2.json").write_text("[1, 2, 3]")  # a list, not an object
    bounded.all_refused("from engine.lyrics.gpt2_runner import GPT2Lyricist", f"""
        each_refused([(f, lambda f=f: GPT2Lyricist.load(f)) for f in {folders!r}],
                     "{{label}}/encore_gpt2.json")
        """)


def _hf_folder(tmp_path: Path, config: object, header: bytes | None = None) -> Path:
    folder = tmp_path / "hf"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    data = header if header is not None else _safetensors({"wte.weight": [16, 8]})
    (folder / "model.safetensors").write_bytes(data)
    (folder / "tokenizer.json").symlink_to(SHIPPED / "lyrics_gpt2" / "tokenizer.json")
    return folder


def _safetensors(tensors: dict[str, list[int]]) -> bytes:
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * int(__import__("math").prod(shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + bytes(offset)


def _lying_safetensors() -> bytes:
    """A header that claims a tensor of 2**80 numbers in a file of a few bytes."""
    head = json.dumps({"w": {"dtype": "F32", "shape": [2**40, 2**40],
                             "data_offsets": [0, 2**82]}}).encode()
    return struct.pack("<Q", len(head)) + head + bytes(16)


SMALL_HF = {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 8, "n_positions": 16,
            "vocab_size": 16}


def test_hf_folders_that_lie_are_refused_before_transformers_reads_them(
        tmp_path: Path, bounded) -> None:
    pytest.importorskip("transformers")
    cases = [SMALL_HF | {"n_layer": 100_000}, [SMALL_HF], SMALL_HF | {"n_head": 0},
             SMALL_HF | {"n_embd": 10**9}, SMALL_HF | {"n_layer": "12"},
             SMALL_HF | {"model_type": "llama"}, "x" * 1000]
    folders = [str(_hf_folder(tmp_path / str(n), c)) for n, c in enumerate(cases)]
    headers = [b"\xff" * 8 + b"{}", struct.pack("<Q", 10) + b"not json!!",
               struct.pack("<Q", 2) + b"[]", b"\x01",
               _lying_safetensors()]
    folders += [str(_hf_folder(tmp_path / f"h{n}", SMALL_HF, h)) for n, h in enumerate(headers)]
    bounded.all_refused("from export.gpt2_onnx import check_hf_folder, load_hf", f"""
        each_refused([(f, lambda f=f: load_hf(f)) for f in {folders!r}], "{{label}}/")
        """)


def test_fuzz_hf_configs(tmp_path: Path, bounded) -> None:
    pytest.importorskip("transformers")
    folder = _hf_folder(tmp_path, SMALL_HF)
    bounded.fuzz("""
        import json
        from pathlib import Path
        from export.gpt2_onnx import check_hf_folder
        """, f"""
        folder = Path({str(folder)!r})
        values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5) \\
            | st.lists(st.integers(), max_size=3)

        @given(changes=st.dictionaries(st.sampled_from(sorted({SMALL_HF!r})), values,
                                       max_size=3),
               header=st.binary(max_size=64))
        @fuzz(60)
        def test(changes, header):
            (folder / "config.json").write_text(json.dumps({SMALL_HF!r} | changes))
            check_hf_folder(folder)
            (folder / "model.safetensors").write_bytes(header)
            check_hf_folder(folder)

        test()
        """)


def test_fuzz_engine_gpt2_configs(tmp_path: Path, bounded) -> None:
    folder = _gpt2_folder(tmp_path)
    bounded.fuzz("""
        import json
        from pathlib import Path
        from engine.lyrics.gpt2_runner import read_config
        """, f"""
        folder = Path({str(folder)!r})
        base = json.loads((folder / "encore_gpt2.json").read_text())
        values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() |
                              st.text(max_size=8), lambda c: st.lists(c, max_size=4),
                              max_leaves=8)

        @given(changes=st.dictionaries(st.sampled_from(sorted(base)), values, max_size=3),
               top=st.booleans())
        @fuzz(80)
        def test(changes, top):
            doc = base | changes if top else [base | changes]
            (folder / "encore_gpt2.json").write_text(json.dumps(doc))
            read_config(folder)

        test()
        """)


# ---- MIDI ----------------------------------------------------------------------------------

def _midi_with_overlapping_notes(path: Path, n: int) -> Path:
    """``n`` note-ons of one pitch, then ``n`` note-offs: the pairing's worst case."""
    body = b"".join(b"\x01\x90\x3c\x40" for _ in range(n)) + \
        b"".join(b"\x01\x80\x3c\x40" for _ in range(n)) + b"\x00\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk"
                     + struct.pack(">I", len(body)) + body)
    return path


def test_note_pairing_is_linear_in_same_pitch_notes(tmp_path: Path, bounded) -> None:
    """70,000 overlapping same-pitch notes (140,000 events, a 560 kB file: under the event
    limit) are read and paired within the limit (most of it is mido parsing the events; the
    pairing was quadratic: list.pop(0))."""
    path = _midi_with_overlapping_notes(tmp_path / "overlap.mid", 70_000)
    outcome = bounded.run("from engine.music.midi_io import read_midi", f"""
        notes = read_midi({str(path)!r}).tracks[0].notes
        assert len(notes) == 70_000, len(notes)
        """)
    assert outcome.verdict == "ACCEPTED" and outcome.seconds < 4 * bounded.quick_s, outcome


def _big_midi(path: Path, rng: random.Random) -> Path:
    """A valid-looking MIDI file of up to 16 MiB: millions of events (running status, tiny
    deltas), or long SysEx and text messages, or many tracks; mido would take minutes."""
    kind = rng.choice(["running", "notes", "sysex", "text", "tracks"])
    if kind == "tracks":
        track = b"MTrk" + struct.pack(">I", 4 * 3000 + 4) + \
            b"\x00\x90\x3c\x40" * 3000 + b"\x00\xff\x2f\x00"
        return _write_midi(path, [track] * 100)
    if kind in ("running", "notes"):
        event = b"\x00\x3c\x40" if kind == "running" else b"\x01\x90\x3c\x40"
        body = b"\x00\x90\x3c\x40" + event * (rng.randint(4, 15) * 2**20 // len(event) - 8)
    else:
        payload = bytes(rng.randrange(128) for _ in range(64)) * 1000
        length = bytes([0x80 | len(payload) >> 14, 0x80 | (len(payload) >> 7) & 0x7F,
                        len(payload) & 0x7F])  # a variable-length number of 3 bytes
        status = b"\x00\xf0" if kind == "sysex" else b"\x00\xff\x01"
        body = (status + length + payload) * 250
    return _write_midi(path, [b"MTrk" + struct.pack(">I", len(body) + 4) + body
                              + b"\x00\xff\x2f\x00"])


def _write_midi(path: Path, tracks: list[bytes]) -> Path:
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), 480) + b"".join(tracks))
    return path


def test_a_large_valid_looking_midi_file_is_refused_within_the_limit(tmp_path: Path,
                                                                     bounded) -> None:
    rng = random.Random(14)
    paths = [str(_big_midi(tmp_path / f"big{n}.mid", rng)) for n in range(4)]
    bounded.all_refused("from engine.music.midi_io import read_midi", f"""
        each_refused([(p, lambda p=p: read_midi(p)) for p in {paths!r}],
                     "{{label}}", "too many events", "split it")
        """)


def test_a_link_loop_in_a_midi_folder_does_not_stop_training(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from engine.music.midi_io import write_midi
    from engine.music.notes import Note
    from export.train_musicvae import midi_files, windows_from_midi

    folder = tmp_path / "midi"
    (folder / "sub").mkdir(parents=True)
    notes = [Note(s, 60 + s % 12, s + 2, 100) for s in range(0, 128, 2)]
    write_midi(folder / "sub" / "good.mid", {"melody": notes}, bpm=120)
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)  # a folder loop
    (folder / "self.mid").symlink_to(folder / "self.mid")                   # a link to itself
    (folder / "dangling.mid").symlink_to(tmp_path / "gone.mid")
    os.mkfifo(folder / "fifo.mid")
    assert [p.name for p in midi_files(folder)] == ["dangling.mid", "fifo.mid", "self.mid",
                                                    "good.mid"]
    data = windows_from_midi(folder, 4)
    assert len(data.events) > 0 and set(data.source) == {str(folder / "sub" / "good.mid")}


def test_fuzz_midi_files(tmp_path: Path, bounded) -> None:
    """A good file's bytes damaged at random (headers, lengths, delta times, events) and
    random event streams: read and quantised, or refused."""
    good = tmp_path / "good.mid"
    shutil.copy(_midi_with_overlapping_notes(tmp_path / "base.mid", 50), good)
    bounded.fuzz("""
        import struct
        from engine.music.midi_io import quantize, quantize_to_windows, read_midi
        """, f"""
        good = open({str(good)!r}, "rb").read()
        path = {str(tmp_path / 'fuzz.mid')!r}

        @given(at=st.integers(0, len(good)), patch=st.binary(max_size=12),
               events=st.binary(max_size=400), mode=st.integers(0, 2))
        @fuzz(100)
        def test(at, patch, events, mode):
            if mode == 0:
                data = good[:at] + patch + good[at + len(patch):]
            elif mode == 1:
                data = good[:22] + struct.pack(">I", len(events)) + events
            else:
                data = good[:at] + events
            with open(path, "wb") as f:
                f.write(data)
            quantize_to_windows(quantize(read_midi(path)), 4, 1)

        test()
        """)
