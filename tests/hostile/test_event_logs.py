"""Tampered event logs (song.jsonl) are refused by replay, stats and plot before any work,
naming the line, within the limits; no number in a log can make a reader allocate or
render a span of its choosing.

The base is a real log (a render of the tiny test model with the GPT-2 lyricist); the
hostile logs change one field of one record to a value from the generators below (huge
and negative numbers, Infinity and NaN, null, lists, objects, long text, deep nesting),
at records chosen at random. Each is replayed (audio and voice on: a refused log never
gets as far as loading a singer) in a child with 1 GiB more than its imports.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.cli import main


@pytest.fixture(scope="module")
def base_log(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("base") / "render"
    assert main(["render", "--no-audio", "--bars", "8", "--seed", "2", "-o", str(out),
                 "--model", "tiny_trio", "--model-dir", str(tiny_model_dir)]) == 0
    return out / "song.jsonl"


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _write(path: Path, records: list[dict | str]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records)
                    + "\n")
    return path


def hostile_values(rng: random.Random) -> list[object]:
    """Values no field of a log may hold, made fresh for each seed."""
    big = 10 ** rng.randint(4, 400)
    return [big, -big, rng.choice([3000, 1000, 40_000, 2**40]), float("inf"), float("-inf"),
            float("nan"), None, [rng.random()], {"a": [1, 2]}, "x" * rng.randint(3000, 50_000),
            -rng.randint(10**4, 10**6), True]


# the fields the audit tampered with, and those the readers use: (record type, field path)
FIELDS = [("bar", "bar"), ("bar", "notes.melody.0.0"), ("bar", "notes.bass.0.2"),
          ("bar", "notes.drums.0.3"), ("bar", "z"), ("bar", "z.3"), ("bar", "section"),
          ("bar", "key_shift"), ("bar", "pass"), ("lyric", "bar"),
          ("lyric", "syllables.0.notes.0.0"), ("lyric", "syllables.0.notes.0.1"),
          ("lyric", "syllables.0.notes.0.2"), ("lyric", "syllables.0.phonemes"),
          ("lyric", "syllables"), ("control", "at_bar"), ("control", "after_bar"),
          ("control", "values")]
PATCH_FIELDS = ["patch.song.tempo", "patch.song.key", "patch.voice.transpose",
                "patch.audio.sample_rate", "patch.parts.melody.channel", "version"]


OPTIONAL = {"key_shift", "pass", "at_bar", "z", "section", "version"}


def _fits(field: str, value: object) -> bool:
    """Whether ``value`` is a legal value of ``field`` after all (then it is not a case)."""
    if value is None and field in OPTIONAL:
        return True
    if field == "values":
        return isinstance(value, list)
    if field == "z.3":
        return type(value) in (int, float) and abs(value) <= 1000
    return False


def _set(record: dict, dotted: str, value: object) -> bool:
    keys = dotted.split(".")
    target: object = record
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target.get(key)
        if target is None or (isinstance(target, list) and not target):
            return False
    last = keys[-1]
    if isinstance(target, list):
        if not target or int(last) >= len(target):
            return False
        target[int(last)] = value
    else:
        target[last] = value
    return True


def _control(after_bar: int) -> dict:
    return {"type": "control", "target": "song.tempo", "values": [130.0], "lands": "bar",
            "after_bar": after_bar}


def hostile_logs(base: Path, folder: Path, seed: int) -> list[tuple[Path, int]]:
    """(log, the line that is wrong) for every field and a value drawn for it."""
    rng = random.Random(seed)
    records = _records(base)
    records.insert(3, _control(1))
    made = []
    for n, (kind, field) in enumerate(FIELDS + [("header", f) for f in PATCH_FIELDS]):
        lines = [dict(r) for r in json.loads(json.dumps(records))]
        at = rng.choice([i for i, r in enumerate(lines) if r["type"] == kind])
        for value in rng.sample(hostile_values(rng), 2):
            if _fits(field, value):
                continue
            changed = json.loads(json.dumps(lines))
            if not _set(changed[at], field, value):
                continue
            path = _write(folder / f"{n}_{kind}_{field}_{len(made)}.jsonl", changed)
            made.append((path, at + 1))
    # deep JSON and a huge line, at a random line
    lines = [json.dumps(r) for r in records]
    at = rng.randrange(1, len(lines))
    made.append((_write(folder / "deep.jsonl", lines[:at] + ["[" * 200_000 + "]" * 200_000]
                        + lines[at:]), at + 1))
    made.append((_write(folder / "long_line.jsonl", lines[:at] + [
        json.dumps({"type": "voice", "x": "y" * 3_000_000})] + lines[at:]), at + 1))
    return made


@pytest.mark.parametrize("seed", [5, 6])
def test_tampered_logs_are_refused_naming_the_line(base_log: Path, tmp_path: Path, bounded,
                                                   seed: int) -> None:
    logs = hostile_logs(base_log, tmp_path, seed)
    assert len(logs) > 30
    cases = [(str(path), line) for path, line in logs]
    bounded.all_refused("""
        from engine.song.replay import replay_set
        from engine.song.stats import song_stats
        from engine.song.event_log import read_bars
        """, f"""
        out = {str(tmp_path / 'out')!r}
        calls = []
        for path, line in {cases!r}:
            calls.append((f"{{path}}:{{line}}",
                          lambda p=path: replay_set(p, out, audio=True, vocals=True)))
        each_refused(calls, "{{label}}")
        for path, line in {cases!r}:  # stats and plot read the same checked records
            for reader in (song_stats, read_bars):
                try:
                    reader(path)
                except (ValueError, OSError) as err:
                    assert f"{{path}}" in str(err), str(err)
                else:
                    assert "patch" in path or "version" in path, f"{{path}}: accepted"
        """, timeout=300)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("jump", [1000, 3000, 10**6])
def test_a_bar_number_far_ahead_is_refused_not_rendered(base_log: Path, tmp_path: Path,
                                                        bounded, jump: int) -> None:
    """The audit's case: bar 1000 in a 28 kB log made replay use 8.4 GB."""
    records = _records(base_log)
    last = max(i for i, r in enumerate(records) if r["type"] == "bar")
    records[last]["bar"] = jump
    log = _write(tmp_path / "far.jsonl", records)
    bounded.refused("from engine.song.replay import replay_set",
                    f"replay_set({str(log)!r}, {str(tmp_path / 'out')!r})",
                    f"{log}:{last + 1}", f"bar {jump} after bar")


