"""Endurance: does the engine's memory stay flat over hours of song?

    python benchmarks/bench_soak.py                      # 3 hours of song time, offline
    python benchmarks/bench_soak.py --hours 1 --lyrics gpt2
    python benchmarks/bench_soak.py --minutes 5          # a quick look
    python benchmarks/bench_soak.py --live 30            # 30 minutes of `encore live`

Offline soak (the default): the patch's song (``--patch``, default ``default``) is played
for ``--hours`` (or ``--minutes``) of song time at the patch's tempo through the same
Conductor, Composer and LyricsTrack the live show and ``encore render`` use, in this
process, as fast as it goes, with no audio: each bar is planned, realised (the MusicVAE
decode and the arrangement), fed to the lyricist (Markov by default, ``--lyrics gpt2`` or
``off``) and written to an event log in a temporary folder, as a live set records it
(``--no-log`` skips that). After set-up the process does what the show does before it
plays: ``gc.collect()`` then ``gc.freeze()``. Every ``--sample-bars`` bars (default: 100
samples in all) the resident set size is read from ``/proc/self/statm`` (after a
``gc.collect()``, so that it measures what is kept, not garbage waiting for the collector)
with the number of objects the garbage collector tracks. Printed: the memory curve (bar,
song minutes, RSS MB, objects), the growth after warm-up (from the end of the first 10% of
the bars to the end; goal < 5%), the least-squares slope after warm-up in MB per hour of
song, the sizes of the engine's known per-song caches, and bars/s.

Live soak (``--live MINUTES``): ``encore live`` runs as a child process for that many
minutes of wall time on a JACK dummy server (the default server; one is started, ``jackd -d
dummy -r 48000 -p 256``, detached, when none answers, and stopped by PID afterwards; one
that was already running is used and left alone), with the built-in synth, the patch's
singer (``--singer fallback|off|NAME`` to change it), the lyricist of ``--lyrics``, no OSC
server, the drums on a virtual JACK MIDI port
(``--midi-part``; ``none`` keeps every part on the built-in synth, and then nothing is sent
as MIDI) and the set recorded into a temporary folder (``--no-record`` for none). Every 10 s
the resident set size of the show's process and of its workers (its child processes) is
read from ``/proc/PID/statm``. At the end the show gets SIGINT, as Ctrl-C would, and its
``stopped: {...}`` health summary is read: audio underruns, late MIDI, generation
fallbacks, the singer's phrases sung and missed. Printed: the memory curve, growth after
warm-up (first 10% of the samples) and the summary.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import datetime
import gc
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1e6
WARMUP_FRACTION = 0.10
GROWTH_GOAL_PCT = 5.0
DEFAULT_HOURS = 3.0
LIVE_SAMPLE_S = 10.0
JACKD_ARGS = ["-d", "dummy", "-r", "48000", "-p", "256"]
STOP_TIMEOUT_S = 60.0


# ---- memory ------------------------------------------------------------------------------

def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from ``/proc/PID/statm`` (its second field, pages)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from each process's parent id in ``/proc/*/stat``)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def growth(values: list[float]) -> tuple[float, float, float]:
    """(value at the end of the warm-up, last value, growth between them in percent)."""
    warm = values[max(0, math.ceil(len(values) * WARMUP_FRACTION) - 1)]
    last = values[-1]
    return warm, last, 100.0 * (last - warm) / warm if warm > 0 else math.nan


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs`` (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _machine() -> str:
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, load average "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; python "
            f"{platform.python_version()}")


# ---- the patch ---------------------------------------------------------------------------

def soak_patch(name: str, lyrics: str):
    """The patch ``name`` with ``[lyrics] source`` set (its shipped model) and no song end."""
    from engine.patch import load_patch

    patch = load_patch(name)
    return dataclasses.replace(
        patch, song=dataclasses.replace(patch.song, bars=0),
        lyrics=dataclasses.replace(patch.lyrics, source=lyrics,
                                   model="" if lyrics != patch.lyrics.source
                                   else patch.lyrics.model))


def bar_seconds(patch) -> float:
    from engine.music.notes import STEPS_PER_BAR, STEPS_PER_QUARTER

    return 60.0 / patch.song.tempo * STEPS_PER_BAR / STEPS_PER_QUARTER


# ---- (a) offline soak --------------------------------------------------------------------

@dataclasses.dataclass
class Sample:
    bar: int  # bars done
    song_minutes: float
    rss_mb: float
    objects: int
    wall_s: float


@dataclasses.dataclass
class OfflineResult:
    samples: list[Sample]
    bars: int
    lines: int
    setup_s: float
    wall_s: float
    caches: dict[str, int]


def _caches(composer: Any, writer: Any) -> dict[str, int]:
    """Sizes of the per-song caches the engine keeps (read from outside, for the report)."""
    out = {"composer key shifts (one per section pass)": len(composer._shifts)}
    if writer is not None:
        source = writer.source
        markov = getattr(source, "model", None)
        if markov is not None and hasattr(markov, "_tables"):
            out["Markov transition tables"] = len(markov._tables)
        out["pronouncer words"] = len(getattr(writer.pronouncer, "_phones", {}))
        out["chorus lines kept"] = sum(len(v) for v in writer.chorus_text.values())
    return out


def offline_soak(patch, bars: int, sample_bars: int, *, log_dir: Path | None,
                 model_dir: str | None = None, progress: bool = True) -> OfflineResult:
    """Play ``bars`` bars of ``patch`` through Conductor, Composer and LyricsTrack."""
    from engine.music.musicvae_runner import load_model
    from engine.song.conductor import PARTS, Composer, Conductor
    from engine.song.event_log import EventLog
    from engine.song.lyrics_track import LyricsTrack, build_writer, lyric_record

    started = time.perf_counter()
    runner = load_model(patch.song.model, model_dir=model_dir)
    conductor = Conductor(patch, runner.z_size)
    composer = Composer(runner, patch)
    writer = build_writer(patch.lyrics, conductor.seed, model_dir)
    track = LyricsTrack(writer, patch.lyrics) if writer is not None else None
    log = EventLog(log_dir / "song.jsonl") if log_dir is not None else None
    if log is not None:
        log.header(patch=patch.to_dict(), seed=conductor.seed, model=runner.name, bars=bars)
    gc.collect()
    gc.freeze()  # as the show does before it plays
    setup_s = time.perf_counter() - started
    seconds = bar_seconds(patch)
    samples: list[Sample] = []
    lines = 0
    loop_start = time.perf_counter()

    def sample(done: int) -> None:
        gc.collect()
        samples.append(Sample(done, done * seconds / 60, rss_bytes() / MB,
                              len(gc.get_objects()), time.perf_counter() - loop_start))

    sample(0)
    try:
        for index in range(bars):
            plan = conductor.plan()
            arranged = composer.realize(plan)
            if arranged.index != index or set(arranged.parts) != set(PARTS):
                raise RuntimeError(f"bar {index}: the composer gave bar {arranged.index} with "
                                   f"parts {sorted(arranged.parts)}")
            if log is not None:
                log.write({"type": "bar"} | plan.to_dict() | arranged.to_dict())
            written = track.feed(plan, arranged) if track is not None else None
            if written is not None:
                lines += 1
                if log is not None:
                    log.write(lyric_record(*written))
            done = index + 1
            if done % sample_bars == 0 or done == bars:
                sample(done)
                if progress and sys.stderr.isatty():
                    rate = done / max(time.perf_counter() - loop_start, 1e-9)
                    sys.stderr.write(f"\r  {done}/{bars} bars, {rate:.1f} bars/s, RSS "
                                     f"{samples[-1].rss_mb:.1f} MB ")
                    sys.stderr.flush()
    finally:
        if log is not None:
            log.close()
        if progress and sys.stderr.isatty():
            sys.stderr.write("\n")
        gc.unfreeze()
    return OfflineResult(samples, bars, lines, setup_s, time.perf_counter() - loop_start,
                         _caches(composer, writer))


def report_offline(result: OfflineResult, patch, lyrics: str) -> bool:
    samples = result.samples
    rows = [[str(s.bar), f"{s.song_minutes:.1f}", f"{s.rss_mb:.1f}", str(s.objects),
             f"{s.wall_s:.0f}"] for s in samples]
    step = max(1, len(rows) // 40)  # at most ~40 lines of curve; the last always shown
    shown = rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])
    print(f"\nmemory curve ({len(samples)} samples, {_shown(step)}; RSS after gc.collect()):")
    print(_table(["bar", "song min", "RSS MB", "objects", "wall s"], shown))
    played = samples[1:] or samples  # the samples after bars were played
    warm, last, pct = growth([s.rss_mb for s in played])
    after = played[max(0, math.ceil(len(played) * WARMUP_FRACTION) - 1):]
    mb_per_hour = slope([s.song_minutes / 60 for s in after], [s.rss_mb for s in after])
    owarm, olast, _ = growth([float(s.objects) for s in played])
    objects_per_hour = slope([s.song_minutes / 60 for s in after], [s.objects for s in after])
    ok = pct < GROWTH_GOAL_PCT
    hours = result.bars * bar_seconds(patch) / 3600
    print(f"\nsong: {result.bars} bars = {hours:.2f} h at {patch.song.tempo:g} BPM, lyrics "
          f"{lyrics} ({result.lines} lines written)")
    print(f"set-up (model, lyricist): {result.setup_s:.1f} s; RSS before the first bar "
          f"{samples[0].rss_mb:.1f} MB")
    print(f"RSS after warm-up (first {WARMUP_FRACTION:.0%} of the bars): {warm:.1f} MB -> end "
          f"{last:.1f} MB: growth {pct:+.2f}% (goal < {GROWTH_GOAL_PCT:g}%: "
          f"{'PASS' if ok else 'MISS'}); slope after warm-up {mb_per_hour:+.2f} MB per hour "
          f"of song")
    print(f"objects the GC tracks (made since set-up and alive): {owarm:.0f} after warm-up -> "
          f"{olast:.0f} at the end; slope after warm-up {objects_per_hour:+.0f} per hour of song")
    print("engine caches at the end: "
          + "; ".join(f"{name} {size}" for name, size in result.caches.items()))
    print(f"speed: {result.bars / result.wall_s:.2f} bars/s "
          f"({result.bars * bar_seconds(patch) / result.wall_s:.1f}x real time), "
          f"{result.wall_s:.0f} s for the bars")
    return ok


# ---- (b) live soak -----------------------------------------------------------------------

_PROBE = "import jack; jack.Client('encore-soak-probe', no_start_server=True).close()"


def _jack_answers() -> bool:
    try:
        return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True,
                              timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def jack_server(log_dir: Path) -> Iterator[str]:
    """A JACK server for the show: the running one ("reused"), else ``jackd -d dummy -r 48000
    -p 256`` started detached and stopped by PID at the end ("started")."""
    if _jack_answers():
        yield "reused"
        return
    jackd = shutil.which("jackd")
    if jackd is None:
        raise SystemExit("bench_soak: jackd is not installed (apt-get install jackd2)")
    log_path = log_dir / "jackd.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([jackd, *JACKD_ARGS], stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not _jack_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench_soak: jackd did not start:\n"
                                 + log_path.read_text(errors="replace"))
            time.sleep(0.2)
        yield "started"
    finally:
        _stop(process, signal.SIGTERM, 8)


def _stop(process: subprocess.Popen, first: int, timeout: float) -> None:
    """``first`` to the process, then SIGKILL when it has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    os.kill(process.pid, first)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_patch(data: dict[str, Any], path: Path) -> Path:
    """``Patch.to_dict()`` as a TOML file (sections of scalars, lists and inline tables)."""
    out = []
    for section, table in data.items():
        nested = {k: v for k, v in table.items() if isinstance(v, dict) and k != "latency_ms"
                  and all(isinstance(x, dict) for x in v.values())}
        out.append(f"[{section}]")
        out += [f"{k} = {_toml(v)}" for k, v in table.items() if k not in nested]
        for key, sub in nested.items():
            for name, values in sub.items():
                out.append(f"[{section}.{key}.{name}]")
                out += [f"{k} = {_toml(v)}" for k, v in values.items()]
        out.append("")
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def live_patch(args: argparse.Namespace, path: Path) -> Path:
    """The soak patch for the show: the patch's singer (``--singer`` to change it), the
    drums (``--midi-part``) on a virtual MIDI port, everything else on the built-in synth."""
    from engine.patch import load_patch

    data = soak_patch(args.patch, args.lyrics).to_dict()
    if args.singer:
        data["voice"]["singer"] = args.singer
    if args.midi_part != "none":
        data["parts"][args.midi_part]["port"] = f"soak-{args.midi_part}"
        data["midi"]["backend"] = "virtual"
    write_patch(data, path)
    load_patch(path, validate_files=True)  # refuse here, not in the child
    return path


