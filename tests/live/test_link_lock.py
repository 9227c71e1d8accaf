"""Fitting the show's clock to a Link session's bar lines, on a session timeline made in
code (the real session, against an independent peer, is in test_link_phase.py)."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from engine.clock import Clock
from engine.live.link_lock import LinkLock
from engine.live.sync import SessionTimeline, lock_bar

MS = 1_000_000
S = 1_000_000_000
LEAD = 250 * MS  # the show stamps a bar this long before it starts


def test_session_timeline_lines() -> None:
    session = SessionTimeline(t_ns=10 * S, beat=1.0, bpm=120.0, quantum=4.0)  # 0.5 s a beat
    assert session.beat_at(11 * S) == pytest.approx(3.0)
    assert session.time_at(4.0) == 11_500 * MS
    assert session.phase_at(11_500 * MS) == pytest.approx(0.0)
    assert session.nearest_line(11_400 * MS) == 11_500 * MS
    assert session.nearest_line(12_400 * MS) == 11_500 * MS  # 0.9 s after, 1.1 s before
    assert session.line_at_or_after(11_500 * MS) == 11_500 * MS
    assert session.line_at_or_after(11_500 * MS + 1) == 13_500 * MS
    moved = session.retimed(60.0, 11 * S)
    assert moved.beat_at(11 * S) == pytest.approx(3.0) and moved.bpm == 60.0
    assert moved.line_at_or_after(11 * S) == 12 * S


@pytest.mark.parametrize("offset_ms", [-40.0, -0.3, 0.0, 0.3, 40.0])
def test_a_small_error_is_slewed_onto_the_line(offset_ms: float) -> None:
    session = SessionTimeline(0, 0.0, 120.0, 4.0)  # lines every 2 s
    start = 4 * S + round(offset_ms * MS)  # our bar starts off the session's line
    fit = lock_bar(7, start, session)
    assert fit.kind == "slew" and fit.start_ns == start and fit.session_bpm == 120.0
    assert fit.error_ns == round(offset_ms * MS)
    assert start + round(240 * S / fit.bpm) == pytest.approx(6 * S, abs=1)


def test_a_large_error_waits_for_the_next_line() -> None:
    session = SessionTimeline(0, 0.0, 120.0, 4.0)
    start = 4 * S + 900 * MS  # 0.9 s into the session's bar: too far to slew
    fit = lock_bar(3, start, session)
    assert fit.kind == "realign" and fit.start_ns == 6 * S and fit.bpm == 120.0
    assert fit.error_ns == 900 * MS


class FakeLink:
    """A session whose tempo a peer changes at given times (Link keeps the beat there)."""

    def __init__(self, bpm: float, now: list[int], changes: list[tuple[int, float]]) -> None:
        self.now = now
        self._lines = [SessionTimeline(0, 0.0, bpm, 4.0)]
        for at, new in changes:
            self._lines.append(self._lines[-1].retimed(new, at))
        self.jumps: list[tuple[int, float]] = []
        self.playing = False

    def session_at(self, t_ns: int) -> SessionTimeline:
        line = [tl for tl in self._lines if tl.t_ns <= t_ns][-1]
        for at, beats in self.jumps:  # a peer that moved the phase (forceBeatAtTime)
            if at <= t_ns:
                line = line._replace(beat=line.beat + beats)
        return line

    def timeline(self) -> SessionTimeline:
        return self.session_at(self.now[0])

    async def wait_for_peers(self, timeout_s: float) -> int:
        return 1

    def on_start_stop(self, callback) -> None:
        self.callback = callback

    def start_playing_at(self, t_ns: int) -> None:
        self.playing = True

    def stop_playing(self) -> None:
        self.playing = False


class Log:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(record)


LIVE = SimpleNamespace(link_wait_s=0.5, link_start_stop=False)


def play(link: FakeLink, now: list[int], lock: LinkLock, bars: int) -> Clock:
    """Bars as the show plays them: bar 0 from join, each fitted LEAD before it starts."""
    start, bpm = asyncio.run(lock.join(now[0] + 500 * MS))
    clock = Clock(bpm, start_ns=start, now_ns=lambda: now[0])
    for bar in range(bars):
        now[0] = max(now[0], clock.bar_start_ns(bar) - LEAD)
        lock.lock(clock, bar)
    return clock


def off_ms(link: FakeLink, clock: Clock, bar: int) -> float:
    """How far bar ``bar`` starts from the session's nearest bar line, in ms."""
    t = clock.bar_start_ns(bar)
    session = link.session_at(t)
    return (t - session.nearest_line(t)) / MS


