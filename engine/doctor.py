"""``encore doctor``: check what a gig needs on this machine, and say how to fix what is not.

    encore doctor [--patch P] [--model-dir DIR]

One line per check, as it finishes, ``OK``, ``WARN`` or ``FAIL`` with what was found and,
where something is wrong, the fix::

    OK   patch           patches/default.toml: "Encore", C major, 112 BPM
    FAIL MIDI port       'USB MIDI' (melody): no MIDI output matches ... -> fix: ...

What is checked, in order: the patch loads; the SoundFont; the audio outputs and the
patch's ``[live] audio_device``; the MIDI system (JACK running or not, the ALSA sequencer),
every port the patch's parts name, ``[midi] clock_out`` and ``clock_in``; ONNX Runtime's
providers (CUDA or CPU only); the song model loads and how fast it composes a bar (its
real-time factor: seconds to compose a bar over the bar's length at the patch's tempo);
the lyrics model and the time to write one fitted line; which singer sings, espeak-ng,
and the singer's real-time factor on a short test phrase; whether the OSC port is free at
the patch's host; and the free disk space for recording under ``sets/``.

The timings run here, in this process, on the models the patch names, as the show's
workers run them (one thread each). The machine may be busier or quieter at the gig.
:func:`run_doctor` returns 0 when nothing FAILs, 1 otherwise; ``encore doctor`` exits
with it. A check that crashes is reported as a FAIL, never as a traceback.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import os
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from engine.patch import Patch, PatchError, load_patch

Status = Literal["OK", "WARN", "FAIL"]

SETS_DIR = Path("sets")  # where `encore live` records (relative to where it runs)
RTF_WARN = 0.5           # the song model: over half a bar's time per bar is a thin margin
VOICE_RTF_WARN = 0.25    # the voice worker's target (engine.live.vocal_worker.TARGET_RTF)
LOG_BYTES_PER_BAR = 8_000  # a bar's event-log record (z, notes) is a few kB
DISK_FAIL_HOURS = 0.5
DISK_WARN_HOURS = 3.0
TIMED_BARS = 4           # bars composed (after one warm-up) to time the song model
TIMED_LINES = 2          # lyric lines written (after one warm-up) to time the lyricist


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check: ``detail`` says what was found, ``fix`` what to do
    (empty when there is nothing to do); ``value`` is the figure measured, if any (a
    real-time factor, seconds, hours of recording)."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    value: float | None = None

    def line(self) -> str:
        """The check as one line of the report."""
        text = f"{self.status:<4} {self.name:<16} {self.detail}"
        return f"{text} -> fix: {self.fix}" if self.fix else text


# ---- the patch and its files ----------------------------------------------------------
def check_patch(name: str) -> tuple[Check, Patch]:
    """Load the patch (files are checked separately); on failure the defaults stand in,
    so the checks of the machine still run."""
    try:
        patch = load_patch(name)
    except PatchError as err:
        problems = "; ".join(err.problems)
        return Check("patch", "FAIL", f"{err.source}: {problems}",
                     "correct the keys named (python -m engine.patch FILE checks a patch); "
                     "the checks below use the default patch"), Patch()
    song = patch.song
    return Check("patch", "OK", f'{_patch_path(name)}: "{song.title}", {song.key} {song.mode}, '
                 f"{song.tempo:g} BPM"), patch


def _patch_path(name: str) -> str:
    from engine.patch import patches_dir

    path = Path(name).expanduser()
    if not path.exists() and (patches_dir() / f"{name}.toml").is_file():
        path = patches_dir() / f"{name}.toml"
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


def check_soundfont(patch: Patch) -> Check:
    """The built-in synth's SoundFont exists and is one (a RIFF sfbk file)."""
    path = Path(patch.audio.soundfont).expanduser()
    key = f"[audio] soundfont = {str(path)!r}"
    if not patch.live.internal_synth:
        note = " (the built-in synth is off in [live]; `encore live` still wants it unless " \
               "run with --no-audio)"
    else:
        note = ""
    if not path.is_file():
        return Check("soundfont", "FAIL", f"{key}: no such file{note}",
                     "apt-get install timgm6mb-soundfont, or set [audio] soundfont to a .sf2 "
                     "file you have")
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError as err:
        return Check("soundfont", "FAIL", f"{key}: cannot be read ({err.strerror or err})",
                     "check the file's permissions")
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        return Check("soundfont", "FAIL", f"{key}: not a SoundFont 2 file",
                     "set [audio] soundfont to a .sf2 file (General MIDI)")
    return Check("soundfont", "OK", f"{path} ({path.stat().st_size / 1e6:.1f} MB)")