def _parse_health(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("stopped: "):
            text = re.sub(r"\b(nan|inf)\b", "None", line[len("stopped: "):])
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return None
    return None


def live_soak(args: argparse.Namespace) -> bool:
    minutes = args.live
    with tempfile.TemporaryDirectory(prefix="bench_soak_") as name:
        tmp = Path(name)
        patch_path = live_patch(args, tmp / "soak.toml")
        with jack_server(tmp) as how:
            what = f"jackd {' '.join(JACKD_ARGS)}" if how == "started" else "the running one"
            print(f"JACK: {how} a server ({what})")
            command = [sys.executable, "-m", "engine.cli", "live", "--patch", str(patch_path),
                       "--no-osc"]
            command += ["--no-record"] if args.no_record else ["--record", str(tmp / "set")]
            if args.model_dir:
                command += ["--model-dir", args.model_dir]
            out_path, err_path = tmp / "live.out", tmp / "live.err"
            print(f"running for {minutes:g} min: {' '.join(command)}")
            with out_path.open("wb") as out, err_path.open("wb") as err:
                show = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=err, start_new_session=True,
                                        env=os.environ | {"PYTHONUNBUFFERED": "1"})
            rows: list[tuple[float, float, float, int]] = []
            started = time.monotonic()
            try:
                while time.monotonic() - started < minutes * 60:
                    time.sleep(min(LIVE_SAMPLE_S, max(0.0, minutes * 60 - (time.monotonic()
                                                                          - started))))
                    if show.poll() is not None:
                        break
                    try:
                        main = rss_bytes(show.pid) / MB
                        kids = _children(show.pid)
                        workers = sum(_safe_rss(k) for k in kids) / MB
                    except OSError:
                        break
                    rows.append(((time.monotonic() - started) / 60, main, workers, len(kids)))
            finally:
                ran_s = time.monotonic() - started
                exited_early = show.poll() is not None
                _stop(show, signal.SIGINT, STOP_TIMEOUT_S)
            stdout = out_path.read_text(errors="replace")
            stderr = err_path.read_text(errors="replace")
            recorded = sum(f.stat().st_size for f in (tmp / "set").glob("*")) \
                if (tmp / "set").is_dir() else 0
    return report_live(rows, ran_s, exited_early, show.returncode, stdout, stderr, recorded)


