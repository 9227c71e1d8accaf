"""The MIDI sender: on time through real JACK ports, silent on every way out, never bursts.

Timing tolerances are loose enough for a loaded 2-core CI machine; the JACK round trip
is also quantised to the server's period (rtmidi's JACK output lands at a cycle start).
"""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from engine.clock import Clock
from engine.live.midi_ports import MemoryPort, MidiPortError, open_output
from engine.live.midi_sender import MidiSender

MS = 1_000_000
ON, OFF, CC = 0x90, 0x80, 0xB0


def silence(channel: int) -> list[bytes]:
    return [bytes((CC | channel, 64, 0)), bytes((CC | channel, 123, 0)),
            bytes((CC | channel, 120, 0))]


def unmatched_notes(messages: list[bytes]) -> Counter:
    """(channel, pitch) -> note-ons not followed by a note-off."""
    open_notes: Counter = Counter()
    for m in messages:
        if m[0] & 0xF0 == ON and m[2] > 0:
            open_notes[(m[0] & 0x0F, m[1])] += 1
        elif m[0] & 0xF0 == OFF or m[0] & 0xF0 == ON:
            if open_notes[(m[0] & 0x0F, m[1])]:
                open_notes[(m[0] & 0x0F, m[1])] -= 1
    return +open_notes


def wait_until(ns: int) -> None:
    time.sleep(max(0, ns - time.monotonic_ns()) / 1e9)


# -- real JACK ports ----


@contextlib.contextmanager
def blame_xruns(receiver) -> Iterator[None]:
    """A failed check after the receiver missed JACK cycles (an overloaded machine; JACK
    drops or repeats MIDI then) is an expected failure; otherwise a real one."""
    try:
        yield
    except AssertionError as exc:
        if receiver.missed_cycles:
            pytest.xfail(f"the JACK receiver missed {receiver.missed_cycles} cycle(s): JACK "
                         f"drops or repeats MIDI then: {exc}")
        raise


@contextlib.contextmanager
def blame_late_sends(stats: dict) -> Iterator[None]:
    """A failed timing check when the sender itself counted late sends (its thread was
    held up: a loaded machine) is an expected failure; with no late send it is a real one."""
    try:
        yield
    except AssertionError as exc:
        if stats["late"]:
            pytest.xfail(f"the sender reported {stats['late']} late send(s) (max "
                         f"{stats['lateness']['max_us'] / 1e3:.1f} ms): this machine held "
                         f"its thread up: {exc}")
        raise


