"""A short soak, the CI version of ``benchmarks/bench_soak.py``: 300 bars through the same
Conductor, Composer and LyricsTrack the live show uses, on the tiny test trio with the
shipped Markov lyricist. Every bar must come, in order, with every part, lines must be
written, and the resident memory must not grow by 10% or more after the warm-up (the
first 10% of the bars): a composer or lyricist that kept something per bar would, long
before a three-hour set ran out of memory.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from engine.patch import parse_patch
from engine.song.conductor import PARTS, Composer, Conductor
from engine.song.lyrics_track import LyricsTrack, build_writer

BARS = 300
WARMUP_BARS = BARS // 10
GROWTH_LIMIT = 0.10
STATM = Path("/proc/self/statm")

SOAK_PATCH = """\
[song]
title = "Soak"
tempo = 120.0
key = "A"
mode = "minor"
seed = 7
model = "tiny_trio"

[form]
sections = ["intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus"]
loop_from = 1

[form.lengths]
intro = 2
verse = 4
chorus = 4
bridge = 4

[lyrics]
source = "markov"
phrase_bars = 2
"""


def rss_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``, second field, in pages)."""
    return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not STATM.exists(), reason="reads /proc/self/statm (Linux)")
def test_300_bars_come_in_order_and_memory_stays_flat(tiny_trio) -> None:
    patch = parse_patch(SOAK_PATCH)
    conductor = Conductor(patch, tiny_trio.z_size)
    composer = Composer(tiny_trio, patch)
    writer = build_writer(patch.lyrics, conductor.seed)
    assert writer is not None
    track = LyricsTrack(writer, patch.lyrics)

    indexes: list[int] = []
    notes = lines = 0
    rss: dict[int, int] = {}
    for _ in range(BARS):
        plan = conductor.plan()
        arranged = composer.realize(plan)
        assert set(arranged.parts) == set(PARTS), f"bar {plan.index}: {sorted(arranged.parts)}"
        indexes.append(arranged.index)
        notes += sum(len(part) for part in arranged.parts.values())
        written = track.feed(plan, arranged)
        if written is not None:
            phrase, _report = written
            assert phrase.text and phrase.syllables
            lines += 1
        done = len(indexes)
        if done in (WARMUP_BARS, BARS):
            gc.collect()  # what is kept, not garbage waiting for the collector
            rss[done] = rss_bytes()

    assert indexes == list(range(BARS))  # every bar, once, in order
    assert notes > BARS  # music, not silence
    sung_phrases = BARS // 2  # nearly every bar is sung, a line every 2 bars
    assert lines > sung_phrases // 4, f"only {lines} lines in {BARS} bars"
    growth = (rss[BARS] - rss[WARMUP_BARS]) / rss[WARMUP_BARS]
    assert growth < GROWTH_LIMIT, (
        f"RSS grew {growth:.1%} from bar {WARMUP_BARS} ({rss[WARMUP_BARS] / 1e6:.1f} MB) to "
        f"bar {BARS} ({rss[BARS] / 1e6:.1f} MB)")