def test_bar_zero_starts_on_a_line_of_a_session_that_was_running() -> None:
    now = [123_456_789_123]  # the session's lines fall anywhere in our time
    link = FakeLink(100.0, now, [])
    log = Log()
    lock = LinkLock(link, LIVE, log, now_ns=lambda: now[0])
    clock = play(link, now, lock, 8)
    assert all(abs(off_ms(link, clock, bar)) < 0.001 for bar in range(9))
    assert clock.bpm_at(0) == 100.0
    assert log.records[0]["what"] == "join" and log.records[0]["peers"] == 1


@pytest.mark.parametrize("into_bar", [0.1, 0.5, 0.95])
def test_a_tempo_change_mid_bar_is_locked_from_the_bar_after_next(into_bar: float) -> None:
    now = [0]
    bar_ns = round(2.4 * S)  # 100 BPM
    change = 7 * bar_ns + round(into_bar * bar_ns)  # the session's bar 7, counted from 0
    link = FakeLink(100.0, now, [(change, 130.0)])
    log = Log()
    lock = LinkLock(link, LIVE, log, now_ns=lambda: now[0])
    clock = play(link, now, lock, 16)
    # the first bar fitted after the change (a bar is fitted LEAD before it starts) ends
    # on the session's line: from the one after it on, every bar starts on one
    fitted = next(bar for bar in range(20) if clock.bar_start_ns(bar) - LEAD > change)
    for bar in range(fitted + 1, 17):
        assert abs(off_ms(link, clock, bar)) < 0.001, (bar, off_ms(link, clock, bar))
    assert clock.bpm_at(4 * 16) == pytest.approx(130.0)
    assert lock.realigns == 0 and lock.tempo_changes == 1
    assert [r for r in log.records if r["what"] == "tempo"][0]["bpm"] == 130.0
    assert 130 / 1.5 <= clock.bpm_at(4 * fitted) <= 130 * 1.5  # the fitted bar's tempo


def test_a_phase_jump_waits_for_the_next_line_and_says_so() -> None:
    now = [0]
    link = FakeLink(120.0, now, [])
    link.jumps.append((9 * S, 1.7))  # a peer moved the session's phase by 1.7 beats
    log = Log()
    lock = LinkLock(link, LIVE, log, now_ns=lambda: now[0])
    clock = play(link, now, lock, 12)
    assert lock.realigns == 1
    realign = next(r for r in log.records if r["what"] == "realign")
    assert realign["wait_ms"] > 0
    for bar in range(realign["bar"], 13):
        assert abs(off_ms(link, clock, bar)) < 0.001
    # the wait is silence before the bar: nothing before it moved or overlaps
    gap = clock.bar_start_ns(realign["bar"]) - clock.beat_to_ns(4 * realign["bar"] - 1e-9)
    assert gap == pytest.approx(realign["wait_ms"] * MS, abs=MS)


def test_a_bar_reached_too_late_is_left_alone() -> None:
    now = [0]
    link = FakeLink(120.0, now, [])
    lock = LinkLock(link, LIVE, Log(), now_ns=lambda: now[0])
    clock = play(link, now, lock, 2)
    now[0] = clock.bar_start_ns(2) + 1  # the loop stalled past the bar line
    lock.lock(clock, 2)
    assert lock.late == 1 and lock.failures == 0


def test_start_stop_starts_the_session_and_a_stop_from_it_ends_the_set() -> None:
    now = [0]
    link = FakeLink(120.0, now, [])
    stopped = []
    lock = LinkLock(link, SimpleNamespace(link_wait_s=0.0, link_start_stop=True), Log(),
                    stopped.append, now_ns=lambda: now[0])
    lock.on_stop = lambda: stopped.append(True)
    asyncio.run(lock.join(now[0] + 500 * MS))
    assert link.playing
    link.callback(True)
    assert not stopped
    link.callback(False)  # another app stopped the session
    assert stopped == [True]
    lock.close()  # the session stopped us: we do not stop it again
    assert math.isfinite(lock.stats()["bars"])


def test_our_stop_stops_the_session() -> None:
    now = [0]
    link = FakeLink(120.0, now, [])
    lock = LinkLock(link, SimpleNamespace(link_wait_s=0.0, link_start_stop=True), Log(),
                    now_ns=lambda: now[0])
    asyncio.run(lock.join(now[0] + 500 * MS))
    lock.close()
    assert not link.playing


def test_link_without_the_extra_is_refused_naming_the_key(monkeypatch) -> None:
    import sys

    from engine.live.show import Show
    from engine.live.sync import LINK_EXTRA_MESSAGE
    from engine.patch import parse_patch

    monkeypatch.setitem(sys.modules, "aalink", None)  # import fails as if not installed
    show = Show(parse_patch("[live]\nlink = true\n"), audio=False, osc=False)
    with pytest.raises(ValueError) as info:
        show._open_sync()
    assert "[live] link = true" in str(info.value) and LINK_EXTRA_MESSAGE in str(info.value)


