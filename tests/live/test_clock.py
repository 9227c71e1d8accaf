"""The clock: beats <-> ns, tempo changes on bar lines, the offline tempo map of render and
replay (seconds the way a render has always summed them)."""

from __future__ import annotations

import pytest

from engine.clock import NS_PER_S, Clock

MS = 1_000_000


class FakeNow:
    def __init__(self, ns: int = 0) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def test_constant_tempo_maps_beats_bars_and_steps() -> None:
    clock = Clock(120, start_ns=10 * NS_PER_S, now_ns=FakeNow())
    assert clock.beat_to_ns(0) == 10 * NS_PER_S
    assert clock.beat_to_ns(1) == 10 * NS_PER_S + 500 * MS
    assert clock.bar_start_ns(3) == 10 * NS_PER_S + 6 * NS_PER_S
    assert clock.step_to_ns(1, 0) == clock.bar_start_ns(1)
    assert clock.step_to_ns(1, 4) == clock.beat_to_ns(5)
    assert clock.step_to_ns(1, 1) - clock.step_to_ns(1, 0) == 125 * MS
    assert clock.step_to_ns(0, 20) == clock.step_to_ns(1, 4)  # held past the bar line
    assert clock.beat_to_ns(-4) == 8 * NS_PER_S  # a count-in extends the first tempo
    for beat in (-3.25, 0.0, 1.5, 17.75, 1000.125):
        assert clock.ns_to_beat(clock.beat_to_ns(beat)) == pytest.approx(beat, abs=1e-9)


def test_tempo_change_lands_on_the_bar_line() -> None:
    now = FakeNow(0)
    clock = Clock(120, start_ns=0, now_ns=now)  # a bar lasts 2 s
    clock.set_tempo(60, at_bar=2)  # from 4 s on, a bar lasts 4 s
    assert clock.bar_start_ns(2) == 4 * NS_PER_S
    assert clock.bar_start_ns(3) == 8 * NS_PER_S
    assert clock.beat_to_ns(9) == 4 * NS_PER_S + NS_PER_S
    assert clock.ns_to_beat(5 * NS_PER_S) == pytest.approx(9.0)
    assert clock.ns_to_beat(3 * NS_PER_S) == pytest.approx(6.0)
    assert clock.bpm_at(7.99) == 120 and clock.bpm_at(8) == 60
    assert [(s.bar, s.bpm) for s in clock.tempo_map] == [(0, 120), (2, 60)]


def test_an_earlier_change_keeps_later_ones_and_moves_them() -> None:
    clock = Clock(120, start_ns=0, now_ns=FakeNow(0))
    clock.set_tempo(60, at_bar=4)
    clock.set_tempo(240, at_bar=2)  # bars 2, 3 at 1 s each
    assert clock.bar_start_ns(4) == 4 * NS_PER_S + 2 * NS_PER_S
    assert clock.bar_start_ns(5) == 6 * NS_PER_S + 4 * NS_PER_S
    clock.set_tempo(90, at_bar=2)  # replaces the change at bar 2
    assert [(s.bar, s.bpm) for s in clock.tempo_map] == [(0, 120), (2, 90), (4, 60)]


def test_a_bar_already_started_is_refused() -> None:
    now = FakeNow(0)
    clock = Clock(120, start_ns=0, now_ns=now)
    now.ns = 2 * NS_PER_S + 1  # just inside bar 1
    with pytest.raises(ValueError, match="bar 1 started .* use bar 2 or later"):
        clock.set_tempo(100, at_bar=1)
    now.ns = 2 * NS_PER_S  # exactly on its line: started too
    with pytest.raises(ValueError, match="bar 1 started"):
        clock.set_tempo(100, at_bar=1)
    assert clock.next_bar() == 2
    clock.set_tempo(100, at_bar=2)
    assert clock.now_bar() == 1


def test_bar_zero_can_change_before_the_start() -> None:
    clock = Clock(120, start_ns=NS_PER_S, now_ns=FakeNow(0))  # a count-in second
    clock.set_tempo(60, at_bar=0)
    assert clock.bar_start_ns(0) == NS_PER_S
    assert clock.bar_start_ns(1) == 5 * NS_PER_S


@pytest.mark.parametrize("bpm", [0, -10, float("nan"), float("inf"), 5000])
def test_bad_tempi_are_refused(bpm: float) -> None:
    with pytest.raises(ValueError, match="bpm must be"):
        Clock(bpm, start_ns=0)


def test_wrong_types_are_refused() -> None:
    with pytest.raises(TypeError):
        Clock("120", start_ns=0)  # type: ignore[arg-type]
    clock = Clock(120, start_ns=0, now_ns=FakeNow(0))
    with pytest.raises(TypeError):
        clock.set_tempo(100, at_bar=1.0)  # type: ignore[arg-type]


def test_now_beat_uses_the_given_clock() -> None:
    now = FakeNow(0)
    clock = Clock(60, start_ns=0, now_ns=now)
    now.ns = 2500 * MS
    assert clock.now_beat() == pytest.approx(2.5)
    assert clock.bpm == 60


def test_the_offline_tempo_map_sums_seconds_as_a_render_does() -> None:
    clock = Clock.offline(112.0)
    assert clock.now_ns() < clock.start_ns == 0  # time not begun: every bar can change
    bar_seconds = 60.0 / 112.0 * 16 / 4
    for bar in (-2, -0.25, 0, 1, 3.5, 7, 64):
        assert clock.seconds_at_bar(bar) == bar * bar_seconds  # exactly: render's samples
    clock.set_tempo(150.0, at_bar=0)  # a change before the first bar: the first tempo
    clock.set_tempo(60.0, at_bar=4)
    assert clock.seconds_at_bar(2) == 2 * (60.0 / 150.0 * 4)
    assert clock.seconds_at_bar(4) == pytest.approx(4 * 1.6)
    assert clock.seconds_at_bar(5.5) == pytest.approx(4 * 1.6 + 1.5 * 4.0)
    assert clock.seconds_at_bar(5.5) * NS_PER_S == pytest.approx(clock.beat_to_ns(22), abs=1)


