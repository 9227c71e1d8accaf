"""Musical figures of a render (engine.song.stats and ``encore stats``), on hand-built bars
with known answers, then on a real render's log."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.music.notes import Note
from engine.patch import parse_patch
from engine.song.conductor import PARTS, ArrangedBar
from engine.song.event_log import EventLog
from engine.song.render import RenderResult
from engine.song.stats import chorus_similarity, format_stats, longest_silence, song_stats


def bar(index: int, section: str, **parts: tuple[Note, ...]) -> ArrangedBar:
    return ArrangedBar(index, section, {p: parts.get(p, ()) for p in PARTS}, 0)


def n(start: int, pitch: int, end: int | None = None, velocity: int = 90) -> Note:
    return Note(start, pitch, start + 1 if end is None else end, velocity)


# ---- longest silence ----------------------------------------------------------------
# melody sounds in steps 0..3 and 56..71 (a note held from bar 3 into bar 4); bar 4 ends
# at step 80. Drums hit at steps 0 and 8 only.
SILENCES = [
    bar(0, "verse", melody=(n(0, 60, 4),), drums=(n(0, 36), n(8, 38, 12))),
    bar(1, "verse"),
    bar(2, "verse"),
    bar(3, "verse", melody=(n(8, 62, 24),)),
    bar(4, "verse"),
]


def test_longest_silence_of_a_pitched_part() -> None:
    assert longest_silence(SILENCES, "melody") == (56 - 4) / 16  # 3.25 bars


def test_drum_hits_sound_for_one_step_whatever_their_length() -> None:
    assert longest_silence(SILENCES, "drums") == (80 - 9) / 16


def test_a_part_that_never_plays_is_silent_throughout() -> None:
    assert longest_silence(SILENCES, "bass") == 5.0


def test_a_part_that_always_plays_is_never_silent() -> None:
    bars = [bar(i, "verse", bass=(n(0, 40, 16),)) for i in range(3)]
    assert longest_silence(bars, "bass") == 0.0
    gap = [bar(0, "verse", bass=(n(0, 40, 15),)), bar(1, "verse", bass=(n(0, 40, 16),))]
    assert longest_silence(gap, "bass") == 1 / 16


# ---- chorus similarity ----------------------------------------------------------------
def three_choruses() -> list[ArrangedBar]:
    a = ((n(0, 60), n(4, 62)), (n(0, 36),))
    b = ((n(0, 60, 8, 50), n(4, 64)), (n(0, 36),))  # one melody note changed
    bars, index = [], 0
    for melody, drums in (a, b, b):
        bars.append(bar(index, "verse", melody=(n(0, 72),)))
        bars.append(bar(index + 1, "chorus", melody=melody,
                        chords=(n(0, 48, 16), n(0, 52, 16)) if index else ()))
        bars.append(bar(index + 2, "chorus", drums=drums))
        index += 3
    return bars


def test_chorus_similarity_is_the_mean_share_of_notes_in_common() -> None:
    # a -> b: melody shares (60, 0) of 2 + 2 notes, drums (36, 0) of 1 + 1: 2 * 2 / 6;
    # b -> b: everything (velocity, length and the chords part do not count): 1
    assert chorus_similarity(three_choruses()) == pytest.approx((4 / 6 + 1.0) / 2)


def test_chorus_similarity_of_the_parts_asked_for() -> None:
    assert chorus_similarity(three_choruses(), parts=("drums",)) == 1.0
    assert chorus_similarity(three_choruses(), parts=("melody",)) == pytest.approx(
        (2 * 1 / 4 + 1.0) / 2)


def test_chorus_similarity_of_another_section() -> None:
    assert chorus_similarity(three_choruses(), section="verse") == 1.0


def test_chorus_similarity_needs_two_passes() -> None:
    once = [bar(0, "verse", melody=(n(0, 60),)), bar(1, "chorus", melody=(n(0, 60),))]
    assert chorus_similarity(once) is None
    assert chorus_similarity(once, section="bridge") is None


def test_silent_choruses_have_no_similarity() -> None:
    bars = [bar(0, "chorus"), bar(1, "verse"), bar(2, "chorus")]
    assert chorus_similarity(bars) is None


# ---- song_stats and `encore stats` on a hand-written log -----------------------------
def write_log(path: Path, bars: list[ArrangedBar], zs: list[list[float]]) -> None:
    patch = parse_patch('[song]\nkey = "A"\nmode = "minor"\ntempo = 90.0\n')
    with EventLog(path) as log:
        log.header(patch=patch.to_dict(), seed=0, model="hand", model_bars=4,
                   z_size=len(zs[0]), bars=len(bars), bpm=90.0, provider="none")
        for arranged, z in zip(bars, zs, strict=True):
            log.write({"type": "bar", "bar": arranged.index, "section": arranged.section,
                       "z": z} | arranged.to_dict())


HAND_BARS = [
    # A minor: 61 (C#) and 66 (F#) are out of key, 8 of the 10 pitched notes are in
    bar(0, "verse", melody=(n(0, 69, 4), n(4, 72, 8), n(8, 61, 12)), bass=(n(0, 45, 16),),
        drums=(n(0, 36), n(4, 42), n(8, 38))),
    bar(1, "chorus", melody=(n(0, 76, 16),), bass=(n(0, 41, 16),), drums=(n(0, 36),),
        chords=(n(0, 57, 16), n(0, 60, 16), n(0, 64, 16))),
    bar(2, "verse", bass=(n(0, 43, 8), n(8, 66, 16)), drums=(n(0, 36),)),
    bar(3, "chorus", melody=(n(0, 76, 16),), bass=(n(0, 41, 16),), drums=(n(0, 36),)),
]
HAND_ZS = [[0.0, 0.0], [2.0, 0.0], [2.0, 0.0], [2.0, 1.0]]


def test_song_stats_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "song.jsonl"
    write_log(log, HAND_BARS, HAND_ZS)
    stats = song_stats(log)
    assert stats["bars"] == 4 and stats["key"] == "A minor" and stats["bpm"] == 90.0
    assert stats["melody_notes_per_bar"] == 1.25  # (3 + 1 + 0 + 1) / 4
    assert stats["drums_notes_per_bar"] == 1.5
    assert stats["chords_notes_per_bar"] == 0.75
    assert stats["melody_longest_silence_bars"] == 1.0  # all of bar 2
    assert stats["bass_longest_silence_bars"] == 0.0
    assert stats["drums_longest_silence_bars"] == 0.94  # 15 steps
    assert stats["chords_longest_silence_bars"] == 2.0  # bars 2 and 3
    assert stats["in_key_ratio"] == 0.8
    assert stats["chorus_repeat_similarity"] == 1.0
    steps = [2 / math.sqrt(2), 0.0, 1 / math.sqrt(2)]
    assert stats["latent_step_per_bar_mean"] == round(float(np.mean(steps)), 4)
    assert stats["latent_step_per_bar_max"] == round(max(steps), 4)
    assert stats["sections"] == ["chorus", "verse"]


def test_encore_stats_prints_the_figures(tmp_path: Path, capsys) -> None:
    log = tmp_path / "song.jsonl"
    write_log(log, HAND_BARS, HAND_ZS)
    assert main(["stats", str(log)]) == 0
    out = capsys.readouterr().out
    assert out == format_stats(song_stats(log)) + "\n"
    for name, value in (("bars", "4"), ("key", "A minor"), ("in_key_ratio", "0.8"),
                        ("melody_longest_silence_bars", "1.0"),
                        ("chorus_repeat_similarity", "1.0")):
        assert re.search(rf"^{name} +{re.escape(value)}$", out, re.MULTILINE), name


def test_encore_stats_of_a_file_that_is_not_a_log(tmp_path: Path, capsys) -> None:
    for path in (tmp_path / "missing.jsonl", tmp_path / "empty.jsonl"):
        if path.name == "empty.jsonl":
            path.write_text("", encoding="utf-8")
        with pytest.raises(SystemExit) as info:
            main(["stats", str(path)])
        assert info.value.code == 2
        assert capsys.readouterr().err.startswith("encore: error:")


# ---- a real render's log ----------------------------------------------------------------
def test_stats_of_a_render(rendered: RenderResult, render_args) -> None:
    stats = song_stats(rendered.log)
    assert stats["bars"] == render_args["bars"]
    assert stats["key"] == "D major"
    assert stats["in_key_ratio"] >= 0.9
    assert stats["sections"] == ["chorus", "verse"]
    assert 0.0 <= stats["chorus_repeat_similarity"] <= 1.0  # bars 2-3 come back at 6-7
    for part in PARTS:
        assert 0.0 <= stats[f"{part}_longest_silence_bars"] <= render_args["bars"]
    assert stats["chords_longest_silence_bars"] == 0.0
