"""Humanize and stamp a bar: the live show's times and the render's are one timeline.

The same bar through :func:`stamp_bar` (the live clock, ns) and :func:`synth_events` (the
offline tempo map, seconds) gives the same notes, velocities and moments; a tempo change
moves both alike; a muted part draws nothing, so the others keep their feel.
"""

from __future__ import annotations

import pytest

from engine.clock import NS_PER_S, Clock
from engine.music.notes import Note
from engine.patch import Patch
from engine.song.conductor import ArrangedBar
from engine.song.stamp import LIVE_STEPS, MIN_NOTE_NS, humanize_bar, stamp_bar, synth_events

NOTES = {
    "melody": (Note(0, 72, 4, 90), Note(4, 74, 6, 80), Note(12, 76, 16, 100)),
    "bass": (Note(0, 40, 8, 100), Note(8, 43, 16, 90)),
    "drums": (Note(0, 36, 1, 110), Note(4, 38, 5, 100), Note(8, 36, 9, 110)),
    "chords": (Note(0, 60, 16, 70), Note(0, 64, 16, 70)),
}
LIVE = {p: False for p in NOTES}


def bar(index: int) -> ArrangedBar:
    return ArrangedBar(index, "verse", dict(NOTES), 0)


def live_and_offline(patch: Patch, index: int, tempi: dict[int, float]) -> tuple[list, list]:
    """(on seconds, channel, pitch, velocity) of the bar's note-ons, live and offline."""
    live = Clock(patch.song.tempo, start_ns=0, now_ns=lambda: -1)
    offline = Clock.offline(patch.song.tempo)
    for at_bar, bpm in tempi.items():
        live.set_tempo(bpm, at_bar)
        offline.set_tempo(bpm, at_bar)
    stamped = stamp_bar(bar(index), patch, live, LIVE)
    ons = [e for e in synth_events(bar(index), patch, offline, LIVE) if e.kind == "note_on"]
    return ([(n.start_ns / NS_PER_S, n.channel, n.pitch, n.velocity) for n in stamped],
            [(e.time, e.channel, e.data1, e.data2) for e in ons])


@pytest.mark.parametrize("tempi", [{}, {2: 150.0}, {1: 60.0, 3: 200.0}])
def test_live_and_offline_play_one_timeline(short_patch: Patch, tempi: dict) -> None:
    for index in range(5):
        live, offline = live_and_offline(short_patch, index, tempi)
        assert len(live) == len(offline) == sum(len(n) for n in NOTES.values())
        for (t_live, *note_live), (t_off, *note_off) in zip(live, offline, strict=True):
            assert note_live == note_off
            # ns rounding only; offline audio cannot start before 0 (a note pulled early)
            assert max(0.0, t_live) == pytest.approx(t_off, abs=2e-9)


def test_the_feel_is_drawn_per_bar_and_a_muted_part_draws_nothing(short_patch: Patch) -> None:
    assert short_patch.humanize.timing_ms > 0  # there is a feel to draw
    every = humanize_bar(bar(3), short_patch, 120.0, LIVE)
    again = humanize_bar(bar(3), short_patch, 120.0, LIVE)
    assert every == again  # seeded by [seed, bar]
    other_bar = humanize_bar(bar(4), short_patch, 120.0, LIVE)
    assert [h.notes for h in other_bar] != [h.notes for h in every]
    no_bass = humanize_bar(bar(3), short_patch, 120.0, LIVE | {"bass": True})
    assert [h.part for h in no_bass] == ["melody", "drums", "chords"]
    # muting the bass changes no draw before it; the parts after it draw the bass's share
    assert no_bass[0] == every[0]


def test_a_long_live_note_ends_where_the_live_steps_end(short_patch: Patch) -> None:
    """A live note rings at most to step 64 of its bar (3 bars past it), in the ports and
    in the recording alike; the render plays it whole."""
    drone = ArrangedBar(2, "verse", {"chords": (Note(60, 48, 200, 100),)}, 0)
    clock = Clock(120.0, start_ns=0, now_ns=lambda: -1)
    (note,) = stamp_bar(drone, short_patch, clock, LIVE)
    offset_ns = note.start_ns - clock.step_to_ns(2, 60)
    assert note.end_ns == clock.step_to_ns(2, LIVE_STEPS) + offset_ns
    assert note.end_beat - note.start_beat == pytest.approx((LIVE_STEPS - 60) / 4)
    assert note.end_ns - note.start_ns >= MIN_NOTE_NS
    offline = [e for e in synth_events(drone, short_patch, Clock.offline(120.0), LIVE)
               if e.kind == "note_off"]
    assert offline[0].time == pytest.approx(2 * 2.0 + 200 * 0.125 + offset_ns / NS_PER_S)


def test_a_part_plays_at_its_gate_and_rests_where_the_patch_asks() -> None:
    """[parts.X] gate cuts each note to its share of the written length (at least a step);
    rest_in silences the part in those sections; the bar itself keeps the written notes."""
    import dataclasses

    from engine.song.stamp import played

    patch = Patch()  # the default lead: gate 0.5, resting in the intro and the outro
    assert patch.parts.melody.gate == 0.5 and patch.parts.bass.gate == 1.0
    verse = played(bar(0), patch)
    assert [(n.start, n.end) for n in verse["melody"]] == [(0, 2), (4, 5), (12, 14)]
    assert verse["bass"] == NOTES["bass"] and verse["drums"] == NOTES["drums"]
    assert bar(0).parts["melody"] == NOTES["melody"]  # the written score is untouched
    intro = played(ArrangedBar(0, "intro", dict(NOTES), 0), patch)
    assert intro["melody"] == () and intro["bass"] == NOTES["bass"]
    short = dataclasses.replace(patch, parts=dataclasses.replace(
        patch.parts, bass=dataclasses.replace(patch.parts.bass, gate=0.1, rest_in=("verse",))))
    assert played(bar(0), short)["bass"] == ()
    assert [(n.start, n.end) for n in played(ArrangedBar(0, "chorus", dict(NOTES), 0),
                                             short)["bass"]] == [(0, 1), (8, 9)]
    clock = Clock(120.0, start_ns=0, now_ns=lambda: -1)
    stamped = [n for n in stamp_bar(bar(0), patch, clock, LIVE) if n.part == "melody"]
    assert [round(n.end_beat - n.start_beat, 6) for n in stamped] == [0.5, 0.25, 0.5]
    assert not [n for n in stamp_bar(ArrangedBar(0, "intro", dict(NOTES), 0), patch, clock,
                                     LIVE) if n.part == "melody"]