def _safe_rss(pid: int) -> int:
    try:
        return rss_bytes(pid)
    except OSError:
        return 0


def report_live(rows: list[tuple[float, float, float, int]], ran_s: float, exited_early: bool,
                returncode: int | None, stdout: str, stderr: str, recorded: int) -> bool:
    if not rows:
        print("no memory samples: the show ended at once")
    else:
        step = max(1, len(rows) // 40)
        shown = rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])
        print(f"\nmemory curve ({len(rows)} samples, every {LIVE_SAMPLE_S:g} s; "
              f"{_shown(step)}):")
        print(_table(["min", "show MB", "workers MB", "workers", "total MB"],
                     [[f"{t:.1f}", f"{m:.1f}", f"{w:.1f}", str(n), f"{m + w:.1f}"]
                      for t, m, w, n in shown]))
        for label, values in (("show process", [r[1] for r in rows]),
                              ("workers", [r[2] for r in rows]),
                              ("total", [r[1] + r[2] for r in rows])):
            warm, last, pct = growth(values)
            print(f"{label}: after warm-up {warm:.1f} MB -> end {last:.1f} MB: {pct:+.2f}%")
    how = "the show exited by itself" if exited_early else "then SIGINT"
    print(f"\nran {ran_s / 60:.1f} min, {how}; exit status {returncode}; recording "
          f"{recorded / MB:.0f} MB")
    health = _parse_health(stdout)
    if health is None:
        print("no `stopped: {...}` summary from the show; its output ended with:")
        print("\n".join((stdout + stderr).splitlines()[-30:]))
        return False
    audio, midi, voice = health.get("audio", {}), health.get("midi", {}), health.get("voice", {})
    generation = health.get("generation", {})
    print(f"bars played {health.get('bars_played')}, lyric lines {health.get('lyric_lines')}")
    print(f"audio: underruns {audio.get('underruns')}, callback overruns "
          f"{audio.get('callback_overruns')}, callback p99 {_num(audio.get('callback_us_p99'))} "
          f"us, max {_num(audio.get('callback_us_max'))} us, events late "
          f"{audio.get('events_late')}")
    if midi:
        print(f"MIDI: sent {midi.get('sent')}, late {midi.get('late')}, dropped "
              f"{midi.get('dropped')}; lateness {_lateness(midi)}")
    else:
        print("MIDI: nothing sent (no part on a MIDI port)")
    worker = ", ".join(f"{k} {generation.get(k)}" for k in
                       ("realized", "fallbacks", "errors", "timeouts", "restarts"))
    print(f"generation: fallback bars {health.get('bars_fallback')}, silent bars "
          f"{health.get('bars_silent')}; worker: {worker}"
          + (f"; last error {generation['last_error']!r}" if generation.get("last_error")
             else ""))
    singer = voice.get("singer") if isinstance(voice.get("singer"), dict) else {}
    print(f"voice ({singer.get('singer', 'none')}): sung {voice.get('sung')}, missed "
          f"{voice.get('missed')}, failed {voice.get('failed')}; render margin min "
          f"{voice.get('margin_ms_min')} ms, p10 {voice.get('margin_ms_p10')}, median "
          f"{voice.get('margin_ms_median')}, p90 {voice.get('margin_ms_p90')}, max "
          f"{voice.get('margin_ms_max')} ms; "
          f"real-time factor median {voice.get('rtf_median')}, max {voice.get('rtf_max')}"
          + (f"; last error {voice['last_error']!r}" if voice.get("last_error") else ""))
    print(f"bars pushed late: worst {_num(health.get('push_late_ms_max'))} ms")
    return True