# ---- audio ------------------------------------------------------------------------------
def check_audio(patch: Patch) -> Check:
    """An output the built-in synth can play through, the patch's ``audio_device`` if set."""
    from engine.live.audio_out import NO_DEVICE_MESSAGE, list_devices

    needed = patch.live.internal_synth
    bad: Status = "FAIL" if needed else "WARN"
    with _quiet_stderr():  # PortAudio's ALSA back end complains about every missing card
        try:
            devices = list_devices()
        except OSError as err:
            return Check("audio output", bad, f"PortAudio: {err}", "apt-get install "
                         "libportaudio2; then start JACK or plug in a sound card")
    outputs = [d for d in devices if d.output_channels >= 2]
    if not outputs:
        return Check("audio output", bad, "no stereo output device"
                     + ("" if needed else " (not needed: [live] internal_synth = false)"),
                     NO_DEVICE_MESSAGE if needed else "")
    names = ", ".join(f"{d.name!r}" for d in outputs)
    wanted = patch.live.audio_device.strip()
    if wanted:
        match = next((d for d in outputs if wanted.lower() in d.name.lower()), None)
        if match is None:
            return Check("audio output", bad, f"[live] audio_device = {wanted!r}: no output "
                         f"matches; there are {names}",
                         "set [live] audio_device to part of one of those names (`encore "
                         'devices` lists them), or "" for the default output')
    else:
        match = next((d for d in outputs if d.default_output), outputs[0])
    which = f"{wanted!r} -> " if wanted else "default: "
    return Check("audio output", "OK", f"{which}{match.name} ({match.hostapi}, "
                 f"{match.default_samplerate:.0f} Hz); {len(outputs)} output(s)"
                 + ("" if needed else " (the built-in synth is off)"))


