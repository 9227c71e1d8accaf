"""Hostile and broken files are refused before the show, quickly, with a message that names
the file and what is wrong with it (the "gig safety" issue).

Every loader a user can point at a file is fed truncated files, random bytes, lies in
headers (a MIDI header claiming 1000 tracks, a chunk longer than the file, a delta time
no MIDI file can hold), valid containers with the wrong contents (an ONNX graph with
other tensor names, a config with the wrong types) and parser bombs (deep nesting, a
10 MB patch). Each refusal must be a ValueError or OSError subclass, the two kinds that
``encore`` turns into ``encore: error: ...`` and exit status 2, never a bare
struct.error / IndexError / KeyError / TypeError / RecursionError or a protobuf error
from a parser underneath, which would reach the user as a traceback (or, for ``singer =
"auto"``, stop the search for a usable voicebank). One case per loader also goes through
``engine.cli.main`` to check the exit status and the message.

The Markov file and voicebank cases are only those their own tests (tests/lyrics/
test_markov.py, tests/voice/test_voicebank.py) do not cover.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from engine.cli import main
from engine.lyrics.gpt2_runner import GPT2Lyricist
from engine.lyrics.markov import MarkovLyricist
from engine.music.midi_io import quantize, quantize_to_windows, read_midi, write_midi
from engine.music.musicvae_runner import MusicVAERunner, load_model
from engine.music.notes import Note
from engine.patch import MAX_PATCH_BYTES, PatchError, load_patch
from engine.voice.voicebank import VoicebankError, load_voicebank

pytestmark = [pytest.mark.filterwarnings("ignore::Warning:torch"),  # the ONNX exporter notes
              pytest.mark.filterwarnings("ignore::DeprecationWarning:export")]

QUICK_S = 5.0
"""A refusal takes less than this (generous: the machine may be busy); before the fixes a
bad delta time or a deep table header took minutes."""
RNG_SEED = 20240
DEEP = 100_000
"""Nesting depth of the parser bombs: far past Python's recursion limit."""
NOT_FILES = [pytest.param("/dev/zero", marks=pytest.mark.skipif(
    not Path("/dev/zero").exists(), reason="no /dev/zero here")), "."]
"""Paths that are no file: a device that never ends (read whole, it fills the memory), a
folder."""


def _garbage(n: int, seed: int = RNG_SEED) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def refused(call: Callable[[], object], *expected: str) -> Exception:
    """Run ``call``; it must raise a ValueError or OSError, quickly, whose message holds every
    string of ``expected``. Returns the error."""
    started, cpu_started = time.perf_counter(), time.process_time()
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked below
        call()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    error = caught.value
    assert isinstance(error, ValueError | OSError), (
        f"a raw {type(error).__name__} leaked instead of a ValueError/OSError: {error}")
    message = str(error)
    for text in expected:
        assert text in message, f"{text!r} not in the message {message!r}"
    if elapsed >= QUICK_S and cpu < QUICK_S / 2 and os.getloadavg()[0] > (os.cpu_count() or 1):
        # slow on the clock, yet it used little CPU while others held the cores
        pytest.xfail(f"the refusal took {elapsed:.1f} s, {cpu:.1f} s of it on the CPU, "
                     f"load average {os.getloadavg()[0]:.1f}: this machine did not keep up")
    assert elapsed < QUICK_S, f"the refusal took {elapsed:.1f} s ({cpu:.1f} s CPU)"
    return error