@pytest.fixture
def short_gil_switch() -> Iterator[None]:
    """The JACK receiver is a Python callback in this process: at -p 64 it must get the
    GIL within 1.33 ms, while the sender spins for up to 1 ms before each event. A short
    switch interval (default 5 ms) makes the spinning thread hand the GIL over at once."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def test_jack_round_trip_in_order_and_on_time(jack_receiver, short_gil_switch) -> None:
    port = open_output(jack_receiver.port_name, backend="jack", client_name="encore-test")
    clock = Clock(240, start_ns=time.monotonic_ns() + 150 * MS)  # 16ths 62.5 ms apart
    expected = []
    with MidiSender(clock, {"melody": port}) as sender:
        for step in range(16):
            pitch = 60 + step % 7
            start, end = clock.step_to_ns(0, step), clock.step_to_ns(0, step + 0.5)
            sender.schedule_note("melody", 0, pitch, 100, start, end)
            expected += [(start, bytes((ON, pitch, 100))), (end, bytes((OFF, pitch, 0)))]
        wait_until(clock.step_to_ns(0, 16) + 50 * MS)
        stats = sender.stats()
    port.close()
    events = [e for e in jack_receiver.take() if e[1][0] & 0xF0 in (ON, OFF)]
    expected.sort()
    with blame_xruns(jack_receiver):
        assert [m for _, m in events] == [m for _, m in expected]  # all, in order

    rate, period_ms = jack_receiver.sample_rate, jack_receiver.period_s * 1e3
    got = [(b[0] - a[0]) / rate * 1e3 for a, b in zip(events, events[1:], strict=False)]
    want = [(b[0] - a[0]) / 1e6 for a, b in zip(expected, expected[1:], strict=False)]
    errors = [abs(g - w) for g, w in zip(got, want, strict=True)]
    print(f"JACK period {period_ms:.2f} ms; interval error median "
          f"{statistics.median(errors):.2f} ms, max {max(errors):.2f} ms; sender lateness "
          f"p50 {stats['lateness']['p50_us']:.0f} us, p99 {stats['lateness']['p99_us']:.0f} us")
    with blame_xruns(jack_receiver):
        assert statistics.median(errors) <= period_ms / 2 + 1.5
        # one stall of a loaded machine may show; a burst or drift would show everywhere
        assert sorted(errors)[int(0.9 * len(errors))] <= period_ms + 2
        assert max(errors) <= 25
    assert stats["errors"] == {"melody": 0} and stats["dropped"] == 0


def test_stop_mid_phrase_ends_every_note_on_jack(jack_receiver, short_gil_switch) -> None:
    port = open_output(jack_receiver.port_name, backend="jack", client_name="encore-test")
    clock = Clock(240, start_ns=time.monotonic_ns() + 100 * MS)
    sender = MidiSender(clock, {"keys": port})
    with sender:
        for step in range(0, 16, 2):  # overlapping chords on two channels
            for channel, pitch in ((0, 60 + step), (0, 64 + step), (1, 40 + step)):
                sender.schedule_note("keys", channel, pitch, 90, clock.step_to_ns(0, step),
                                     clock.step_to_ns(0, step + 5))
        wait_until(clock.step_to_ns(0, 7))  # mid-phrase: several notes sounding
        assert len(sender.notes()) > 0
    sender.stop()  # a second stop is harmless
    time.sleep(0.1)
    messages = [m for _, m in jack_receiver.take()]
    port.close()
    with blame_xruns(jack_receiver):
        assert unmatched_notes(messages) == Counter()
        assert sorted(messages[-6:]) == sorted(silence(0) + silence(1))


# -- memory ports ----


def test_latency_offset_sends_earlier() -> None:
    ports = {"fast": MemoryPort("fast"), "slow": MemoryPort("slow", latency_ms=20),
             "late": MemoryPort("late")}
    clock = Clock(120)
    with MidiSender(clock, ports, latency_ms={"late": -10}) as sender:
        deadlines = [time.monotonic_ns() + (60 + 30 * i) * MS for i in range(5)]
        for t in deadlines:
            for name in ports:
                sender.schedule(t, name, bytes((ON, 60, 100)))
        wait_until(deadlines[-1] + 30 * MS)
    times = {name: [t for t, m in port.messages if m[0] == ON]
             for name, port in ports.items()}
    slow = statistics.median(f - s for f, s in zip(times["fast"], times["slow"], strict=True))
    late = statistics.median(f - s for f, s in zip(times["fast"], times["late"], strict=True))
    assert slow / MS == pytest.approx(20, abs=2)
    assert late / MS == pytest.approx(-10, abs=2)


def test_stale_note_ons_are_dropped_not_burst() -> None:
    port = MemoryPort("synth")
    sender = MidiSender(Clock(120), {"synth": port}, drop_after_ns=50 * MS)
    now = time.monotonic_ns()
    for i in range(10):  # a late start: these were due 300..120 ms ago
        sender.schedule_note("synth", 0, 50 + i, 100, now - (300 - 20 * i) * MS,
                             now - (290 - 20 * i) * MS)
    sender.schedule_note("synth", 0, 80, 100, now - 5 * MS, now + 20 * MS)  # a little late
    sender.schedule_note("synth", 0, 81, 100, now + 40 * MS, now + 60 * MS)
    with sender:
        wait_until(now + 100 * MS)
    sent = [m for m in port.sent() if m[0] & 0xF0 in (ON, OFF)]
    assert [m[1] for m in sent if m[0] & 0xF0 == ON] == [80, 81]
    assert sorted(m[1] for m in sent if m[0] & 0xF0 == OFF) == [*range(50, 60), 80, 81]
    stats = sender.stats()
    assert stats["dropped"] == 10 and stats["late"] >= 1


def test_panic_cancels_queued_note_ons_and_silences_every_channel() -> None:
    ports = {"a": MemoryPort("a"), "b": MemoryPort("b")}
    with MidiSender(Clock(120), ports) as sender:
        now = time.monotonic_ns()
        sender.schedule_note("a", 0, 60, 100, now + 10 * MS, now + 5000 * MS)
        sender.schedule_note("a", 3, 62, 100, now + 10 * MS, now + 5000 * MS)
        sender.schedule_note("b", 9, 36, 100, now + 10 * MS, now + 5000 * MS)
        sender.schedule_note("a", 0, 72, 100, now + 150 * MS, now + 200 * MS)  # queued
        wait_until(now + 60 * MS)
        assert len(sender.notes()) == 3
        ports["a"].messages.clear()
        ports["b"].messages.clear()
        assert sender.panic() is True
        wait_until(now + 250 * MS)
        assert ports["a"].sent() == ([bytes((OFF, 60, 0)), bytes((OFF | 3, 62, 0))]
                                     + silence(0) + silence(3) + [bytes((OFF, 72, 0))])
        assert ports["b"].sent() == [bytes((OFF | 9, 36, 0))] + silence(9)
        assert len(sender.notes()) == 0 and sender.stats()["panics"] == 1


def test_the_context_manager_stops_on_an_exception() -> None:
    port = MemoryPort("synth")
    with pytest.raises(RuntimeError, match="generator failed"):
        with MidiSender(Clock(120), {"synth": port}) as sender:
            now = time.monotonic_ns()
            sender.schedule_note("synth", 2, 64, 100, now + 5 * MS, now + 10_000 * MS)
            wait_until(now + 50 * MS)
            raise RuntimeError("generator failed")
    assert not sender.is_running
    assert port.sent()[-4:] == [bytes((OFF | 2, 64, 0))] + silence(2)
    assert sender.schedule(time.monotonic_ns(), "synth", bytes((ON, 1, 1))) is False
    assert sender.stats()["refused"] == 1


def test_stop_from_a_signal_handler_does_not_deadlock() -> None:
    """SIGALRM lands while the main thread hammers schedule(); its handler stops."""
    port = MemoryPort("synth")
    sender = MidiSender(Clock(120), {"synth": port}).start()
    stopped = threading.Event()

    took = []

    def handler(signum, frame) -> None:
        started = time.perf_counter()
        sender.stop()
        took.append(time.perf_counter() - started)
        stopped.set()

    previous = signal.signal(signal.SIGALRM, handler)
    faulthandler.dump_traceback_later(20, exit=True)  # a deadlock fails loudly, not hangs
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        pitch = 0
        while not stopped.is_set():  # most notes far ahead, every 100th one sounds now
            now = time.monotonic_ns() + (2 * MS if pitch % 100 == 0 else 10_000 * MS)
            sender.schedule_note("synth", pitch % 16, pitch % 128, 100, now, now + 300 * MS)
            if pitch % 5000 == 4999:
                sender.panic(wait=False)
            pitch += 1
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    print(f"{pitch} notes scheduled; stop() in the handler took {took[0] * 1e3:.1f} ms")
    assert not sender.is_running and sender.stats()["panics"] >= 2
    assert unmatched_notes(port.sent()) == Counter()
    sender.stop()  # twice: fine


def test_midi_clock_ticks_follow_the_tempo_map() -> None:
    port = MemoryPort("sync")
    clock = Clock(240, start_ns=time.monotonic_ns() + 100 * MS)  # bar 0: 1 s
    clock.set_tempo(300, at_bar=1)  # bar 1: 0.8 s
    with MidiSender(clock, {"sync": port}) as sender:
        sender.start_clock("sync", from_bar=0)
        wait_until(clock.bar_start_ns(1) + 300 * MS)
        sender.stop_clock()
        time.sleep(0.05)
        stats = sender.stats()
    assert port.sent()[0] == b"\xfa" and port.sent()[-1] == b"\xfc"
    ticks = [t for t, m in port.messages if m == b"\xf8"]
    assert len(ticks) >= 96 + 30
    with blame_late_sends(stats):
        assert_ticks_follow(clock, ticks)


def assert_ticks_follow(clock: Clock, ticks: list[int]) -> None:
    bar0 = [(b - a) / MS for a, b in zip(ticks[:96], ticks[1:97], strict=True)]
    bar1 = [(b - a) / MS for a, b in zip(ticks[96:-1], ticks[97:], strict=True)]
    print(f"tick spacing median {statistics.median(bar0):.3f} ms (want 10.417), "
          f"{statistics.median(bar1):.3f} ms (want 8.333)")
    assert statistics.median(bar0) == pytest.approx(60_000 / (240 * 24), abs=0.5)
    assert statistics.median(bar1) == pytest.approx(60_000 / (300 * 24), abs=0.5)
    # computed from the map, not chained: no drift across a bar
    lateness = [(t - clock.beat_to_ns(n / 24)) / MS for n, t in enumerate(ticks)]
    assert statistics.median(lateness) < 0.5
    assert abs(ticks[96] - clock.bar_start_ns(1)) < 3 * MS


def test_midi_clock_from_a_later_bar_sends_song_position_then_continue() -> None:
    port = MemoryPort("sync")
    clock = Clock(240, start_ns=time.monotonic_ns() - 2900 * MS)  # bar 3 in 100 ms
    with MidiSender(clock, {"sync": port}) as sender:
        with pytest.raises(ValueError, match="has started"):
            sender.start_clock("sync", from_bar=2)
        sender.start_clock("sync", from_bar=3)
        wait_until(clock.bar_start_ns(3) + 50 * MS)
        stats = sender.stats()
    sent = port.sent()
    assert sent[:3] == [bytes((0xF2, 48, 0)), b"\xfb", b"\xf8"]  # 3 bars = 48 sixteenths
    assert sent[-1] == b"\xfc"  # stop() stops the clock too
    start = [t for t, m in port.messages if m == b"\xfb"][0]
    with blame_late_sends(stats):
        assert abs(start - clock.bar_start_ns(3)) < 3 * MS


class FlakyPort(MemoryPort):
    """A memory port that counts how often it was opened."""

    def __init__(self, name: str) -> None:
        self.opens = 0
        super().__init__(name)

    def _open(self) -> None:
        self.opens += 1
        super()._open()


def test_a_vanished_port_is_counted_and_reopened_by_name() -> None:
    port = FlakyPort("usb")
    with MidiSender(Clock(120), {"usb": port}, reopen_interval_ns=200 * MS) as sender:
        now = time.monotonic_ns()
        for i in range(100):  # a message every 10 ms for a second
            sender.schedule(now + (20 + 10 * i) * MS, "usb", bytes((CC, 1, i)))
        port.unplug()
        wait_until(now + 520 * MS)
        attempts_while_gone = port.opens - 1
        broken = sender.stats()
        port.plug()
        wait_until(now + 1100 * MS)
    stats = sender.stats()
    assert broken["errors"]["usb"] == 1 and broken["broken"] == ["usb"]
    assert 1 <= attempts_while_gone <= 3  # at most one attempt per interval
    assert stats["reopens"]["usb"] == 1 and stats["broken"] == []
    values = [m[2] for m in port.sent() if m[:2] == bytes((CC, 1))]
    assert values == sorted(values) and values[-1] == 99  # flowing again after the reopen
    assert stats["lost"]["usb"] == 100 - len(values)
    assert isinstance(port.messages, list) and issubclass(MidiPortError, OSError)


def test_a_retime_moves_what_is_queued_and_the_clock_ticks() -> None:
    """Two bars of notes and MIDI clock are queued; the clock is retimed in the middle of
    the first (as when a Link session's tempo changes mid-bar): everything after the
    retime's step is sent where the new map puts its beat, in order, each note-off after
    its note-on; the per-port latency offset still applies."""
    ports = {"a": MemoryPort("a"), "b": MemoryPort("b", latency_ms=10)}
    clock = Clock(240, start_ns=time.monotonic_ns() + 150 * MS)  # 1 s bars
    old = Clock(240, start_ns=clock.start_ns)  # the map the notes were stamped on
    steps = range(32)  # two bars of 16ths
    with MidiSender(clock, ports) as sender:
        sender.start_clock("a", from_bar=0)
        for n in steps:
            start = clock.beat_to_ns(n / 4)
            for name in ports:
                sender.schedule_note(name, 0, 40 + n, 100, start, start + 30 * MS)
        wait_until(clock.start_ns + 300 * MS)
        warp = clock.retime(time.monotonic_ns() + 20 * MS, 1, clock.start_ns + 1200 * MS,
                            {1: 200.0})  # bar 1 at 1.2 s, 200 BPM from there
        sender.retime(warp)
        wait_until(clock.bar_start_ns(2) + 100 * MS)
        sender.stop_clock()
        time.sleep(0.05)
        stats = sender.stats()
    assert stats["retimes"] == 1 and stats["retimed"] > 2 * 24
    pivot = warp.from_ns
    for name, port in ports.items():
        sent = [(t, m) for t, m in port.messages if m[0] & 0xF0 in (ON, OFF)]
        assert unmatched_notes([m for _t, m in sent]) == Counter()
        ons = [(t, m[1] - 40) for t, m in sent if m[0] & 0xF0 == ON]
        with blame_late_sends(stats):  # a note-on held up > 50 ms is dropped, by design
            assert [n for _t, n in ons] == list(steps)  # every note, once, in order
        offset = 10 * MS if name == "b" else 0
        errors = []
        with blame_late_sends(stats):
            for t, n in ons:
                wanted, before = clock.beat_to_ns(n / 4), old.beat_to_ns(n / 4)
                if before > pivot + 10 * MS:  # moved: nearer the new map than the old
                    assert abs(t + offset - wanted) < abs(t + offset - before), (name, n)
                errors.append((t + offset - wanted) / MS)
            assert statistics.median(errors) < 2, (name, errors)
    ticks = [t for t, m in ports["a"].messages if m == b"\xf8"]
    assert len(ticks) >= 2 * 96
    errors = [(t - clock.beat_to_ns(n / 24)) / MS for n, t in enumerate(ticks[:192])]
    with blame_late_sends(stats):
        assert statistics.median(errors) < 1, errors
        assert abs(ticks[96] - clock.bar_start_ns(1)) < 3 * MS
