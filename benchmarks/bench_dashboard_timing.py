"""What the stage dashboard costs the show's MIDI timing: lateness with it on and off, in
one run of one show.

    python benchmarks/bench_dashboard_timing.py                 # 4 blocks of 8 bars each way
    python benchmarks/bench_dashboard_timing.py --quick         # 2 blocks of 3 bars each way
    python benchmarks/bench_dashboard_timing.py --synth         # drums and chords on the
                                                                # built-in synth, voice on
    python benchmarks/bench_dashboard_timing.py --thread --unaligned   # two more ways:
                                        # drawn in the show's process; taken at any moment

A real :class:`~engine.live.show.Show` plays the patch (default: ``patches/default.toml``,
the shipped models) in this process on a JACK dummy server of the benchmark's own
(``jackd -n encore-bench -d dummy -r 48000 -p 256``, started detached and stopped by PID;
``JACK_DEFAULT_SERVER`` names it, so other JACK servers are left alone). Its parts go to
a virtual JACK MIDI port (``--synth``: melody and bass do; drums and chords play on the
built-in FluidSynth through PortAudio's JACK output, and the voice sings). The dashboard
is switched on and off in blocks of ``--block-bars`` bars, ABBA... (A = off, B = on), so
both see the same load; on, it draws four frames a second, with colour, into a terminal
console whose output goes to /dev/null (the whole cost of drawing, nowhere to see it),
by its drawing process, each frame taken between the grid's MIDI sends, as ``encore live
--dashboard`` does. ``--thread`` adds blocks where the dashboard's thread draws in the
show's process itself, ``--unaligned`` blocks where frames are taken at any moment: what
the drawing process and the alignment each buy.

Lateness is the MIDI sender's own stamp of each message (send time minus deadline, the
figures ``sender.stats()`` reports), taken per block from the sender's ring: the sends
between the block's first and last bar lines. Also printed: the dashboard's time to
draw a frame, and (``--synth``) audio underruns per condition.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_live_timing import SERVER, _machine, jack_server  # noqa: E402

PERIOD = 256
WARM_UP_BARS = 2
LATE_MS = 3.0
MIDI_SETUP = "all four parts on MIDI, no audio"
SYNTH_SETUP = "melody and bass on MIDI, drums and chords on the built-in synth, voice on"


def bench_patch(name: str, synth: bool) -> Any:
    """The patch with every part (``synth``: melody and bass) on a virtual JACK MIDI port,
    OSC on a free port."""
    from engine.patch import build_patch, load_patch

    data = load_patch(name).to_dict()
    for part in ("melody", "bass", "drums", "chords"):
        on_midi = not synth or part in ("melody", "bass")
        data["parts"][part]["port"] = "bench" if on_midi else ""
    data["midi"] |= {"backend": "virtual", "clock_out": "", "clock_in": ""}
    data["live"] |= {"internal_synth": synth, "link": False}
    data["osc"] |= {"port": 0}
    if not synth:
        data["voice"] |= {"singer": "off"}
    return build_patch(data, f"{name} (bench)", validate_files=synth)


CONDITIONS = {"off": "dashboard off", "on": "dashboard on",
              "thread": "on, drawn in-process", "unaligned": "on, at any moment"}


def block_order(blocks: int, conditions: tuple[str, ...]) -> list[str]:
    """ABBA ... (ABCCBA ... with three): each condition gets early and late blocks."""
    pattern = conditions + conditions[::-1]
    return [pattern[i % len(pattern)] for i in range(len(conditions) * blocks)]


def _ms(values: np.ndarray) -> tuple[float, float, float]:
    if values.size == 0:
        return (float("nan"),) * 3
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50) / 1e6, float(p99) / 1e6, float(values.max()) / 1e6


async def measure(patch: Any, args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    from engine.live.dashboard import Dashboard
    from engine.live.show import Show

    state: dict[str, Any] = {"dashboard": None}

    def on_bar(show: Any, bar: Any) -> None:
        if state["dashboard"] is not None:
            state["dashboard"].on_bar(show, bar)

    show = Show(patch, record_dir=None, audio=args.synth, osc=True, on_bar=on_bar)
    task = asyncio.ensure_future(show.run())
    loop = asyncio.get_running_loop()
    null = open(os.devnull, "w")  # noqa: SIM115 - closed below
    console = Console(file=null, force_terminal=True, width=120, height=50,
                      color_system="truecolor")
    conditions = ("off", "on") + (("thread",) if args.thread else ()) + (
        ("unaligned",) if args.unaligned else ())
    lateness: dict[str, list[np.ndarray]] = {c: [] for c in conditions}
    underruns: dict[str, int] = dict.fromkeys(conditions, 0)
    render_ms: dict[str, list[float]] = {c: [] for c in conditions}

    async def until_bar(bar: int) -> None:
        while show.clock is None or show.clock.now_beat() < 4 * bar:
            if task.done():
                task.result()
                raise SystemExit("bench_dashboard_timing: the show ended early")
            await asyncio.sleep(0.002)

    def underrun_count() -> int:
        return int(show.audio_engine.stats().underruns) if show.audio_engine else 0

    try:
        bar = WARM_UP_BARS
        await until_bar(bar)
        sender = show.sender
        assert sender is not None, "no MIDI sender: the patch plays no part on MIDI"
        for on in block_order(args.blocks, conditions):
            dashboard = None
            if on != "off":  # as encore live draws it: a process of its own, or here
                dashboard = Dashboard(show, loop, keys=False, between_sends=on != "unaligned",
                                      console=console if on == "thread" else None,
                                      output=os.devnull)
                state["dashboard"] = dashboard
                dashboard.start()
            first_sent, first_underruns = sender._sent, underrun_count()
            bar += args.block_bars
            await until_bar(bar)
            last_sent = sender._sent
            # the sender's lateness ring (private: a benchmark may look inside)
            ring = np.frombuffer(sender._ring, dtype=np.int64)
            index = np.arange(first_sent, last_sent) & sender._ring_mask
            if last_sent - first_sent > len(ring):
                raise SystemExit("bench_dashboard_timing: a block overflowed the sender's "
                                 "ring; use fewer --block-bars")
            lateness[on].append(ring[index].copy())
            underruns[on] += underrun_count() - first_underruns
            if dashboard is not None:
                state["dashboard"] = None
                await asyncio.to_thread(dashboard.stop)
                render_ms[on] += list(dashboard.render_ms)
        stats = sender.stats()
    finally:
        show.stop()
        await task
        null.close()
    return {"lateness": {k: np.concatenate(v) if v else np.array([]) for k, v in
                         lateness.items()},
            "underruns": underruns,
            "render_ms": {k: np.array(v) for k, v in render_ms.items() if v},
            "sender": stats, "health": show.health.to_dict()}


def report(result: dict[str, Any], args: argparse.Namespace, patch: Any) -> None:
    bar_s = 240 / patch.song.tempo
    print(f"\nshow: {patch.song.title!r}, {patch.song.tempo:g} BPM, "
          f"{SYNTH_SETUP if args.synth else MIDI_SETUP}"
          f"; {args.blocks} blocks of {args.block_bars} bars ({args.block_bars * bar_s:.0f} s) "
          f"each way, in ABBA order")
    print(f"{'MIDI lateness (ms)':<26}{'sends':>8}{'p50':>9}{'p99':>9}{'max':>9}"
          f"{'> ' + str(LATE_MS) + ' ms':>9}" + ("   underruns" if args.synth else ""))
    for on, late in result["lateness"].items():
        p50, p99, mx = _ms(late)
        print(f"  {CONDITIONS[on]:<24}{late.size:>8}{p50:>9.3f}"
              f"{p99:>9.3f}{mx:>9.3f}{int((late > LATE_MS * 1e6).sum()):>9}"
              + (f"   {result['underruns'][on]:>9}" if args.synth else ""))
    for on, r in result["render_ms"].items():
        print(f"{CONDITIONS[on]}: {r.size} frames; time in the show's process a frame p50 "
              f"{np.percentile(r, 50):.2f} ms, p99 {np.percentile(r, 99):.2f} ms, max "
              f"{r.max():.2f} ms (the dashboard's thread"
              + (", reading the state and sending it to the drawing process)"
                 if on != "thread" else ", drawing)"))
    health = result["health"]
    print(f"show: {health['bars_played']} bars, fallback bars {health['bars_fallback']}; "
          f"load average now {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", default="default", help="the patch (default: default)")
    parser.add_argument("--blocks", type=int, default=4,
                        help="blocks per condition (default 4)")
    parser.add_argument("--block-bars", type=int, default=8, help="bars a block (default 8)")
    parser.add_argument("--synth", action="store_true",
                        help="drums and chords on the built-in synth, and the voice")
    parser.add_argument("--quick", action="store_true", help="2 blocks of 3 bars each way")
    parser.add_argument("--thread", action="store_true",
                        help="another condition: frames drawn by the dashboard's thread in "
                             "the show's process (what the drawing process buys)")
    parser.add_argument("--unaligned", action="store_true",
                        help="another condition: frames taken at any moment, not between "
                             "the grid's MIDI sends (what that alignment buys)")
    args = parser.parse_args(argv)
    if args.quick:
        args.blocks, args.block_bars = 2, 3
    if args.blocks < 1 or args.block_bars < 1:
        parser.error("--blocks and --block-bars must be at least 1")
    os.environ["JACK_DEFAULT_SERVER"] = SERVER  # this process's JACK clients find our server
    print(f"Encore dashboard timing benchmark, "
          f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(_machine())
    patch = bench_patch(args.patch, args.synth)
    with tempfile.TemporaryDirectory(prefix="bench_dashboard_") as tmp, \
            jack_server(PERIOD, Path(tmp)):
        started = time.monotonic()
        result = asyncio.run(measure(patch, args))
    print(f"measured in {time.monotonic() - started:.0f} s")
    report(result, args, patch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