def test_realign_waits_before_a_bar_and_keeps_everything_before_it() -> None:
    now = FakeNow(0)
    clock = Clock(120, start_ns=0, now_ns=now)  # 2 s bars
    clock.set_tempo(60, at_bar=5)
    before = [clock.beat_to_ns(b / 4) for b in range(0, 4 * 3)]
    clock.realign(3, 6 * NS_PER_S + 300 * MS, 100)  # bar 3 would start at 6 s: waits 0.3 s
    assert [clock.beat_to_ns(b / 4) for b in range(0, 4 * 3)] == before
    assert clock.bar_start_ns(3) == 6300 * MS
    assert clock.bar_start_ns(4) == 6300 * MS + 2400 * MS  # 100 BPM
    assert clock.bar_start_ns(5) == 6300 * MS + 4800 * MS and clock.bpm_at(20) == 60
    assert clock.ns_to_beat(6100 * MS) == 12  # in the wait: the beat it waits for
    assert clock.ns_to_beat(6300 * MS + 600 * MS) == pytest.approx(13)
    assert clock.next_bar(6100 * MS) == 3
    clock.set_tempo(90, at_bar=4)  # a later change keeps the wait
    assert clock.bar_start_ns(3) == 6300 * MS
    with pytest.raises(ValueError, match="only waits"):
        clock.realign(6, clock.bar_start_ns(6) - 1, 120)
    now.ns = 6300 * MS + 1
    with pytest.raises(ValueError, match="started"):
        clock.realign(3, 7 * NS_PER_S, 120)


def test_a_tempo_change_every_bar_keeps_the_bars_before_it() -> None:
    now = FakeNow(0)
    clock = Clock(120, start_ns=0, now_ns=now)
    starts = []
    for bar in range(1, 200):
        now.ns = clock.bar_start_ns(bar) - 100 * MS
        clock.set_tempo(120 + (bar % 3) * 0.01, at_bar=bar)
        clock.set_tempo(120, at_bar=bar + 1)
        starts.append(clock.bar_start_ns(bar))
    assert [clock.bar_start_ns(bar) for bar in range(1, 200)] == starts
    assert len(clock.tempo_map) == 201


# -- retime: a tempo change in the middle of a bar (Ableton Link) ----


def test_retime_bends_the_rest_of_the_bar_onto_a_given_line() -> None:
    now = FakeNow(0)
    clock = Clock(100, start_ns=0, now_ns=now)  # 2.4 s bars
    clock.set_tempo(100, at_bar=1)
    clock.set_tempo(97, at_bar=2)  # planned before the retime: replaced by it
    steps = [(bar, step) for bar in range(4) for step in range(16)]
    stamped = {pos: clock.step_to_ns(*pos) for pos in steps}
    now.ns = 1200 * MS  # half way into bar 0
    warp = clock.retime(now.ns + 20 * MS, 1, 2000 * MS, {1: 120.0})
    assert clock.step_at_or_after(now.ns + 20 * MS) == 2.25  # 1.35 s: beat 2.25
    assert warp.from_ns == 1350 * MS
    assert clock.bar_start_ns(1) == 2000 * MS and clock.bar_start_ns(2) == 4000 * MS
    assert clock.bpm_at(8) == 120.0 and clock.bpm_at(12) == 120.0  # bar 2's 97 is gone
    for pos, ns in stamped.items():  # what was stamped goes where the new map has it
        assert abs(warp(ns) - clock.step_to_ns(*pos)) <= 1, pos
        if ns <= warp.from_ns:
            assert warp(ns) == ns  # nothing before the step moves
    moved = [warp(stamped[pos]) for pos in steps]
    assert moved == sorted(moved) and len(set(moved)) == len(moved)  # order kept
    assert clock.seconds_at_bar(1.5) == pytest.approx(2.0 + 1.0)  # 2 beats at 120
    assert "step 9" in repr(clock)


def test_retime_keeps_a_wait_before_the_step_and_refuses_the_past() -> None:
    now = FakeNow(0)
    clock = Clock(120, start_ns=0, now_ns=now)  # 2 s bars
    clock.realign(1, 2100 * MS, 120)  # bar 1 waits 0.1 s
    now.ns = 2500 * MS
    warp = clock.retime(2600 * MS, 2, 4000 * MS, {2: 110.0, 5: 90.0})
    assert clock.bar_start_ns(1) == 2100 * MS and clock.bar_start_ns(2) == 4000 * MS
    assert clock.bpm_at(4 * 5) == 90.0 and clock.bpm_at(4 * 4) == 110.0
    assert warp(2 * NS_PER_S) == 2 * NS_PER_S
    with pytest.raises(ValueError, match="ahead"):
        clock.retime(now.ns, 3, 7 * NS_PER_S, {3: 100.0})
    with pytest.raises(ValueError, match="tempi must start"):
        clock.retime(now.ns + MS, 3, 7 * NS_PER_S, {4: 100.0})
    with pytest.raises(ValueError, match="not after"):  # the step is beat 5, at 2.55 s
        clock.retime(now.ns + 10 * MS, 2, 2550 * MS, {2: 100.0})
    with pytest.raises(ValueError, match="bpm"):  # 3 beats in 0.15 s: absurdly fast
        clock.retime(now.ns + 10 * MS, 2, 2700 * MS, {2: 100.0})
