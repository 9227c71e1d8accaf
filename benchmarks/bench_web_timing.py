"""What the stage page costs the show's timing: MIDI lateness and audio underruns with no
page and with 4 pages connected, in one run of one show.

    python benchmarks/bench_web_timing.py              # 4 blocks of 8 bars each way
    python benchmarks/bench_web_timing.py --quick      # 2 blocks of 3 bars each way
    python benchmarks/bench_web_timing.py --midi-only  # no built-in synth, no voice
    python benchmarks/bench_web_timing.py --no-voice   # the built-in synth, no voice

A real :class:`~engine.live.show.Show` plays the patch (default: ``patches/default.toml``,
the shipped models) in this process with its stage page on, on a JACK dummy server of the
benchmark's own (``jackd -n encore-bench-web -d dummy -r 48000 -p 256``, stopped by PID):
melody and bass to a virtual JACK MIDI port, drums and chords on the built-in FluidSynth
through the JACK audio output, the voice singing (``--midi-only``: every part on MIDI, no
audio). Blocks of ``--block-bars`` bars alternate ABBA... between no page and 4 pages. The
pages are WebSocket clients in a child process that do what the page does: say hello,
read every frame, and move a fader 10 times a second each (the voice's level: a touch that
sends no MIDI, so the MIDI traffic is the same in both conditions; a part's level would add
a CC message per touch): so the show builds and sends its frames to 4 clients and takes 40
touches a second through the OSC path. (Not Chromium: four browsers would compete with the
show for this machine's two cores, which a phone on stage does not.)

Lateness is the MIDI sender's own stamp of each message (as
``benchmarks/bench_dashboard_timing.py`` takes it); underruns are the audio callback's.
Also printed: the time the show's loop spends building and queueing a frame for the
pages, and the frames and touches that went through.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
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

import bench_live_timing  # noqa: E402
from bench_dashboard_timing import _ms, bench_patch, block_order  # noqa: E402
from bench_live_timing import _machine, jack_server  # noqa: E402

bench_live_timing.SERVER = "encore-bench-web"  # a server of our own, beside other benches
PERIOD = 256
WARM_UP_BARS = 2
LATE_MS = 3.0
PAGES = 4
TOUCH_HZ = 10.0
CONDITIONS = {"0": "no page", "4": f"{PAGES} pages"}

# The pages: PAGES WebSocket clients that read every frame and touch a fader TOUCH_HZ times
# a second each; "ready" once all are in, until stdin closes; then the counts.
PAGES_CHILD = r"""
import asyncio, json, sys, aiohttp
async def page(url, n, counts, stop):
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"type": "hello", "pin": ""}))
        async def read():
            async for msg in ws:
                counts["frames"] += 1
                counts["bytes"] += len(msg.data)
        reader = asyncio.ensure_future(read())
        counts["in"] += 1
        level = 0.8
        while not stop.is_set():
            level = 0.8 if level < 0.8 else 0.79
            await ws.send_str(json.dumps({"type": "osc", "args": [level],
                                          "address": "/encore/voice/level"}))
            counts["touches"] += 1
            await asyncio.sleep(1 / float(sys.argv[3]))
        reader.cancel()