def test_cli_refuses_a_tampered_log_with_status_2(base_log: Path, tmp_path: Path,
                                                  capsys) -> None:
    records = _records(base_log)
    at = next(i for i, r in enumerate(records) if r["type"] == "lyric")
    records[at]["syllables"][0]["notes"][0][0] = 700  # the pitch that crashed the singer
    log = _write(tmp_path / "pitch.jsonl", records)
    for argv in (["replay", str(log), "-o", str(tmp_path / "out")], ["stats", str(log)],
                 ["plot", str(log), "-o", str(tmp_path / "plots")]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"encore: error: {log}:{at + 1}: a sung note [700"), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "plots").exists()


def test_the_untampered_log_replays(base_log: Path, tmp_path: Path) -> None:
    """The base the cases break is good: each refusal above is the tampering's doing."""
    from engine.song.replay import replay_set
    from engine.song.stats import song_stats

    assert replay_set(base_log, tmp_path / "out", audio=False).bars == 8
    assert song_stats(base_log)["bars"] == 8


def test_fuzz_event_log_readers(base_log: Path, tmp_path: Path, bounded) -> None:
    """Any JSON value at any field of any record (and records dropped or repeated):
    replay (with audio), stats and the plot's reader refuse it or work, within the
    limits."""
    bounded.fuzz("""
        import json
        from engine.song.replay import replay_set
        from engine.song.stats import song_stats
        from engine.song.event_log import read_bars
        """, f"""
        records = [json.loads(l) for l in open({str(base_log)!r}).read().splitlines()]
        records.insert(3, {_control(1)!r})
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c,
                                                                max_size=4), max_leaves=10)

        def paths(value, prefix=()):
            yield prefix
            if isinstance(value, dict):
                for k, v in value.items():
                    yield from paths(v, prefix + (k,))
            elif isinstance(value, list):
                for i, v in enumerate(value[:3]):
                    yield from paths(v, prefix + (i,))

        @given(index=st.integers(0, len(records) - 1), choice=st.integers(0, 10**6),
               value=json_values, repeat=st.booleans())
        @fuzz(30)
        def test(index, choice, value, repeat):
            changed = json.loads(json.dumps(records))
            options = [p for p in paths(changed[index]) if p]
            path = options[choice % len(options)]
            target = changed[index]
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            if repeat:
                changed.insert(index, changed[index])
            log = {str(tmp_path / 'fuzz.jsonl')!r}
            with open(log, "w") as f:
                f.write("\\n".join(json.dumps(r) for r in changed) + "\\n")
            import shutil
            shutil.rmtree({str(tmp_path / 'fuzz_out')!r}, ignore_errors=True)
            for reader in (song_stats, read_bars):
                try:
                    reader(log)
                except (ValueError, OSError):
                    pass
            replay_set(log, {str(tmp_path / 'fuzz_out')!r}, audio=True, vocals=False)

        test()
        """, timeout=500)