POLL = 50 * MS  # the show loop looks at the session at least this often


def play_following(link: FakeLink, now: list[int], lock: LinkLock, bars: int,
                   changes_at: list[int]) -> tuple[Clock, list[tuple[float, int]], list]:
    """As the show plays: each bar fitted and stamped LEAD before it starts (every 16th
    step, kept as (beat, ns) the way the MIDI sender holds them), and between, every
    POLL, :meth:`LinkLock.follow`, whose warps move what is stamped. The polls fall on the
    given change times too (plus POLL), as a loop that wakes then would."""
    start, bpm = asyncio.run(lock.join(now[0] + 500 * MS))
    clock = Clock(bpm, start_ns=start, now_ns=lambda: now[0])
    stamped: list[tuple[float, int]] = []
    warps = []

    def follow() -> None:
        nonlocal stamped
        warp = lock.follow(clock)
        if warp is not None:
            warps.append(warp)
            stamped = [(beat, warp(ns)) for beat, ns in stamped]

    for bar in range(bars):
        while True:
            push_at = clock.bar_start_ns(bar) - LEAD
            wake = min([now[0] + POLL] + [c + POLL for c in changes_at if c + POLL > now[0]])
            if wake >= push_at:
                break
            now[0] = wake
            follow()
        now[0] = max(now[0], push_at)
        follow()
        lock.lock(clock, bar)
        stamped += [(bar * 4 + step / 4, clock.step_to_ns(bar, step)) for step in range(16)]
    return clock, stamped, warps


@pytest.mark.parametrize("into_bar", [0.1, 0.5, 0.85, 0.97])
def test_a_tempo_change_mid_bar_is_followed_on_the_next_bar_line(into_bar: float) -> None:
    """Another app moves the session from 100 to 130 BPM somewhere in a bar: the rest of
    that bar (and the next, if it was stamped already) is retimed so that the next bar
    line falls on the session's; only a change that comes too close to the line for that
    is put right on the line after it. Everything already stamped moves with the clock,
    in order."""
    now = [0]
    bar_ns = round(2.4 * S)  # 100 BPM
    change = 7 * bar_ns + round(into_bar * bar_ns)
    link = FakeLink(100.0, now, [(change, 130.0)])
    log = Log()
    lock = LinkLock(link, LIVE, log, now_ns=lambda: now[0])
    clock, stamped, warps = play_following(link, now, lock, 16, [change])
    first = next(bar for bar in range(20) if clock.bar_start_ns(bar) > change)
    locked_from = first if into_bar < 0.9 else first + 1  # 0.97: 72 ms before the line
    for bar in range(1, 17):
        if bar < first or bar >= locked_from:
            assert abs(off_ms(link, clock, bar)) < 0.001, (bar, off_ms(link, clock, bar))
    assert clock.bar_start_ns(locked_from) - change <= 2 * bar_ns
    assert len(warps) == 1 and lock.retimes == 1 and lock.tempo_changes == 1
    assert lock.realigns == 0
    record = next(r for r in log.records if r["what"] == "tempo")
    assert record["bpm"] == 130.0 and record["retimed"] and record["bar"] == locked_from
    assert 130 / 1.5 <= record["bend_bpm"] <= 130 * 1.5
    assert clock.bpm_at(4 * 15) == pytest.approx(130.0)
    for beat, ns in stamped:  # every stamped event is where the clock now has its beat
        assert abs(ns - clock.beat_to_ns(beat)) <= 2, beat
    times = [ns for _beat, ns in stamped]
    assert times == sorted(times)
    # nothing that had sounded by the time of the retime moved
    assert all(ns == warps[0](ns) for ns in times if ns <= warps[0].from_ns)


def test_our_own_tempo_proposal_is_not_followed_as_another_apps() -> None:
    now = [0]
    link = FakeLink(120.0, now, [])
    lock = LinkLock(link, LIVE, Log(), now_ns=lambda: now[0])
    clock, _stamped, warps = play_following(link, now, lock, 4, [])
    lock._proposal = (4, 90.0)  # what propose_tempo leaves, before its bar line
    clock.set_tempo(90.0, at_bar=4)
    lock._bpm = 90.0  # lock(4) fits the bar to the session as it will be then
    assert lock.follow(clock) is None  # the session still has 120: nothing to follow
    link._lines.append(link._lines[-1].retimed(90.0, clock.bar_start_ns(4)))
    now[0] = clock.bar_start_ns(4) + 10 * MS  # our proposal went out on the line
    assert lock.follow(clock) is None and lock.retimes == 0 and not warps