async def main(url, pages):
    counts = {"frames": 0, "bytes": 0, "touches": 0, "in": 0}
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(page(url, n, counts, stop)) for n in range(pages)]
    while counts["in"] < pages:
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(counts), flush=True)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def measure(patch: Any, args: argparse.Namespace) -> dict[str, Any]:
    from engine.live.show import Show

    show = Show(patch, record_dir=None, audio=not args.midi_only, osc=True)
    task = asyncio.ensure_future(show.run())
    lateness: dict[str, list[np.ndarray]] = {c: [] for c in CONDITIONS}
    underruns: dict[str, int] = dict.fromkeys(CONDITIONS, 0)
    publish_ms: list[float] = []
    publish_cpu_ms: list[float] = []
    pages_counts: list[dict] = []

    async def until_bar(bar: int) -> None:
        while show.clock is None or show.clock.now_beat() < 4 * bar:
            if task.done():
                task.result()
                raise SystemExit("bench_web_timing: the show ended early")
            await asyncio.sleep(0.002)

    def underrun_count() -> int:
        return int(show.audio_engine.stats().underruns) if show.audio_engine else 0

    try:
        bar = WARM_UP_BARS
        await until_bar(bar)
        sender, web = show.sender, show.web
        assert sender is not None, "no MIDI sender: the patch plays no part on MIDI"
        assert web is not None, "the stage page is off"
        publish = web._publish

        def timed_publish() -> None:  # the loop's cost of one frame for every page
            start, cpu = time.perf_counter(), time.thread_time()
            publish()
            if web.clients:
                publish_ms.append((time.perf_counter() - start) * 1e3)
                publish_cpu_ms.append((time.thread_time() - cpu) * 1e3)

        web._publish = timed_publish
        url = f"ws://127.0.0.1:{web.port}/ws"
        for pages in block_order(args.blocks, tuple(CONDITIONS)):
            child = None
            if pages != "0":
                child = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", PAGES_CHILD, url, pages, str(TOUCH_HZ),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                assert child.stdout is not None
                line = await asyncio.wait_for(child.stdout.readline(), 30)
                assert line.strip() == b"ready", line
            bar = max(bar, int(show.clock.now_beat() // 4) + 1)
            await until_bar(bar)  # the block starts on a bar line
            first_sent, first_underruns = sender._sent, underrun_count()
            bar += args.block_bars
            await until_bar(bar)
            last_sent = sender._sent
            ring = np.frombuffer(sender._ring, dtype=np.int64)
            if last_sent - first_sent > len(ring):
                raise SystemExit("bench_web_timing: a block overflowed the sender's ring; "
                                 "use fewer --block-bars")
            index = np.arange(first_sent, last_sent) & sender._ring_mask
            lateness[pages].append(ring[index].copy())
            underruns[pages] += underrun_count() - first_underruns
            if child is not None:
                out, _ = await asyncio.wait_for(child.communicate(b""), 30)
                pages_counts.append(json.loads(out.decode().splitlines()[-1]))
        stats = sender.stats()
    finally:
        show.stop()
        await task
    return {"lateness": {k: np.concatenate(v) if v else np.array([]) for k, v in
                         lateness.items()},
            "underruns": underruns, "publish_ms": np.array(publish_ms),
            "publish_cpu_ms": np.array(publish_cpu_ms),
            "pages": pages_counts, "sender": stats, "health": show.health.to_dict()}


def report(result: dict[str, Any], args: argparse.Namespace, patch: Any) -> None:
    bar_s = 240 / patch.song.tempo
    setup = ("every part on MIDI, no audio" if args.midi_only else
             "melody and bass on MIDI, drums and chords on the built-in synth, voice "
             + ("off" if args.no_voice else "on"))
    print(f"\nshow: {patch.song.title!r}, {patch.song.tempo:g} BPM, {setup}; {args.blocks} "
          f"blocks of {args.block_bars} bars ({args.block_bars * bar_s:.0f} s) each way, "
          "ABBA order")
    print(f"{'MIDI lateness (ms)':<22}{'sends':>8}{'p50':>9}{'p99':>9}{'max':>9}"
          f"{'> ' + str(LATE_MS) + ' ms':>9}{'underruns':>11}")
    for pages, late in result["lateness"].items():
        p50, p99, mx = _ms(late)
        print(f"  {CONDITIONS[pages]:<20}{late.size:>8}{p50:>9.3f}{p99:>9.3f}{mx:>9.3f}"
              f"{int((late > LATE_MS * 1e6).sum()):>9}{result['underruns'][pages]:>11}")
    for key, what in (("publish_ms", "wall-clock"), ("publish_cpu_ms", "CPU")):
        published = result[key]
        if published.size:
            print(f"the loop's {what} time to build and queue a frame for {PAGES} pages: p50 "
                  f"{np.percentile(published, 50):.2f} ms, p99 "
                  f"{np.percentile(published, 99):.2f} ms, max {published.max():.2f} ms "
                  f"({published.size} frames)")
    counts = result["pages"]
    if counts:
        print(f"pages: {sum(c['frames'] for c in counts)} frames "
              f"({sum(c['bytes'] for c in counts) / 1e6:.1f} MB) received, "
              f"{sum(c['touches'] for c in counts)} touches sent")
    health = result["health"]
    web = health.get("web", {})
    print(f"show: {health['bars_played']} bars, fallback bars {health['bars_fallback']}; "
          f"touches taken {web.get('commands', {}).get('good', 0)}, refused "
          f"{web.get('flood_dropped', 0) + web.get('malformed', 0)}; pages dropped "
          f"{web.get('dropped_slow', 0) + web.get('dropped_flood', 0)}; load average now "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", default="default", help="the patch (default: default)")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per condition")
    parser.add_argument("--block-bars", type=int, default=8, help="bars a block")
    parser.add_argument("--midi-only", action="store_true",
                        help="every part on MIDI: no built-in synth, no voice")
    parser.add_argument("--no-voice", action="store_true",
                        help="the built-in synth without the voice (a lighter load)")
    parser.add_argument("--quick", action="store_true", help="2 blocks of 3 bars each way")
    args = parser.parse_args(argv)
    if args.quick:
        args.blocks, args.block_bars = 2, 3
    if args.blocks < 1 or args.block_bars < 1:
        parser.error("--blocks and --block-bars must be at least 1")
    os.environ["JACK_DEFAULT_SERVER"] = bench_live_timing.SERVER
    print(f"Encore stage page timing benchmark, "
          f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(_machine())
    patch = bench_patch(args.patch, not args.midi_only)
    patch = dataclasses.replace(patch, web=patch.web.replace(enabled=True, port=0))
    if args.no_voice:
        patch = dataclasses.replace(patch, voice=dataclasses.replace(patch.voice, singer="off"))
    with tempfile.TemporaryDirectory(prefix="bench_web_") as tmp, \
            jack_server(PERIOD, Path(tmp)):
        started = time.monotonic()
        result = asyncio.run(measure(patch, args))
    print(f"measured in {time.monotonic() - started:.0f} s")
    report(result, args, patch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
