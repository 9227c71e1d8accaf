"""Following tempo: MIDI clock in (synthetic ticks, and a real JACK round trip), Link."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
import time

import pytest

from engine.clock import Clock
from engine.live.midi_ports import open_output
from engine.live.midi_sender import MidiSender
from engine.live.sync import (
    LINK_EXTRA_MESSAGE,
    LinkSync,
    MidiClockFollower,
    TransportEvent,
    suggest_tempo,
)

MS = 1_000_000
S = 1_000_000_000
HAVE_AALINK = importlib.util.find_spec("aalink") is not None
needs_aalink = pytest.mark.skipif(
    not HAVE_AALINK, reason="aalink is not installed (the optional 'link' extra, GPL-3.0: "
    "pip install 'encore-engine[link]'); CI leaves it out")


class FakeTime:
    def __init__(self, ns: int = 10 * S) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def tick_times(bpm: float, count: int, *, start_ns: int = 10 * S, jitter_ns: int = 0,
               seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    interval = 60 * S / (bpm * 24)
    return [start_ns + round(i * interval) + rng.randint(-jitter_ns, jitter_ns)
            for i in range(count)]


def follower_fed(times: list[int], messages: dict[int, bytes] | None = None,
                 **kwargs) -> tuple[MidiClockFollower, FakeTime]:
    now = FakeTime()
    follower = MidiClockFollower(backend="memory", now_ns=now, **kwargs)
    for i, t in enumerate(times):
        if messages and i in messages:
            follower.feed(messages[i], t)
        now.ns = t
        follower.feed(b"\xf8", t)
    return follower, now


# -- synthetic ticks -----------------------------------------------------------------------


@pytest.mark.parametrize("bpm", [120.0, 93.5])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_follows_jittery_clock_within_a_tenth(bpm: float, seed: int) -> None:
    follower, _ = follower_fed(tick_times(bpm, 24 * 8, jitter_ns=MS, seed=seed))
    assert follower.bpm == pytest.approx(bpm, abs=0.1)
    assert follower.rejected == 0 and follower.dropped_ticks == 0


def test_no_tempo_before_a_quarter_note() -> None:
    times = tick_times(120, 25)
    follower, now = follower_fed(times[:24])  # 23 intervals
    assert follower.bpm is None and not follower.locked
    now.ns = times[24]
    follower.feed(b"\xf8", times[24])
    assert follower.bpm == pytest.approx(120, abs=0.01)


def test_first_estimate_is_already_close_with_jitter() -> None:
    follower, _ = follower_fed(tick_times(120, 25, jitter_ns=MS))
    assert follower.bpm == pytest.approx(120, abs=0.5)


def test_a_dropped_tick_is_rejected_and_counted() -> None:
    times = tick_times(120, 24 * 6, jitter_ns=MS)
    del times[100]
    follower, _ = follower_fed(times)
    assert follower.dropped_ticks == 1 and follower.rejected == 1
    assert follower.bpm == pytest.approx(120, abs=0.1)


def test_a_stall_with_bunched_ticks_does_not_bend_the_tempo() -> None:
    times = tick_times(120, 24 * 6)
    for i in range(60, 63):  # three ticks held up, then delivered with the fourth
        times[i] = times[63] - 10_000
    follower, _ = follower_fed(times)
    assert follower.bpm == pytest.approx(120, abs=0.1)
    assert follower.resets == 0


def test_a_real_tempo_jump_is_followed() -> None:
    fast = tick_times(120, 24 * 4)
    slow = tick_times(50, 24 * 6, start_ns=fast[-1] + round(60 * S / (50 * 24)))
    follower, _ = follower_fed(fast + slow)  # 2.4 times slower: beyond the outlier bounds
    assert follower.resets == 1
    assert follower.bpm == pytest.approx(50, abs=0.05)


def test_gradual_tempo_change_is_followed() -> None:
    before = tick_times(100, 24 * 4 + 1)
    after = tick_times(101, 24 * 4, start_ns=before.pop())
    follower, _ = follower_fed(before + after)
    assert follower.rejected == 0
    assert follower.bpm == pytest.approx(101, abs=0.05)


def test_stale_clock_reads_none_and_restarts() -> None:
    times = tick_times(120, 48)
    follower, now = follower_fed(times)
    assert follower.bpm is not None
    now.ns += 2 * S
    assert follower.bpm is None  # the source went quiet
    later = tick_times(90, 30, start_ns=now.ns)
    for t in later:
        now.ns = t
        follower.feed(b"\xf8", t)
    assert follower.bpm == pytest.approx(90, abs=0.01)  # only the new ticks count


def test_start_stop_continue_and_song_position() -> None:
    now = FakeTime()
    follower = MidiClockFollower(backend="memory", now_ns=now)
    interval = round(60 * S / (120 * 24))
    t = now.ns
    assert not follower.running and follower.song_position == 0

    def ticks(n: int) -> None:
        nonlocal t
        for _ in range(n):
            t += interval
            now.ns = t
            follower.feed([0xF8], t)

    ticks(30)  # clock before Start: tempo, but no position
    assert follower.beat_at(t) is None and follower.position_beats == 0
    follower.feed([0xFA], t + 1)
    assert follower.running
    ticks(24 * 2 + 1)  # beats 0, 1, 2
    assert follower.beat_at(t) == pytest.approx(2.0)
    assert follower.beat_at(t + interval * 12) == pytest.approx(2.5, abs=1e-6)
    follower.feed(bytes([0xFC]), t + 2)
    assert not follower.running and follower.beat_at(t) is None
    follower.feed(bytes([0xF2, 0x05, 0x01]), t + 3)  # 5 + 128 = 133 16ths
    assert follower.song_position == 133
    assert follower.position_beats == pytest.approx(133 / 4)
    follower.feed(bytearray([0xFB]), t + 4)
    assert follower.running
    ticks(1)
    assert follower.beat_at(t) == pytest.approx(133 / 4)
    follower.feed([0xFA], t + 5)
    assert follower.song_position == 0
    assert [(e.kind, e.song_position) for e in follower.poll_events()] == [
        ("start", 0), ("stop", 0), ("position", 133), ("continue", 133), ("start", 0)]
    assert follower.poll_events() == []
    follower.feed([0x90, 60, 100], t + 6)  # a note: ignored
    follower.feed(b"", t + 7)
    assert follower.poll_events() == []


def test_dropped_tick_keeps_the_song_position() -> None:
    times = tick_times(120, 24 * 4 + 1)
    del times[50]
    follower, _ = follower_fed(times, messages={0: b"\xfa"})
    assert follower.position_beats == pytest.approx(4 + 1 / 24)
    assert follower.beat_at(times[-1]) == pytest.approx(4.0)


def test_suggest_tempo() -> None:
    follower, now = follower_fed(tick_times(93.5, 24 * 4))
    assert follower.suggest_tempo(93.4) is None  # within 0.2
    assert follower.suggest_tempo(90.0) == pytest.approx(93.5, abs=0.01)
    assert follower.suggest_tempo(93.0, threshold=0.6) is None
    now.ns += 5 * S
    assert follower.suggest_tempo(90.0) is None  # stale: nothing to follow
    assert suggest_tempo(None, 120) is None
    assert suggest_tempo(1200.0, 120) is None  # beyond what the clock plays


def test_transport_events_reach_the_loop_callback() -> None:
    async def main() -> list[TransportEvent]:
        got: list[TransportEvent] = []
        follower = MidiClockFollower(backend="memory")
        follower.notify(got.append)
        follower.feed([0xFA], 1)
        follower.feed([0xFC], 2)
        await asyncio.sleep(0)
        follower.notify(None)
        follower.feed([0xFB], 3)
        await asyncio.sleep(0)
        return got

    assert [e.kind for e in asyncio.run(main())] == ["start", "stop"]


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="backend"):
        MidiClockFollower("x", backend="nope")
    with pytest.raises(ValueError, match="name the MIDI clock source"):
        MidiClockFollower("", backend="jack")
    with pytest.raises(ValueError, match="min_intervals"):
        MidiClockFollower(backend="memory", window=16, min_intervals=24)
    follower = MidiClockFollower(backend="memory")
    follower.close()
    follower.close()
    assert "closed" in repr(follower)


# -- a real JACK round trip ----------------------------------------------------------------


def test_follows_midi_sender_clock_over_jack(jack_server: str) -> None:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)  # the follower's callback runs on JACK's thread
    port = open_output("clock out", backend="virtual", client_name="encore-test-clk")
    try:
        follower = MidiClockFollower("encore-test-clk:clock out", backend="jack",
                                     client_name="encore-test-follow")
        try:
            clock = Clock(128, start_ns=time.monotonic_ns() + 100 * MS)
            with MidiSender(clock, {"clock": port}) as sender:
                sender.start_clock("clock", from_bar=0)
                deadline = clock.beat_to_ns(4.5)  # ~2.2 s
                while time.monotonic_ns() < deadline:
                    time.sleep(0.05)
                bpm = follower.bpm
                beat = follower.beat_at(time.monotonic_ns())
                clock_beat = clock.now_beat()
                running = follower.running
                sender.stop_clock()
                time.sleep(0.05)
            events = [e.kind for e in follower.poll_events()]
            print(f"followed {bpm} BPM (128 sent), beat {beat} vs clock {clock_beat:.3f}, "
                  f"{follower.stats()}")
            assert running and events == ["start", "stop"] and not follower.running
            assert bpm == pytest.approx(128, abs=0.5)
            assert beat == pytest.approx(clock_beat, abs=0.05)  # ~20 ms at 128 BPM
        finally:
            follower.close()
    finally:
        port.close()
        sys.setswitchinterval(previous)


def test_follower_names_the_sources_when_none_matches(jack_server: str) -> None:
    from engine.live.midi_ports import PortNotFoundError

    with pytest.raises(PortNotFoundError, match="no MIDI input matches"):
        MidiClockFollower("no such clock source anywhere", backend="jack",
                          client_name="encore-test-follow")


# -- Ableton Link --------------------------------------------------------------------------


def test_link_without_aalink_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "aalink", None)  # import fails as if not installed
    with pytest.raises(ImportError) as info:
        LinkSync()
    assert str(info.value) == LINK_EXTRA_MESSAGE
    assert "GPL-3.0" in LINK_EXTRA_MESSAGE and "encore-engine[link]" in LINK_EXTRA_MESSAGE


@needs_aalink
def test_link_needs_the_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running asyncio loop"):
        LinkSync()


@needs_aalink
def test_link_alone_beats_and_downbeats() -> None:
    async def main() -> None:
        link = LinkSync(quantum=4, bpm=120)
        try:
            assert link.enabled and link.quantum == 4
            link.set_tempo(150)
            assert link.tempo == pytest.approx(150)
            now = time.monotonic_ns()
            beat = link.beat_at(now)
            assert link.beat_at(now + S) - beat == pytest.approx(2.5, abs=1e-3)
            downbeat = link.next_downbeat_ns(now)
            assert now < downbeat <= now + round(4 * 0.4 * S) + 1
            phase = link.phase_at(downbeat)
            assert min(phase, 4 - phase) < 1e-3
            quantum_ns = round(4 * 0.4 * S)
            rest = (link.next_downbeat_ns(now + 10 * S) - downbeat) % quantum_ns
            assert min(rest, quantum_ns - rest) < 50_000  # a whole number of bars later
            assert link.suggest_tempo(150.1) is None and link.suggest_tempo(140) == 150
            with pytest.raises(ValueError):
                link.set_tempo(0)
        finally:
            link.close()
            link.close()
        assert not link.enabled and "closed" in repr(link)

    asyncio.run(main())


@needs_aalink
def test_two_link_peers_share_tempo_and_phase() -> None:
    async def main() -> None:
        a, b = LinkSync(quantum=4, bpm=120), LinkSync(quantum=4, bpm=100)
        try:
            deadline = time.monotonic() + 3
            while not (a.num_peers and b.num_peers) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if not (a.num_peers and b.num_peers):
                pytest.skip("two Link instances did not find each other in 3 s: this "
                            "machine's network has no multicast for Link's discovery")
            a.set_tempo(133.0)
            deadline = time.monotonic() + 2
            while abs(b.tempo - 133.0) > 1e-3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert b.tempo == pytest.approx(133.0, abs=1e-3)
            now = time.monotonic_ns()
            diff = (a.phase_at(now) - b.phase_at(now) + 2) % 4 - 2
            assert abs(diff) * 60 / 133 < 0.001  # phase agrees to under 1 ms
            assert abs(a.next_downbeat_ns(now) - b.next_downbeat_ns(now)) < MS
        finally:
            a.close()
            b.close()

    asyncio.run(main())
