"""An independent Ableton Link peer that measures where another app's bar lines fall.

Run as a separate process (it shares no code with Encore): it joins a Link session through
``LinkPython-extern`` (the raw Link API; GPL like Link, in the optional ``linktest`` extra),
and records the MIDI clock that arrives at the JACK input ``<client>:input``, then turns
every tick into the session's beat and phase.

The MIDI is taken by ``midi_stamp`` (``midi_stamp.c`` beside this file, built by the
test): a JACK client in plain C, whose callback never waits for Python's GIL (a Python
callback on a loaded machine misses cycles, and JACK drops the MIDI of a missed cycle). It
stamps each message on CLOCK_MONOTONIC_RAW, which is Link's clock on Linux: the cycle's
start (the clock in the callback, less the frames JACK says have passed since the cycle
began) plus the message's offset in the cycle. The session's beat at that time comes
from the timeline the session had then (this peer's own changes exactly, others' as
polled every 2 ms).

It writes a JSON file: for each clock tick after Start, its index, Link time (us), the
session beat and phase and the tempo then; the timelines; and the run's figures (with
the ticks lost on the way, which the numbering steps over: see ``count_ticks``). The
phase error of a downbeat (a tick whose index is a multiple of 96) is
``((phase + q/2) mod q) - q/2`` beats, in ms at the tempo then.

    python link_peer.py --stamp ./midi_stamp --out result.json --bpm 100 --seconds 40 \
        --tempo 25:120         # at 25 s after the first Start, the peer moves to 120 BPM
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable

import link


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stamp", required=True, help="the built midi_stamp program")
    parser.add_argument("--out", required=True)
    parser.add_argument("--bpm", type=float, default=100.0)
    parser.add_argument("--quantum", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="after the first Start")
    parser.add_argument("--give-up", type=float, default=120.0, help="no Start by then: end")
    parser.add_argument("--client", default="encore-linkpeer")
    parser.add_argument("--tempo", action="append", default=[],
                        help="S:BPM: move the session to BPM, S seconds after the first Start")
    parser.add_argument("--start-stop", action="store_true",
                        help="share start/stop; the session's play state is recorded")
    parser.add_argument("--stop", type=float, default=None,
                        help="S: stop the session (start/stop) S seconds after the first Start")
    parser.add_argument("--ready", default="", help="touch this file once the input is up")
    args = parser.parse_args()
    changes = sorted((float(s), float(b)) for s, b in (c.split(":") for c in args.tempo))

    try:  # the main thread holds the GIL now and then: keep it from being put off
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        pass
    session_link = link.Link(args.bpm)
    session_link.startStopSyncEnabled = args.start_stop
    session_link.enabled = True
    clock = session_link.clock()
    playing: list[tuple[int, bool]] = []  # (Link us it took effect, the play state from then)

    stamp = subprocess.Popen([args.stamp, args.client], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stamp.stdout.readline, "")),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while not lines:
        if time.monotonic() > deadline or stamp.poll() is not None:
            raise SystemExit("midi_stamp did not come up")
        time.sleep(0.01)
    if args.ready:
        open(args.ready, "w").close()

    timelines: list[tuple[int, float, float]] = []  # (Link us, beat there, tempo) from then on

    def note_timeline(at_us: int) -> None:
        state = session_link.captureAppSessionState()
        tempo = state.tempo()
        if not timelines or abs(timelines[-1][2] - tempo) > 1e-9:
            timelines.append((at_us, state.beatAtTime(at_us, args.quantum), tempo))

    note_timeline(clock.micros())
    started_us: int | None = None
    give_up = time.monotonic() + args.give_up
    pending = list(changes)
    peers_seen = 0
    while True:
        time.sleep(0.002)
        now_us = clock.micros()
        note_timeline(now_us)
        peers_seen = max(peers_seen, session_link.numPeers())
        if args.start_stop:
            state = session_link.captureAppSessionState()
            if not playing or playing[-1][1] != state.isPlaying():
                playing.append((state.timeForIsPlaying(), state.isPlaying()))
        if started_us is None:
            if any(line.endswith(" fa\n") for line in list(lines)):
                started_us = now_us
            elif time.monotonic() > give_up:
                break
            continue
        if pending and now_us >= started_us + pending[0][0] * 1e6:
            _, bpm = pending.pop(0)
            state = session_link.captureAppSessionState()
            state.setTempo(bpm, now_us)
            session_link.commitAppSessionState(state)
            timelines.append((now_us, state.beatAtTime(now_us, args.quantum), bpm))
        if args.stop is not None and now_us >= started_us + args.stop * 1e6:
            args.stop = None
            state = session_link.captureAppSessionState()
            state.setIsPlaying(False, now_us)
            session_link.commitAppSessionState(state)
        if now_us >= started_us + args.seconds * 1e6:
            break
    time.sleep(0.1)
    stamp.terminate()
    stamp.wait(timeout=5)
    reader.join(timeout=5)
    session_link.enabled = False

    messages = []  # (Link us, JACK frame, message bytes)
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[0] != "overflows":
            messages.append((float(fields[0]), int(fields[1]),
                             bytes(int(b, 16) for b in fields[2:])))
    overflows = next((int(line.split()[1]) for line in lines
                      if line.startswith("overflows")), 0)

    def beat_at(us: float) -> tuple[float, float]:
        i = max(bisect.bisect_right([row[0] for row in timelines], us) - 1, 0)
        at, beat, tempo = timelines[i]
        return beat + (us - at) * tempo / 60e6, tempo

    clock_msgs = [(us, data) for us, _, data in messages
                  if data in (b"\xfa", b"\xfc", b"\xf8")]
    ticks, lost = count_ticks(clock_msgs, beat_at, args.quantum)
    with open(args.out, "w") as out:
        json.dump({"quantum": args.quantum, "overflows": overflows, "lost_ticks": lost,
                   "peers": peers_seen,
                   "started_us": started_us, "timelines": timelines, "changes": changes,
                   "playing": playing, "ticks": ticks,
                   "clock_us": [(us, data.hex()) for us, data in clock_msgs]}, out)


def count_ticks(clock_msgs: list[tuple[float, bytes]],
                beat_at: Callable[[float], tuple[float, float]],
                quantum: float) -> tuple[list[dict], int]:
    """Number the clock ticks from Start and put each on the session's beat.

    On a loaded machine Encore's sender is now and then held up (~100 ms) and then sends
    the ticks due in a burst, and a tick can go missing on the way (JACK loses a MIDI
    message in an xrun, seen inside such bursts). So ticks are not only counted: a
    regular tick (the intervals before and after it both 0.6 to 1.6 of a tick at the
    session's tempo) is numbered by the time since the last regular tick, over the tick
    interval there (the session's, unless that bar was bent to fit: then the measured
    one), when that says more than counting does. Returns the ticks and how many numbers
    were skipped (lost ticks)."""
    times = [us for us, _ in clock_msgs]
    ticks: list[dict] = []
    index: int | None = None
    anchor: tuple[int, float, float] | None = None  # a regular tick: index, us, interval
    lost = 0
    for i, (us, data) in enumerate(clock_msgs):
        if data == b"\xfa":
            index, anchor = 0, None
            continue
        if data == b"\xfc":
            index, anchor = None, None
            continue
        if index is None:
            continue
        beat, tempo = beat_at(us)
        tick_us = 60e6 / (tempo * 24)
        before = us - times[i - 1] if clock_msgs[i - 1][1] == b"\xf8" else None
        after = times[i + 1] - us if i + 1 < len(times) else None
        regular = (before is not None and after is not None
                   and 0.6 * tick_us <= before <= 1.6 * tick_us
                   and 0.6 * tick_us <= after <= 1.6 * tick_us)
        if regular and anchor is not None and index - anchor[0] > 1:
            by_time = anchor[0] + round((us - anchor[1]) / anchor[2])
            if by_time > index:
                lost += by_time - index
                index = by_time
        if regular:
            local = (before + after) / 2
            anchor = (index, us, tick_us if abs(local / tick_us - 1) < 0.12 else local)
        ticks.append({"index": index, "us": us, "beat": beat, "phase": beat % quantum,
                      "bpm": tempo})
        index += 1
    return ticks, lost


if __name__ == "__main__":
    main()
