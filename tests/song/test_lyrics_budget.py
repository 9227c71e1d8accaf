"""Live lines within their time budget: fewer candidates when a line would be late.

The real writer (the patch's lyricist) and the real track; only the budget is chosen so
that the shipped models are too slow for it (a microsecond) or always fast enough.
"""

from __future__ import annotations

import dataclasses

import pytest

from engine.music.notes import Note
from engine.patch import Patch
from engine.song.conductor import ArrangedBar, Conductor
from engine.song.lyrics_track import (
    LyricsTrack,
    build_writer,
    candidates_within,
    line_budget_s,
)


def test_candidates_within_the_budget() -> None:
    assert candidates_within(0.5, 1.0, 8, 8) == 3           # twice the budget: 8 * 0.8 / 2
    assert candidates_within(0.5, 0.1, 2, 8) == 8           # room: back up to the most
    assert candidates_within(0.5, 0.25, 4, 6) == 6
    assert candidates_within(0.5, 50.0, 8, 8) == 1          # never fewer than one
    assert candidates_within(0.5, 0.0, 3, 8) == 8
    assert line_budget_s(120.0) == pytest.approx(1.0)       # half a 2-second bar


@pytest.fixture(scope="module")
def writer(short_patch: Patch):
    """The patch's writer (loading it is the slow part), with the patch's count each test."""
    return build_writer(short_patch.lyrics, 3)


@pytest.fixture(autouse=True)
def _patch_count(writer, short_patch: Patch) -> None:
    writer.settings.candidates = short_patch.lyrics.candidates


def write_lines(track: LyricsTrack, patch: Patch, bars: int) -> list:
    conductor = Conductor(patch, bars, seed=3)
    melody = tuple(Note(start=4 * k, pitch=60 + 2 * k, end=4 * k + 3) for k in range(4))
    written = []
    for _ in range(bars):
        plan = conductor.plan()
        out = track.feed(plan, ArrangedBar(plan.index, plan.position.section,
                                           {"melody": melody}, 0))
        if out is not None:
            written.append(out)
    return written


def test_a_line_over_budget_makes_the_next_ask_for_fewer(writer, short_patch: Patch) -> None:
    most = writer.settings.candidates
    assert most > 1
    track = LyricsTrack(writer, short_patch.lyrics, budget_s=1e-6)
    written = write_lines(track, short_patch, 8)
    assert len(written) >= 2
    first, later = written[0][1], written[-1][1]
    assert writer.settings.candidates == 1 and track.most_candidates == most
    assert later.candidates < first.candidates  # the pool of lines shrank with the count


def test_a_fast_line_asks_for_the_patchs_count_again(writer, short_patch: Patch) -> None:
    most = writer.settings.candidates
    writer.settings.candidates = 1  # as after a slow stretch
    track = LyricsTrack(writer, short_patch.lyrics, budget_s=3600.0)
    write_lines(track, short_patch, 4)
    assert writer.settings.candidates == most


def test_offline_render_keeps_the_patchs_count(writer, short_patch: Patch) -> None:
    most = writer.settings.candidates
    write_lines(LyricsTrack(writer, short_patch.lyrics), short_patch, 8)
    assert writer.settings.candidates == most
    assert dataclasses.asdict(writer.settings)["candidates"] == most