def check_audio_path(patch: Patch) -> Check:
    """Which callback will make the built-in synth's blocks: the native core (it never
    waits for the interpreter) or the Python fallback, and why."""
    from engine.live import audio_core

    state = audio_core.status()
    unused = "" if patch.live.internal_synth else " (the built-in synth is off in [live])"
    if state.native:
        return Check("audio path", "OK", state.detail + unused)
    if audio_core.requested_path() == "python":
        fix = f"unset {audio_core.ENV_PATH} to use the native core"
    else:
        fix = ("run scripts/setup.sh (it builds the core; needs a C compiler: apt-get "
               "install gcc); a busy Python thread can make the Python callback late")
    return Check("audio path", "WARN", state.detail + unused, fix)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment (C libraries' chatter)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        sys.stderr.flush()
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# ---- MIDI -------------------------------------------------------------------------------
def check_midi(patch: Patch) -> Iterator[Check]:
    """The MIDI system, then every port the patch names (parts, clock out, clock in)."""
    from engine.live.midi_ports import platform_apis

    midi = patch.midi
    outputs: dict[str, list[str]] = {}
    for part, settings in patch.parts.items():
        if settings.port:
            outputs.setdefault(settings.port, []).append(part)
    needs_midi = bool(outputs or midi.clock_out or midi.clock_in)
    apis = platform_apis() if sys.platform.startswith("linux") else []
    if sys.platform.startswith("linux"):
        jack = "JACK running" if "jack" in apis else "JACK not running"
        alsa = "ALSA sequencer present" if "alsa" in apis else "no ALSA sequencer"
        system = f"{jack}, {alsa}; backend {midi.backend!r}"
    else:
        system = f"backend {midi.backend!r}"
    uses = "" if needs_midi else " (no part names a port: everything plays on the built-in synth)"
    if midi.backend in ("memory", "virtual"):
        yield Check("MIDI system", "OK", f"{system}: ports are made, not found{uses}")
        return
    missing = sys.platform.startswith("linux") and (
        not apis if midi.backend == "auto" else
        midi.backend in ("jack", "alsa") and midi.backend not in apis)
    if missing:
        yield Check("MIDI system", "FAIL" if needs_midi else "OK", system + uses,
                    "start a JACK server (`jackd -d alsa`, or `jackd -d dummy -r 48000 -p 256` "
                    "without a sound card) or load snd-seq (modprobe snd-seq)"
                    if needs_midi else "")
    else:
        yield Check("MIDI system", "OK", system + uses)
    if not needs_midi:
        return
    for name, parts in outputs.items():
        yield _find_port("MIDI port", name, f"[parts.{parts[0]}] port", parts, midi.backend)
    if midi.clock_out:
        yield _find_port("MIDI clock out", midi.clock_out, "[midi] clock_out", [],
                         midi.backend)
    if midi.clock_in:
        yield _find_port("MIDI clock in", midi.clock_in, "[midi] clock_in", [], midi.backend,
                         inputs=True)


def _find_port(check: str, name: str, key: str, parts: list[str], backend: str, *,
               inputs: bool = False) -> Check:
    from engine.live.midi_ports import list_outputs, match_port
    from engine.live.sync import list_inputs

    what = f"{name!r}" + (f" ({', '.join(parts)})" if parts else "")
    try:
        names = list_inputs(backend) if inputs else list_outputs(backend)
    except OSError as err:
        return Check(check, "FAIL", f"{what}: {err}", "start the MIDI system named above, or "
                     "choose another [midi] backend")
    kind = "input" if inputs else "output"
    index = match_port(name, names, what=kind) if names else None
    available = ", ".join(repr(n) for n in names) or "none"
    if index is None:
        return Check(check, "FAIL", f"{what}: no MIDI {kind} matches; available: {available}",
                     f"check {key} (any part of the name, any case), plug the device in or "
                     "start JACK and the program that makes the port")
    matches = [n for n in names if name.casefold() in n.casefold()]
    if len(matches) > 1 and names[index].casefold() != name.casefold():
        return Check(check, "WARN", f"{what} -> {names[index]!r}, but it also matches "
                     f"{', '.join(repr(n) for n in matches if n != names[index])}",
                     f"give more of the name in {key} so it picks one")
    return Check(check, "OK", f"{what} -> {names[index]!r}")


# ---- models -----------------------------------------------------------------------------
def check_onnxruntime() -> Check:
    """Which ONNX Runtime providers this machine has (CUDA or CPU only)."""
    import onnxruntime as ort

    providers = ort.get_available_providers()
    shown = ", ".join(p.removesuffix("ExecutionProvider") for p in providers)
    both = [name for name in ("onnxruntime", "onnxruntime-gpu") if _installed(name)]
    if len(both) == 2:
        return Check("onnxruntime", "WARN", f"{ort.__version__}: onnxruntime and "
                     "onnxruntime-gpu are both installed; they share the module, so which "
                     f"one loads is chance ({shown})",
                     "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install "
                     "onnxruntime-gpu (for CUDA) or onnxruntime (CPU only)")
    if "CUDAExecutionProvider" in providers:
        return Check("onnxruntime", "OK", f"{ort.__version__}: {shown} (models run on CUDA)")
    return Check("onnxruntime", "OK", f"{ort.__version__}: {shown} (no CUDA: models run on "
                 "the CPU; the real-time factors below say whether that is enough)")


def _installed(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


_SESSION_HOLDERS = ("source", "runner", "singer", "acoustic", "vocoder", "_decoder")


def providers_of(obj: object, depth: int = 3) -> str:
    """The execution providers the ONNX sessions inside ``obj`` run on, e.g. ``CUDA`` or
    ``acoustic CPU, vocoder CUDA``; "" when it holds none (Markov, the fallback singer)."""
    found: dict[str, str] = {}

    def walk(item: object, name: str, left: int) -> None:
        provider = getattr(item, "provider", None)
        if isinstance(provider, str):
            found[name] = provider.removesuffix("ExecutionProvider")
            return
        if left > 0:
            for attr in _SESSION_HOLDERS:
                inner = getattr(item, attr, None)
                if inner is not None and inner is not item:
                    walk(inner, attr.strip("_"), left - 1)

    walk(obj, "", depth)
    if len(set(found.values())) <= 1:
        return next(iter(found.values()), "")
    return ", ".join(f"{name} {p}" for name, p in found.items())


def _held(obj: object, attr: str, depth: int = 3) -> object:
    """``attr`` of ``obj`` or of the first object held under :data:`_SESSION_HOLDERS` that
    has it (e.g. the GPT-2 lyricist's ``weights``: "float" or "int8"); None if none has."""
    if hasattr(obj, attr) or depth == 0:
        return getattr(obj, attr, None)
    for holder in _SESSION_HOLDERS:
        inner = getattr(obj, holder, None)
        if inner is not None and inner is not obj:
            found = _held(inner, attr, depth - 1)
            if found is not None:
                return found
    return None


def bar_seconds(patch: Patch) -> float:
    """A bar's length at the patch's tempo (4 beats)."""
    return 240.0 / patch.song.tempo


def lookahead_bars(patch: Patch) -> int:
    """Bars generated ahead of the music, as the show sets it (more when the voice sings)."""
    bars = patch.live.lookahead_bars
    if patch.lyrics.source != "off" and patch.voice.singer != "off":
        bars = max(bars, patch.lyrics.phrase_bars + 1)
    return bars


def check_song_model(patch: Patch, model_dir: str | Path | None) -> Check:
    """Load the song model and time composing a bar (decode and arrangement, as the show's
    worker does) against the bar's length at the patch's tempo."""
    from engine.music.musicvae_runner import load_model
    from engine.song.conductor import Composer, Conductor

    name = patch.song.model
    try:
        runner = load_model(name, model_dir=model_dir, threads=1)
        composer = Composer(runner, patch)
    except (OSError, ValueError) as err:
        return Check("song model", "FAIL", f"[song] model = {name!r}: {err}",
                     "put the model in models_onnx/ (or --model-dir), or set [song] model "
                     "to one there (trio_4bar ships)")
    conductor = Conductor(patch, runner.z_size)
    composer.realize(conductor.plan())  # warm-up: the first run allocates
    times = []
    for _ in range(TIMED_BARS):
        plan = conductor.plan()
        began = time.perf_counter()
        composer.realize(plan)
        times.append(time.perf_counter() - began)
    seconds = statistics.median(times)
    rtf = seconds / bar_seconds(patch)
    detail = (f"{runner.name} ({runner.provider.removesuffix('ExecutionProvider')}, z "
              f"{runner.z_size}): a bar in {1000 * seconds:.0f} ms, real-time factor "
              f"{rtf:.3f} at {patch.song.tempo:g} BPM")
    fix = "raise [live] lookahead_bars, lower the tempo, use a smaller model or a GPU"
    if rtf >= 1.0:
        return Check("song model", "FAIL", detail + ": slower than the music", fix, rtf)
    if rtf > RTF_WARN:
        return Check("song model", "WARN", detail + ": little margin", fix, rtf)
    return Check("song model", "OK", detail, value=rtf)


def check_lyrics(patch: Patch, model_dir: str | Path | None) -> Check:
    """Find the lyrics model and time writing one fitted line (candidates, fitting, rhyme)
    on a plain test melody of ``phrase_bars`` bars, a note a beat."""
    from engine.lyrics.phrase import SungNote
    from engine.song.lyrics_track import (
        LINE_BUDGET_SHARE,
        build_writer,
        candidates_within,
        check_lyrics_models,
        line_budget_s,
    )

    settings = patch.lyrics
    if settings.source == "off":
        return Check("lyrics", "OK", "off ([lyrics] source): an instrumental set")
    try:
        check_lyrics_models(settings, model_dir)
        writer = build_writer(settings, patch.song.seed, model_dir)
    except (OSError, ValueError) as err:
        return Check("lyrics", "FAIL", f"[lyrics] source = {settings.source!r}: {err}",
                     'set [lyrics] model to a model you have, or source = "markov" (ships)')
    assert writer is not None
    section = next((s for s in settings.sections if s not in settings.chorus_sections),
                   "verse")
    scale = (60, 62, 64, 65, 67, 69, 67, 65, 64, 62, 60, 62, 64, 65, 67, 65)
    beats = 4 * settings.phrase_bars

    def melody(first_bar: int) -> list[SungNote]:
        start = 4.0 * first_bar
        return [SungNote(scale[k % len(scale)], start + k, 1.0) for k in range(beats)]

    writer.write(0, section, melody(0))  # warm-up
    times = []
    for n in range(1, TIMED_LINES + 1):
        began = time.perf_counter()
        writer.write(n * settings.phrase_bars, section, melody(n * settings.phrase_bars))
        times.append(time.perf_counter() - began)
    seconds = max(times)
    share = seconds / bar_seconds(patch)
    source = settings.model or ("lyrics_gpt2" if settings.source == "gpt2" else "markov")
    provider = providers_of(writer)
    source += f", {provider}" if provider else ""
    weights = _held(writer, "weights")
    source += f", {weights} weights" if isinstance(weights, str) else ""
    detail = (f"{settings.source} ({source}): a fitted line of {beats} notes in "
              f"{1000 * seconds:.0f} ms ({settings.candidates} candidates), {share:.2f} of a "
              "bar")
    budget = lookahead_bars(patch)
    fix = ('lower [lyrics] candidates, use a smaller model or one with int8 weights '
           '(`encore convert gpt2 --int8` writes model_int8.onnx, which the lyricist prefers), '
           'or source = "markov" (fast)')
    if share >= budget:
        return Check("lyrics", "FAIL", detail + f": over the {budget} bar(s) composed ahead",
                     fix, seconds)
    if share > LINE_BUDGET_SHARE:
        live = candidates_within(line_budget_s(patch.song.tempo), seconds, settings.candidates,
                                 settings.candidates)
        return Check("lyrics", "WARN", detail + f": over {LINE_BUDGET_SHARE:g} of a bar, so "
                     f"live the engine writes {live} candidate(s) a line instead of "
                     f"{settings.candidates} (fewer to choose from rather than late lines)",
                     fix, seconds)
    return Check("lyrics", "OK", detail, value=seconds)


# ---- the voice --------------------------------------------------------------------------
def check_voice(patch: Patch, model_dir: str | Path | None) -> Iterator[Check]:
    """Which singer sings, whether espeak-ng is here, and the singer's real-time factor on
    the voice worker's test phrase."""
    from engine.live.vocal_worker import probe_phrase
    from engine.voice.choose import find_voicebanks, load_singer

    choice = patch.voice.singer.strip()
    espeak = ctypes.util.find_library("espeak-ng")
    if patch.lyrics.source == "off" or choice == "off":
        yield Check("singer", "OK", "off: nothing is sung")
        return
    if not patch.live.internal_synth:
        yield Check("singer", "WARN", "not sung live: the voice plays through the built-in "
                    "synth's audio output, and [live] internal_synth = false turns it off",
                    "set [live] internal_synth = true to hear the voice")
        return
    banks = find_voicebanks(model_dir)
    if choice == "auto":
        picks = (f"voicebank {banks[0].name} ({len(banks)} found)" if banks else
                 "the fallback singer (espeak-ng + WORLD): no DiffSinger voicebank found")
        yield Check("singer", "OK", f"auto -> {picks}")
    else:
        yield Check("singer", "OK", f"{choice!r}")
    uses_espeak = choice == "fallback" or (choice == "auto" and not banks)
    if espeak:
        binary = shutil.which("espeak-ng")
        yield Check("espeak-ng", "OK", f"library {espeak}"
                    + (f", program {binary}" if binary else ""))
    else:
        status: Status = "FAIL" if choice == "fallback" else "WARN" if uses_espeak else "OK"
        yield Check("espeak-ng", status, "not installed"
                    + (": the fallback singer cannot sing; with auto the set is instrumental"
                       if uses_espeak else " (not needed by this singer)"),
                    "apt-get install espeak-ng" if uses_espeak else "")
    yield check_teacher(uses_espeak)
    try:
        singer = load_singer(patch.voice, model_dir)
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        yield Check("voice speed", "FAIL", f"[voice] singer = {choice!r}: {err}",
                    'unpack a DiffSinger voicebank into models_onnx/, or singer = "fallback"')
        return
    if singer is None:
        yield Check("voice speed", "WARN", "no voice can sing here: the set is instrumental",
                    "apt-get install espeak-ng (the fallback singer)")
        return
    plan = probe_phrase()
    singer.render(plan, 120.0)  # warm-up
    began = time.perf_counter()
    audio = singer.render(plan, 120.0)
    rtf = (time.perf_counter() - began) / max(audio.duration, 1e-9)
    provider = providers_of(singer)
    on = f" ({provider})" if provider else ""
    with contextlib.suppress(Exception):
        getattr(singer, "close", lambda: None)()
    detail = (f"{singer.name}{on}: {audio.duration:.1f} s test phrase ({plan.text!r}) in "
              f"{rtf * audio.duration:.2f} s, real-time factor {rtf:.2f}")
    fix = 'fewer [voice] steps (0 picks them), or singer = "fallback"'
    verdict: Status = "OK"
    if rtf >= 1.0:
        verdict, detail = "FAIL", detail + ": slower than it sings"
    elif rtf > VOICE_RTF_WARN:
        verdict, detail = "WARN", detail + f": over the voice worker's target {VOICE_RTF_WARN}"
    yield Check("voice speed", verdict, detail, fix if verdict != "OK" else "", rtf)


def check_teacher(needed: bool) -> Check:
    """Which speech synthesizer the fallback singer re-pitches (Flite's slt voice, else
    Festival's HTS voice, else espeak-ng: the first installed), and what is missing for a
    better one."""
    from engine.voice.teachers import TEACHER_ORDER, TeacherNotFoundError, make_teacher

    missing = []
    for name in TEACHER_ORDER[:-1]:
        try:
            make_teacher(name).close()
        except (TeacherNotFoundError, RuntimeError, OSError) as err:
            missing.append(f"{name}: {err}")
            continue
        detail = f"{name}" + (f" ({len(missing)} better one missing)" if missing else
                              " (the most intelligible one)")
        return Check("fallback teacher", "OK", detail)
    has_espeak = ctypes.util.find_library("espeak-ng") is not None
    status: Status = "WARN" if needed else "OK"
    detail = ("espeak-ng (the least intelligible teacher: " if has_espeak else "none (")
    detail += "; ".join(missing) + ")"
    return Check("fallback teacher", status, detail,
                 "apt-get install flite (or festival festvox-us-slt-hts)" if needed else "")


# ---- OSC and disk -----------------------------------------------------------------------
def check_osc(patch: Patch) -> Check:
    """Whether the OSC port can be bound at the patch's host now."""
    host, port = patch.osc.host, patch.osc.port
    where = f"[osc] {host}:{port}"
    if port == 0:
        return Check("OSC port", "OK", f"{where}: a free port is picked at start")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as err:
        return Check("OSC port", "FAIL", f"{where}: host unknown ({err.strerror})",
                     'set [osc] host to "127.0.0.1" (this computer) or "0.0.0.0" (every '
                     "network)")
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.bind(address)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            return Check("OSC port", "FAIL", f"{where}: UDP port {port} is in use (another "
                         "Encore, or another OSC program)",
                         f"stop it (`ss -ulpn 'sport = :{port}'` shows which), or set [osc] "
                         "port to a free one")
        return Check("OSC port", "FAIL", f"{where}: cannot listen ({err.strerror or err})",
                     'set [osc] host to an address of this computer ("0.0.0.0" is every '
                     "network)")
    reach = "this computer only" if host in ("127.0.0.1", "localhost", "::1") else \
        f"tablets allowed: {', '.join(patch.osc.allow) or 'every sender'}"
    return Check("OSC port", "OK", f"{where} is free ({reach})")


def recording_bytes_per_hour(patch: Patch) -> float:
    """What recording a set writes an hour: the event log, and song.wav (16-bit stereo at
    the patch's rate; live, the sound card's) when the built-in synth plays."""
    bars = 3600.0 / bar_seconds(patch)
    wav = patch.audio.sample_rate * 2 * 2 * 3600.0 if patch.live.internal_synth else 0.0
    return bars * LOG_BYTES_PER_BAR + wav


def check_disk(patch: Patch, sets_dir: Path = SETS_DIR) -> Check:
    """Free space (and write access) where ``encore live`` records its sets."""
    existing = sets_dir.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        return Check("disk", "FAIL", f"{sets_dir}: {existing} is not writable",
                     "run from a folder you can write to, or record elsewhere with "
                     "--record DIR")
    free = shutil.disk_usage(existing).free
    hours = free / recording_bytes_per_hour(patch)
    detail = (f"{free / 1e9:.1f} GB free for {sets_dir}/: about {hours:.0f} h of recording "
              f"({recording_bytes_per_hour(patch) / 1e6:.0f} MB an hour)")
    fix = "free some space, or record elsewhere with --record DIR (or --no-record)"
    if hours < DISK_FAIL_HOURS:
        return Check("disk", "FAIL", detail, fix, hours)
    if hours < DISK_WARN_HOURS:
        return Check("disk", "WARN", detail, fix, hours)
    return Check("disk", "OK", detail, value=hours)


# ---- all of it ----------------------------------------------------------------------------
def run_checks(patch_name: str = "default", *, model_dir: str | Path | None = None,
               sets_dir: Path = SETS_DIR) -> Iterator[Check]:
    """Every check, in order, each as it finishes (the timings take a few seconds)."""
    first, patch = check_patch(patch_name)
    yield first
    steps: list[tuple[str, Callable[[], Check | Iterator[Check]]]] = [
        ("soundfont", lambda: check_soundfont(patch)),
        ("audio output", lambda: check_audio(patch)),
        ("audio path", lambda: check_audio_path(patch)),
        ("MIDI system", lambda: check_midi(patch)),
        ("onnxruntime", check_onnxruntime),
        ("song model", lambda: check_song_model(patch, model_dir)),
        ("lyrics", lambda: check_lyrics(patch, model_dir)),
        ("singer", lambda: check_voice(patch, model_dir)),
        ("OSC port", lambda: check_osc(patch)),
        ("disk", lambda: check_disk(patch, sets_dir)),
    ]
    for name, step in steps:
        try:
            result = step()
            if isinstance(result, Check):
                yield result
            else:
                yield from result
        except Exception as err:  # noqa: BLE001 - a crashing check is a finding, not a crash
            yield Check(name, "FAIL", f"the check itself failed: {type(err).__name__}: {err}",
                        "run `encore live` with this patch to see the whole error")


def run_doctor(patch_name: str = "default", *, model_dir: str | Path | None = None,
               sets_dir: Path = SETS_DIR, out: TextIO | None = None) -> int:
    """Print every check, one line each, and a summary; 0 when nothing FAILs, else 1."""
    out = out or sys.stdout
    print(f"encore doctor: patch {patch_name!r} on this machine", file=out, flush=True)
    counts = {"OK": 0, "WARN": 0, "FAIL": 0}
    for check in run_checks(patch_name, model_dir=model_dir, sets_dir=sets_dir):
        counts[check.status] += 1
        print(check.line(), file=out, flush=True)
    print(f"{counts['OK']} OK, {counts['WARN']} WARN, {counts['FAIL']} FAIL"
          + ("" if counts["FAIL"] else ": ready to play"), file=out, flush=True)
    return 1 if counts["FAIL"] else 0
