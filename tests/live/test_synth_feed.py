"""The built-in synth's feed: events held until shortly before they sound, moved by a
retime while held, handed on in order. The engine here is a recorder of what it is handed
(frames at 1 kHz: 1 frame a ms); the real engine's own queue is tested in test_audio_out.py
and test_audio_core.py."""

from __future__ import annotations

import pytest

from engine.clock import Clock
from engine.live.synth_feed import SynthFeed

MS = 1_000_000


class Handed:
    """What an AudioEngine would be handed: (frame, kind, channel, data1, data2)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, int, int, int]] = []

    def ns_to_frame(self, ns: int) -> int:
        return ns // MS

    def schedule(self, frame: int, kind: str, channel: int, data1: int = 0,
                 data2: int = 0) -> bool:
        self.events.append((frame, kind, channel, data1, data2))
        return True


def test_events_are_held_until_they_are_due_soon() -> None:
    now = [0]
    engine = Handed()
    feed = SynthFeed(engine, ahead_ns=200 * MS, now_ns=lambda: now[0])
    feed.schedule(100 * MS, "note_on", 0, 60, 100)  # due soon: handed on at once
    feed.schedule(500 * MS, "note_off", 0, 60)
    feed.schedule(400 * MS, "cc", 0, 7, 90)
    assert engine.events == [(100, "note_on", 0, 60, 100)] and len(feed) == 2
    now[0] = 250 * MS
    assert feed.feed() == 1 and engine.events[-1] == (400, "cc", 0, 7, 90)
    assert feed.committed_ns == 400 * MS
    now[0] = 300 * MS
    feed.feed()
    assert [e[0] for e in engine.events] == [100, 400, 500] and len(feed) == 0
    with pytest.raises(ValueError):
        feed.schedule(900 * MS, "note_on", 16, 60, 100)  # refused at once, not when fed


def test_a_retime_moves_what_is_held_and_keeps_each_note_off_after_its_note_on() -> None:
    now = [0]
    clock = Clock(120, start_ns=100 * MS, now_ns=lambda: now[0])  # 2 s bars
    engine = Handed()
    feed = SynthFeed(engine, ahead_ns=200 * MS, now_ns=lambda: now[0])
    for step in range(32):  # two bars of 16ths, each note a 32nd long
        feed.schedule(clock.step_to_ns(0, step), "note_on", 0, step, 100)
        feed.schedule(clock.step_to_ns(0, step + 0.5), "note_off", 0, step)
    now[0] = 1000 * MS
    feed.feed()
    with pytest.raises(ValueError, match="already has"):  # handed on: cannot move now
        feed.retime(clock.retime(now[0] + 20 * MS, 1, 2500 * MS, {1: 100.0}))
    # (the retime above changed the clock; a show starts it after what was handed on)
    clock = Clock(120, start_ns=100 * MS, now_ns=lambda: now[0])
    warp = clock.retime(feed.committed_ns + 1, 1, 2500 * MS, {1: 100.0})
    feed.retime(warp)
    assert feed.retimes == 1 and feed.retimed > 40
    now[0] = 10_000 * MS
    feed.feed()
    ons = {e[3]: e[0] for e in engine.events if e[1] == "note_on"}
    offs = {e[3]: e[0] for e in engine.events if e[1] == "note_off"}
    assert sorted(ons) == sorted(offs) == list(range(32))  # each note, on and off, once
    for step in range(32):
        assert ons[step] < offs[step]
        assert ons[step] == clock.step_to_ns(0, step) // MS  # where the new map has it
    assert ons[16] == 2500  # bar 1 where the retime put it
    assert feed.drop() == 0