def cli_refuses(argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """``encore ARGV`` must exit with status 2 and ``encore: error: ...`` naming ``expected``.
    Returns what it printed to stdout before."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert err.startswith("encore: error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    return out


# ---- MIDI files --------------------------------------------------------------------------

def _header(tracks: int, fmt: int = 1, ticks: int = 480) -> bytes:
    return b"MThd" + struct.pack(">IHHH", 6, fmt, tracks, ticks)


def _track(body: bytes) -> bytes:
    return b"MTrk" + struct.pack(">I", len(body)) + body


NOTE = b"\x00\x90\x3c\x40\x60\x80\x3c\x40"  # C4 on at 0, off 96 ticks later
END = b"\x00\xff\x2f\x00"


def _good_midi(path: Path) -> bytes:
    write_midi(path, {"melody": [Note(0, 60, 4, 100), Note(4, 64, 8, 100)],
                      "bass": [Note(0, 36, 8, 100)]}, bpm=120)
    return path.read_bytes()


HOSTILE_MIDI: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    # name: (the file made from a good one, the problem the message names)
    "truncated": (lambda good: good[: len(good) // 2], "truncated"),
    "random_bytes": (lambda good: _garbage(4096), "no MThd header"),
    "random_after_header": (lambda good: b"MThd" + _garbage(4096), "not a readable MIDI"),
    "zero_length": (lambda good: b"", "empty"),
    "1000_tracks_claimed": (lambda good: _header(1000) + _track(NOTE + END), "truncated"),
    "chunk_beyond_file": (lambda good: _header(1) + b"MTrk" + struct.pack(">I", 10**9)
                          + NOTE + END, "truncated"),
    "delta_over_4_bytes": (lambda good: _header(1) + _track(
        b"\x00\x90\x3c\x40" + b"\xff" * 4000 + b"\x7f\x80\x3c\x40" + END),
        "variable-length number"),
    "delta_at_the_limit": (lambda good: _header(1) + _track(
        b"\x00\x90\x3c\x40" + b"\xff\xff\xff\x7f\x80\x3c\x40" + END), "beats of music"),
    "tempo_of_zero": (lambda good: _header(1) + _track(
        b"\x00\xff\x51\x03\x00\x00\x00" + NOTE + END), "tempo of 0"),
}


def test_the_good_midi_file_broken_here_reads(tmp_path: Path) -> None:
    path = tmp_path / "good.mid"
    _good_midi(path)
    assert len(quantize(read_midi(path))["melody"]) == 2
    path.write_bytes(_header(1) + _track(NOTE + END))  # the hand-made chunks, unbroken
    assert [n.pitch for n in read_midi(path).tracks[0].notes] == [60]


@pytest.mark.parametrize("name", sorted(HOSTILE_MIDI))
def test_a_hostile_midi_file_is_refused_by_name(tmp_path: Path, name: str) -> None:
    make, problem = HOSTILE_MIDI[name]
    path = tmp_path / f"{name}.mid"
    path.write_bytes(make(_good_midi(tmp_path / "good.mid")))

    def read_and_slice() -> None:  # what `encore train musicvae --midi-dir` does per file
        quantize_to_windows(quantize(read_midi(path)), 4, 1)

    message = str(refused(read_and_slice, problem))
    assert message.startswith(f"{path}: not a readable MIDI file (")


@pytest.mark.parametrize("path", NOT_FILES, ids=["endless_device", "folder"])
def test_a_midi_path_that_is_no_file_is_refused(path: str) -> None:
    refused(lambda: read_midi(path), f"{path}: not a readable MIDI file (not a file)")


def test_a_midi_folder_of_hostile_files_is_refused_by_train(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    folder = tmp_path / "midi"
    folder.mkdir()
    good = _good_midi(tmp_path / "good.mid")
    for name, (make, _problem) in HOSTILE_MIDI.items():
        (folder / f"{name}.mid").write_bytes(make(good))
    started = time.perf_counter()
    out = cli_refuses(["train", "musicvae", "--preset", "trio_4bar", "--midi-dir", str(folder),
                       "--out", str(tmp_path / "run")], capsys, str(folder),
                      "no usable 4-bar windows")
    assert time.perf_counter() - started < 4 * QUICK_S
    for name in HOSTILE_MIDI:  # each file skipped, by name and why
        assert f"skipping {folder / name}.mid: not a readable MIDI file (" in out
    assert not (tmp_path / "run").exists()


# ---- MusicVAE ONNX models --------------------------------------------------------------------
# The shipped models are the good files broken here (nothing is trained or exported for this
# file); graphs with other contents are built with the onnx helper and given the metadata
# the runner reads first.

SHIPPED = Path(__file__).resolve().parents[1] / "models_onnx"
DECODER = SHIPPED / "trio_4bar.decoder.onnx"
ENCODER = SHIPPED / "trio_4bar.encoder.onnx"
GPT2 = SHIPPED / "lyrics_gpt2"
TRIO_CONFIG = {"name": "trio_4bar", "parts": ["melody", "bass", "drums"], "bars": 4,
               "steps_per_bar": 16, "z_size": 128, "conductor_size": 128}
DEPTH = 90 + 90 + 512  # melody, bass, drums classes
F32 = 1  # onnx.TensorProto.FLOAT


def _graph(path: Path, inputs: dict[str, list], outputs: dict[str, str],
           config: object = TRIO_CONFIG) -> Path:
    """A valid ONNX graph with a decoder's Encore metadata (``config`` as encore.config) and
    float tensors: ``inputs`` ``{name: shape}``, ``outputs`` ``{name: the input it copies}``."""
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Identity", [source], [name]) for name, source in outputs.items()],
        "other", [helper.make_tensor_value_info(n, F32, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, F32, inputs[source]) for n, source in outputs.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"encore.version": "1", "encore.kind": "musicvae.decoder",
            "encore.config": config if isinstance(config, str) else json.dumps(config)}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


TRIO_INPUTS = {"z": ["b", 128], "temperature": [], "uniform": ["b", 64, DEPTH]}


def test_a_truncated_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.decoder.onnx"
    path.write_bytes(DECODER.read_bytes()[: DECODER.stat().st_size // 2])
    refused(lambda: load_model(path), str(path), "ONNX Runtime cannot load it")


@pytest.mark.parametrize("data", [_garbage(20_000), b""], ids=["random_bytes", "empty"])
def test_a_non_onnx_file_named_onnx_is_refused(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "noise.decoder.onnx"
    path.write_bytes(data)
    refused(lambda: load_model(path), str(path), "ONNX Runtime cannot load it")


def test_a_graph_with_other_tensor_names_is_refused(tmp_path: Path) -> None:
    path = _graph(tmp_path / "names.decoder.onnx", {"x": ["b", 128]}, {"y": "x"})
    refused(lambda: load_model(path), str(path), "inputs are ['x']", "'z'")


def test_a_graph_with_wrong_ranks_is_refused(tmp_path: Path) -> None:
    path = _graph(tmp_path / "ranks.decoder.onnx", TRIO_INPUTS | {"z": ["b"]},
                  {"events": "uniform", "logits": "uniform"})
    refused(lambda: load_model(path), str(path), "input 'z' has shape")


def test_a_graph_with_wrong_output_ranks_is_refused(tmp_path: Path) -> None:
    path = _graph(tmp_path / "outputs.decoder.onnx", TRIO_INPUTS,
                  {"events": "z", "logits": "uniform"})
    refused(lambda: load_model(path), str(path), "output 'events' has shape")


@pytest.mark.parametrize("config, problem", [
    (TRIO_CONFIG | {"parts": [["melody"], "bass"]}, "unknown parts"),
    ("[" * DEEP + "]" * DEEP, "unreadable encore.config"),
    (TRIO_CONFIG | {"bars": "four"}, "unreadable encore.config"),
    ({"name": "trio_4bar"}, "unreadable encore.config"),
], ids=["unhashable_parts", "deeply_nested", "wrong_type", "missing_keys"])
def test_damaged_model_metadata_is_refused(tmp_path: Path, config: object,
                                           problem: str) -> None:
    path = _graph(tmp_path / "meta.decoder.onnx", TRIO_INPUTS,
                  {"events": "uniform", "logits": "uniform"}, config)
    refused(lambda: MusicVAERunner(path), str(path), problem)


def test_a_model_folder_missing_its_decoder_says_where_it_looked(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(ENCODER, folder / "mine.encoder.onnx")
    refused(lambda: load_model("mine", model_dir=folder), str(folder / "mine.decoder.onnx"))


def test_a_truncated_encoder_beside_a_good_decoder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "mine.decoder.onnx").symlink_to(DECODER)
    encoder = folder / "mine.encoder.onnx"
    encoder.write_bytes(ENCODER.read_bytes()[:500])
    refused(lambda: load_model("mine", model_dir=folder), str(encoder))


def test_a_truncated_model_is_refused_by_render(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cut.decoder.onnx"
    path.write_bytes(DECODER.read_bytes()[:4000])
    cli_refuses(["render", "--no-audio", "--bars", "1", "-o", str(tmp_path / "out"),
                 "--model", str(path)], capsys, str(path), "ONNX Runtime cannot load it")


# ---- GPT-2 lyricist folders --------------------------------------------------------------

def _gpt2_copy(tmp_path: Path, replace: dict[str, bytes] | None = None) -> Path:
    """The shipped lyricist's folder: its config copied, the other files linked, except
    those in ``replace`` (name -> bytes), written as new files."""
    folder = tmp_path / "gpt2"
    folder.mkdir()
    shutil.copy(GPT2 / "encore_gpt2.json", folder)
    for name in ("model.onnx", "tokenizer.json"):
        if replace and name in replace:
            (folder / name).write_bytes(replace[name])
        else:
            (folder / name).symlink_to(GPT2 / name)
    if replace and "encore_gpt2.json" in replace:
        (folder / "encore_gpt2.json").write_bytes(replace["encore_gpt2.json"])
    return folder


def _edit_config(folder: Path, **changes: object) -> Path:
    path = folder / "encore_gpt2.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    return path


def test_the_shipped_gpt2_folder_loads(tmp_path: Path) -> None:
    """The base the cases below break is good (so each refusal is the break's doing)."""
    GPT2Lyricist.load(_gpt2_copy(tmp_path))


def test_a_truncated_gpt2_model_is_refused(tmp_path: Path) -> None:
    size = (GPT2 / "model.onnx").stat().st_size
    with (GPT2 / "model.onnx").open("rb") as f:
        cut = f.read(size // 3)
    folder = _gpt2_copy(tmp_path, {"model.onnx": cut})
    refused(lambda: GPT2Lyricist.load(folder), str(folder / "model.onnx"),
            "ONNX Runtime cannot load it")


@pytest.mark.parametrize("changes, problem", [
    ({"vocab_size": None}, "missing ['vocab_size']"),
    ({"n_layer": None, "eos_token_id": None}, "missing ['n_layer', 'eos_token_id']"),
    ({"vocab_size": "8192"}, "vocab_size = '8192'"),
    ({"n_head": 4.0}, "n_head = 4.0"),
    ({"n_positions": 0}, "n_positions = 0"),
    ({"eos_token_id": [0]}, "eos_token_id = [0]"),
    ({"eos_token_id": 10**6}, "outside the vocabulary"),
    ({"newline_token_ids": 5}, "newline_token_ids = 5"),
    ({"newline_token_ids": [-1]}, "newline_token_ids = [-1]"),
    ({"newline_token_ids": [10**6]}, "outside the vocabulary"),
], ids=["missing_key", "missing_keys", "size_as_text", "size_as_float", "size_zero",
        "eos_as_list", "eos_outside", "newlines_not_a_list", "newline_negative",
        "newline_outside"])
def test_a_gpt2_config_with_missing_keys_or_wrong_types_is_refused(
        tmp_path: Path, changes: dict, problem: str) -> None:
    folder = _gpt2_copy(tmp_path)
    path = _edit_config(folder, **changes)
    refused(lambda: GPT2Lyricist.load(folder), str(path), problem)


@pytest.mark.parametrize("data", [_garbage(600), b"[" * DEEP + b"]" * DEEP],
                         ids=["binary", "deeply_nested"])
def test_a_garbage_gpt2_config_is_refused(tmp_path: Path, data: bytes) -> None:
    folder = _gpt2_copy(tmp_path, {"encore_gpt2.json": data})
    refused(lambda: GPT2Lyricist.load(folder), str(folder / "encore_gpt2.json"),
            "not valid JSON")


@pytest.mark.parametrize("data", [_garbage(3000), b"[1, 2, 3]", b""],
                         ids=["binary", "a_list", "empty"])
def test_a_garbage_tokenizer_is_refused(tmp_path: Path, data: bytes) -> None:
    folder = _gpt2_copy(tmp_path, {"tokenizer.json": data})
    refused(lambda: GPT2Lyricist.load(folder), str(folder / "tokenizer.json"), "cannot read")


def _song_patch(tmp_path: Path, extra: str) -> Path:
    """A patch (the shipped trio_4bar model) with ``extra`` TOML: a [lyrics] or [voice]."""
    path = tmp_path / "patch.toml"
    path.write_text('[song]\nmodel = "trio_4bar"\n' + extra, encoding="utf-8")
    return path


def test_a_broken_gpt2_folder_is_refused_by_render(tmp_path: Path, capsys) -> None:
    folder = _gpt2_copy(tmp_path)
    path = _edit_config(folder, eos_token_id=-3)
    patch = _song_patch(tmp_path, f'[lyrics]\nsource = "gpt2"\nmodel = "{folder}"\n')
    cli_refuses(["render", "--no-audio", "--bars", "1", "--patch", str(patch),
                 "-o", str(tmp_path / "out")], capsys, str(path), "eos_token_id = -3")


# ---- Markov lyricist files (what tests/lyrics/test_markov.py does not cover) ----------------

def _markov_file(path: Path, doc: object | None = None, raw: bytes | None = None) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(raw if raw is not None else json.dumps(doc).encode())
    return path


def _markov_doc(counts: list) -> dict:
    return {"format": "encore-markov-lyricist", "version": 1, "order": len(counts),
            "counts": counts}


@pytest.mark.parametrize("doc, raw, problem", [
    (_markov_doc([{"night": "many"}]), None, "damaged"),
    (_markov_doc([{"night": {"falls": "two"}}]), None, "damaged"),
    (_markov_doc([{"night": {"falls": -4}}]), None, "damaged"),
    (_markov_doc([{}]), None, "no words"),
    (None, b"[" * DEEP + b"]" * DEEP, "not a Markov lyricist file"),
], ids=["follow_not_a_table", "count_as_text", "negative_count", "no_words", "deeply_nested"])
def test_a_damaged_markov_file_is_refused_at_load(tmp_path: Path, doc: object, raw: bytes | None,
                                                  problem: str) -> None:
    path = _markov_file(tmp_path / "words.json.gz", doc, raw)
    refused(lambda: MarkovLyricist.load(path), str(path), problem)


def test_a_damaged_markov_file_is_refused_by_render(tmp_path: Path, capsys) -> None:
    path = _markov_file(tmp_path / "words.json.gz", _markov_doc([{"night": "many"}]))
    patch = _song_patch(tmp_path, f'[lyrics]\nsource = "markov"\nmodel = "{path}"\n')
    cli_refuses(["render", "--no-audio", "--bars", "1", "--patch", str(patch),
                 "-o", str(tmp_path / "out")], capsys, str(path), "damaged")


# ---- voicebanks (what tests/voice/test_voicebank.py does not cover) -------------------------

VB_AUDIO = {"sample_rate": 16000, "hop_size": 16, "num_mel_bins": 16, "mel_fmin": 40,
            "mel_fmax": 8000, "mel_base": "e", "win_size": 64, "fft_size": 64}


def _bank(root: Path, dsconfig: bytes | None = None, acoustic: bytes = b"") -> Path:
    """A voicebank folder that :func:`load_voicebank` reads (its files are all there), with
    ``dsconfig`` and ``acoustic.onnx`` as given."""
    folder = root / "bank"
    (folder / "dsvocoder").mkdir(parents=True)
    (folder / "phonemes.json").write_text(json.dumps(
        {p: i for i, p in enumerate(["<PAD>", "SP", "AP", "aa", "b"])}))
    config = {"acoustic": "acoustic.onnx", "phonemes": "phonemes.json", **VB_AUDIO}
    (folder / "dsconfig.yaml").write_bytes(dsconfig if dsconfig is not None
                                           else yaml.safe_dump(config).encode())
    (folder / "acoustic.onnx").write_bytes(acoustic)
    (folder / "dsvocoder" / "vocoder.yaml").write_text(yaml.safe_dump(
        {"name": "voc", "model": "model.onnx", **VB_AUDIO}))
    (folder / "dsvocoder" / "model.onnx").write_bytes(b"not read before the acoustic graph")
    return folder


def test_a_truncated_acoustic_graph_is_refused(tmp_path: Path) -> None:
    from engine.voice.diffsinger import DiffSingerRunner

    folder = _bank(tmp_path, acoustic=ENCODER.read_bytes()[:3000])
    load_voicebank(folder)  # the folder itself is fine: the graph is opened by the runner
    error = refused(lambda: DiffSingerRunner(folder), str(folder / "acoustic.onnx"),
                    "cannot load the acoustic graph")
    assert isinstance(error, VoicebankError)


@pytest.mark.parametrize("dsconfig", [
    _garbage(500), bytes(range(1, 32)) * 8, b"[" * DEEP + b"]" * DEEP,
    b"{a: " * 20_000 + b"1" + b"}" * 20_000,
], ids=["binary", "control_characters", "deeply_nested_list", "deeply_nested_map"])
def test_a_garbage_dsconfig_is_refused(tmp_path: Path, dsconfig: bytes) -> None:
    folder = _bank(tmp_path, dsconfig=dsconfig)
    refused(lambda: load_voicebank(folder), str(folder / "dsconfig.yaml"), "not readable YAML")


def test_a_broken_voicebank_is_refused_by_render(tmp_path: Path, capsys) -> None:
    folder = _bank(tmp_path, dsconfig=b"[" * DEEP + b"]" * DEEP)
    patch = _song_patch(tmp_path, '[lyrics]\nsource = "markov"\n'
                                  f'[voice]\nsinger = "{folder}"\n')
    cli_refuses(["render", "--bars", "1", "--patch", str(patch), "-o", str(tmp_path / "out")],
                capsys, str(folder / "dsconfig.yaml"), "not readable YAML")


def test_a_broken_voicebank_is_refused_by_the_live_voice_worker(tmp_path: Path) -> None:
    """`encore live` starts the singer in a worker process: the bank's reason comes back
    to the show as the same error (the CLI prints it and exits 2), not as a broken pool."""
    from engine.live.vocal_worker import VocalWorker
    from engine.patch import load_patch

    folder = _bank(tmp_path, dsconfig=b"[" * DEEP + b"]" * DEEP)
    patch = load_patch(_song_patch(tmp_path, '[lyrics]\nsource = "markov"\n'
                                             f'[voice]\nsinger = "{folder}"\n'))
    worker = VocalWorker(patch, 48000)
    error = refused(worker.start, str(folder / "dsconfig.yaml"), "not readable YAML")
    assert isinstance(error, VoicebankError)
    assert worker._pool is None  # the worker process is gone


# ---- magenta.js checkpoints --------------------------------------------------------------------

MAGENTA_CONFIG = {"type": "MusicVAE", "dataConverter": {
    "type": "MelodyConverter", "args": {"numSteps": 32, "minPitch": 21, "maxPitch": 108}}}


def _checkpoint(root: Path, manifest: object, shards: dict[str, bytes] | None = None) -> Path:
    folder = root / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(MAGENTA_CONFIG))
    manifest_path = folder / "weights_manifest.json"
    if isinstance(manifest, bytes):
        manifest_path.write_bytes(manifest)
    else:
        manifest_path.write_text(json.dumps(manifest))
    for name, data in (shards or {}).items():
        (folder / name).write_bytes(data)
    return folder


KERNEL = {"name": "decoder/kernel", "shape": [4, 8], "dtype": "float32"}  # 128 bytes


def test_the_good_checkpoint_broken_here_reads(tmp_path: Path) -> None:
    convert_magenta_js = pytest.importorskip("export.convert_magenta_js")
    folder = _checkpoint(tmp_path, [{"paths": ["s"], "weights": [KERNEL]}], {"s": bytes(128)})
    _, weights = convert_magenta_js.read_checkpoint(folder)
    assert weights["decoder/kernel"].shape == (4, 8)


@pytest.mark.parametrize("manifest, shards, problem", [
    (_garbage(700), None, "unreadable weights_manifest.json"),
    (b"", None, "unreadable weights_manifest.json"),
    (b"[" * DEEP + b"]" * DEEP, None, "unreadable weights_manifest.json"),
    ({"paths": ["group1-shard1of1"]}, None, "expected a list of groups"),
    ([{"paths": [7], "weights": [KERNEL]}], None, "expected a list of groups"),
    ([{"paths": ["s"], "weights": ["decoder/kernel"]}], {"s": bytes(128)}, "not an object"),
    ([{"paths": ["s"], "weights": [KERNEL | {"dtype": ["float32"]}]}], {"s": bytes(128)},
     "no dtype name"),
    ([{"paths": ["s"], "weights": [KERNEL | {"quantization": {"dtype": "uint8",
                                                               "scale": "big", "min": 0}}]}],
     {"s": bytes(32)}, "numbers for scale and min"),
], ids=["binary", "empty", "deeply_nested", "not_a_list", "path_not_text",
        "weight_not_an_object", "dtype_not_text", "scale_not_a_number"])
def test_a_garbage_manifest_is_refused(tmp_path: Path, manifest: object,
                                       shards: dict[str, bytes] | None, problem: str) -> None:
    convert_magenta_js = pytest.importorskip("export.convert_magenta_js")
    folder = _checkpoint(tmp_path, manifest, shards)
    refused(lambda: convert_magenta_js.read_checkpoint(folder),
            str(folder / "weights_manifest.json"), problem)


def _escaping_checkpoint(tmp_path: Path, how: str) -> tuple[Path, str]:
    """A checkpoint whose manifest names a shard outside its folder, the outside file
    holding exactly the bytes the manifest wants (so only the path can refuse it); returns
    the folder and the shard path as the manifest names it."""
    secret = tmp_path / "secret"
    secret.write_bytes(bytes(range(128)))
    shard = {"dotdot": "../secret", "absolute": str(secret), "symlink": "s",
             "symlinked_folder": "sub/s", "deep_dotdot": "sub/../../../" * 8 + "etc/passwd",
             "nul": "s\x00"}[how]
    folder = _checkpoint(tmp_path, [{"paths": ["good", shard], "weights": [
        KERNEL, KERNEL | {"name": "decoder/bias"}]}], {"good": bytes(128)})
    if how == "symlink":
        (folder / "s").symlink_to(secret)
    elif how == "symlinked_folder":
        (folder / "sub").symlink_to(tmp_path, target_is_directory=True)
        (tmp_path / "s").write_bytes(bytes(128))
    elif how == "deep_dotdot":
        (folder / "sub").mkdir()
    return folder, shard


@pytest.mark.parametrize("how, problem", [
    ("dotdot", "climbs out with .."), ("deep_dotdot", "climbs out with .."),
    ("absolute", "is an absolute path"), ("symlink", "goes through a symlink"),
    ("symlinked_folder", "goes through a symlink"), ("nul", "cannot be followed")])
def test_a_shard_path_leading_outside_the_checkpoint_is_refused(
        tmp_path: Path, how: str, problem: str) -> None:
    convert_magenta_js = pytest.importorskip("export.convert_magenta_js")
    folder, shard = _escaping_checkpoint(tmp_path, how)
    error = refused(lambda: convert_magenta_js.read_checkpoint(folder),
                    f"{folder / 'weights_manifest.json'} group 0", f"shard path {shard!r}",
                    problem, "list them by name")
    if how != "nul":
        assert "outside the checkpoint folder" in str(error)


def test_a_shard_path_leading_outside_is_refused_before_anything_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal comes before any shard is opened, even when the escaping shard is listed
    after good ones."""
    convert_magenta_js = pytest.importorskip("export.convert_magenta_js")
    folder, _ = _escaping_checkpoint(tmp_path, "dotdot")
    opened: list[Path] = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(self) or read_bytes(self))
    refused(lambda: convert_magenta_js.read_checkpoint(folder), "'../secret'")
    assert opened == []


def test_a_shard_path_inside_the_checkpoint_reads(tmp_path: Path) -> None:
    """Subfolders, a ``..`` that comes back in, and a symlink to another file of the folder
    stay inside: read as before."""
    convert_magenta_js = pytest.importorskip("export.convert_magenta_js")
    folder = _checkpoint(tmp_path, [{"paths": ["sub/a", "sub/../b", "c"], "weights": [
        KERNEL, KERNEL | {"name": "decoder/bias"}, KERNEL | {"name": "decoder/w"}]}],
        {"b": bytes(128)})
    (folder / "sub").mkdir()
    (folder / "sub" / "a").write_bytes(bytes(128))
    (folder / "c").symlink_to(folder / "b")
    _, weights = convert_magenta_js.read_checkpoint(folder)
    assert set(weights) == {"decoder/kernel", "decoder/bias", "decoder/w"}


def test_a_shard_path_leading_outside_is_refused_by_convert(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    folder, _ = _escaping_checkpoint(tmp_path, "symlink")
    cli_refuses(["convert", "magenta-js", str(folder), str(tmp_path / "out")], capsys,
                "weights_manifest.json group 0", "shard path 's'", "outside the checkpoint")
    assert not (tmp_path / "out").exists()


def test_a_shard_shorter_than_the_manifest_says_is_refused(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    folder = _checkpoint(tmp_path, [{"paths": ["shard1", "shard2"],
                                     "weights": [KERNEL, KERNEL | {"name": "decoder/bias"}]}],
                         {"shard1": bytes(128), "shard2": bytes(100)})
    cli_refuses(["convert", "magenta-js", str(folder), str(tmp_path / "out")], capsys,
                str(folder / "shard2"), "truncated", "decoder/bias")


# ---- patches -----------------------------------------------------------------------------------

HOSTILE_PATCHES: dict[str, tuple[Callable[[], bytes], str]] = {
    # name: (the file's bytes, made only when the case runs; the problem the message names)
    "ten_megabytes": (lambda: b"# " + b"x" * (10 * 2**20) + b"\n", "larger than 1.0 MiB"),
    "ten_megabytes_of_keys": (lambda: b"[song]\n" + b"".join(
        b"k%d = %d\n" % (i, i) for i in range(700_000)), "MiB"),
    "deep_arrays": (lambda: b"x = " + b"[" * DEEP + b"]" * DEEP + b"\n", "nest too deeply"),
    "deep_inline_tables": (lambda: b"x = " + b"{a = " * 20_000 + b"1" + b"}" * 20_000 + b"\n",
                           "nest too deeply"),
    "deep_table_header": (lambda: b"[" + b".".join([b"a"] * 300_000) + b"]\n",
                          "dotted parts"),
    "binary_garbage": (lambda: _garbage(50_000), "not UTF-8"),
    "integer_of_5000_digits": (lambda: b"[song]\nseed = " + b"9" * 5000 + b"\n",
                               "cannot be read as TOML"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PATCHES))
def test_a_hostile_patch_is_refused_quickly(tmp_path: Path, name: str) -> None:
    make, problem = HOSTILE_PATCHES[name]
    path = tmp_path / f"{name}.toml"
    path.write_bytes(make())
    started = time.perf_counter()
    with pytest.raises(PatchError) as caught:
        load_patch(path)
    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message
    assert len(message) < 2000  # one line, not a million


@pytest.mark.parametrize("path", NOT_FILES, ids=["endless_device", "folder"])
def test_a_patch_path_that_is_no_file_is_refused(path: str) -> None:
    refused(lambda: load_patch(path), f"{path}: not a file")


def test_a_patch_of_many_problems_lists_the_first_ones(tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text("[song]\n" + "".join(f"k{i} = {i}\n" for i in range(5000)))
    assert path.stat().st_size < MAX_PATCH_BYTES
    with pytest.raises(PatchError) as caught:
        load_patch(path)
    assert len(caught.value.problems) == 5000  # all found, for tools
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(f"{path}: unknown key [song] k0")
    assert lines[-1] == f"{path}: ... and 4950 more problems"


def test_a_hostile_patch_is_refused_by_render(tmp_path: Path, capsys) -> None:
    path = tmp_path / "huge.toml"
    path.write_bytes(HOSTILE_PATCHES["ten_megabytes"][0]())
    cli_refuses(["render", "--no-audio", "--patch", str(path), "-o", str(tmp_path / "out")],
                capsys, str(path), "MiB")