def _num(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _shown(step: int) -> str:
    return "all shown" if step == 1 else f"every {step}th shown"


def _lateness(midi: dict[str, Any]) -> str:
    keys = [k for k in midi if k not in ("sent", "late", "dropped")]
    return ", ".join(f"{k} {_num(midi[k])}" for k in keys) or "-"


# ---- main -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", default="default", help="patch name or file")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--hours", type=float, default=None,
                        help=f"song time of the offline soak (default {DEFAULT_HOURS:g})")
    length.add_argument("--minutes", type=float, default=None, help="song time, in minutes")
    parser.add_argument("--lyrics", choices=("markov", "gpt2", "off"), default="markov")
    parser.add_argument("--sample-bars", type=int, default=0,
                        help="bars between memory samples (default: 100 samples in all)")
    parser.add_argument("--no-log", action="store_true", help="write no event log")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--live", type=float, default=None, metavar="MINUTES",
                        help="instead: run `encore live` this many minutes on JACK")
    parser.add_argument("--midi-part", default="drums",
                        choices=("drums", "bass", "melody", "chords", "none"),
                        help="live: the part sent to a virtual MIDI port (default drums)")
    parser.add_argument("--no-record", action="store_true", help="live: record no set")
    parser.add_argument("--singer", default="",
                        help="live: the [voice] singer (default: the patch's, e.g. auto = the "
                             "shipped voice; fallback, off, or a voicebank name)")
    args = parser.parse_args(argv)

    print(f"Encore soak benchmark, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(_machine())
    if args.live is not None:
        if args.live <= 0:
            parser.error("--live needs a positive number of minutes")
        return 0 if live_soak(args) else 1

    patch = soak_patch(args.patch, args.lyrics)
    hours = args.minutes / 60 if args.minutes is not None else (args.hours or DEFAULT_HOURS)
    bars = max(1, math.ceil(hours * 3600 / bar_seconds(patch)))
    sample_bars = args.sample_bars or max(1, bars // 100)
    print(f"offline soak: {patch.song.title!r}, {bars} bars ({hours:.2f} h of song at "
          f"{patch.song.tempo:g} BPM), model {patch.song.model}, lyrics {args.lyrics}, "
          f"memory every {sample_bars} bars")
    with tempfile.TemporaryDirectory(prefix="bench_soak_") as name:
        result = offline_soak(patch, bars, sample_bars,
                              log_dir=None if args.no_log else Path(name),
                              model_dir=args.model_dir)
        log_size = sum(f.stat().st_size for f in Path(name).glob("*"))
    if not args.no_log:
        print(f"event log: {log_size / MB:.1f} MB")
    return 0 if report_offline(result, patch, args.lyrics) else 1


if __name__ == "__main__":
    sys.exit(main())
