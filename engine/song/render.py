"""Offline render: the conductor plays a whole set into song.mid, song.wav and song.jsonl.

The same Conductor and Composer as the live engine, as fast as the machine allows (no
clock waits here): bars are timed on an offline tempo map (:meth:`Clock.offline
<engine.clock.Clock.offline>`) and humanized by the live show's own
:mod:`engine.song.stamp`. Audio is rendered by FluidSynth in-process, streamed to the WAV
in 64-frame-aligned chunks as bars are composed, so memory stays flat however long the set.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.audio.fluid_render import FluidRenderer, SynthEvent, soft_clip
from engine.clock import Clock
from engine.lyrics.phrase import PhrasePlan
from engine.music.midi_io import CC_VOLUME, channel_volume, write_midi
from engine.music.musicvae_runner import MusicVAERunner, load_model
from engine.music.notes import STEPS_PER_BAR, Note
from engine.output_files import staged
from engine.patch import Patch
from engine.song.conductor import PARTS, ArrangedBar, Composer, Conductor
from engine.song.event_log import EventLog
from engine.song.lyrics_track import LyricsTrack, build_writer, lyric_events, lyric_record
from engine.song.stamp import played, synth_events
from engine.voice.choose import load_singer, resample
from engine.voice.singer import Singer

CHUNK_FRAMES = 64 * 64  # 4096 frames: a multiple of FluidSynth's 64-frame block
MAX_BLOCK_FRAMES = 64 * CHUNK_FRAMES  # rendered at once at most (about 5 s)
TAIL_SECONDS = 2.0  # let the last notes and the reverb ring out
SAFETY_SECONDS = 0.1  # humanized notes may start this much before their bar line


@dataclass(frozen=True)
class RenderResult:
    midi: Path
    wav: Path | None
    log: Path
    bars: int
    audio_seconds: float
    wall_seconds: float
    provider: str
    singer: str = ""
    vocals: VocalStats | None = None
    lines: int = 0

    @property
    def speed(self) -> float:
        """How many times faster than real time the render ran."""
        return self.audio_seconds / max(self.wall_seconds, 1e-9)


def part_volumes(patch: Patch) -> dict[str, int]:
    """Each part's channel volume (CC 7) from its patch level, as a set starts."""
    return {name: channel_volume(part.level) for name, part in patch.parts.items()}


class _StreamingAudio:
    """FluidSynth rendered chunk by chunk into a WAV file as events become known."""

    def __init__(self, path: Path, patch: Patch) -> None:
        audio = patch.audio
        self.rate = audio.sample_rate
        self.synth = FluidRenderer(audio.soundfont, sample_rate=self.rate, gain=audio.gain,
                                   reverb=audio.reverb)
        for _name, part in patch.parts.items():
            self.synth.program(part.channel - 1, part.program)
            self.synth.send("cc", part.channel - 1, CC_VOLUME, channel_volume(part.level))
        self.file = sf.SoundFile(str(path), "w", samplerate=self.rate, channels=2,
                                 subtype="PCM_16")
        self.pending: list[tuple[int, int, SynthEvent]] = []  # (sample, order, event)
        self.vocals: list[tuple[int, np.ndarray]] = []  # (first sample, mono samples)
        self.position = 0
        self.order = 0
        self.first = True

    def add(self, events: list[SynthEvent]) -> None:
        for event in events:
            self.pending.append((round(event.time * self.rate), self.order, event))
            self.order += 1

    def add_vocal(self, start_seconds: float, samples: np.ndarray, level: float) -> None:
        """Mix a sung phrase (mono, at this rate) in from ``start_seconds`` on."""
        start = round(start_seconds * self.rate)
        if start < self.position:  # the past is written: never happens with the lag kept
            samples = samples[self.position - start:]
            start = self.position
        if len(samples):
            self.vocals.append((start, samples * np.float32(level)))

    def _mix_vocals(self, block: np.ndarray) -> None:
        end = self.position + len(block)
        keep = []
        for start, samples in self.vocals:
            a, b = max(start, self.position), min(start + len(samples), end)
            if b > a:
                block[a - self.position:b - self.position] += samples[a - start:b - start, None]
            if start + len(samples) > end:
                keep.append((start, samples))
        self.vocals = keep

    def render_until(self, seconds: float) -> None:
        target = int(seconds * self.rate) // CHUNK_FRAMES * CHUNK_FRAMES
        while target > self.position:  # in blocks of a few seconds: memory stays flat
            self._render_block(min(target, self.position + MAX_BLOCK_FRAMES))

    def _render_block(self, target: int) -> None:
        self.pending.sort(key=lambda item: item[:2])
        split = 0
        while split < len(self.pending) and self.pending[split][0] < target:
            split += 1
        due, self.pending = self.pending[:split], self.pending[split:]
        events = [SynthEvent(max(0, sample - self.position) / self.rate, e.kind, e.channel,
                             e.data1, e.data2) for sample, _order, e in due]
        block = self.synth.render(events, (target - self.position) / self.rate,
                                  reset=self.first)
        self.first = False
        if self.vocals:
            self._mix_vocals(block)
        self.file.write(soft_clip(block))
        self.position = target

    def close(self, end_seconds: float) -> None:
        end = max([end_seconds + TAIL_SECONDS]
                  + [(s + len(v)) / self.rate for s, v in self.vocals])
        self.render_until(end + CHUNK_FRAMES / self.rate)
        self.file.close()
        self.synth.close()


def _progress(done: int, total: int, started: float) -> None:
    if not sys.stderr.isatty():
        return
    width = 30
    filled = int(width * done / max(total, 1))
    rate = done / max(time.perf_counter() - started, 1e-9)
    sys.stderr.write(f"\rrender [{'#' * filled}{'.' * (width - filled)}] {done}/{total} bars "
                     f"{rate:5.1f} bars/s")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def render_song(patch: Patch, out_dir: str | Path, *, bars: int, seed: int | None = None,
                runner: MusicVAERunner | None = None, audio: bool = True,
                model_dir: str | Path | None = None) -> RenderResult:
    """Render ``bars`` bars of ``patch`` into ``out_dir`` (song.mid, song.wav, song.jsonl).
    The files are moved into ``out_dir`` when the render is complete; when one of them is
    there already, the render is refused before it starts (nothing is overwritten)."""
    if bars < 1:
        raise ValueError(f"bars must be at least 1, got {bars}")
    final = Path(out_dir)
    with staged(final, RENDER_FILES) as stage:
        result = _render(patch, stage, bars=bars, seed=seed, runner=runner, audio=audio,
                         model_dir=model_dir)
    return replace(result, midi=final / "song.mid", wav=final / "song.wav" if audio else None,
                   log=final / "song.jsonl")


RENDER_FILES = ("song.mid", "song.wav", "song.jsonl")


def _render(patch: Patch, out: Path, *, bars: int, seed: int | None,
            runner: MusicVAERunner | None, audio: bool,
            model_dir: str | Path | None) -> RenderResult:
    started = time.perf_counter()
    runner = runner or load_model(patch.song.model, model_dir=model_dir)
    conductor = Conductor(patch, runner.z_size, seed=seed)
    composer = Composer(runner, patch)
    bpm = patch.song.tempo
    tempo = Clock.offline(bpm)
    muted = {name: part.mute for name, part in patch.parts.items()}
    midi_notes: dict[str, list[Note]] = {p: [] for p in PARTS}
    stream = _StreamingAudio(out / "song.wav", patch) if audio else None
    log_path = out / "song.jsonl"
    writer = build_writer(patch.lyrics, conductor.seed, model_dir)
    lyrics = LyricsTrack(writer, patch.lyrics) if writer is not None else None
    phrases = []
    singer = load_singer(patch.voice, model_dir) if audio and lyrics is not None else None
    # A phrase is written when its last bar is composed and sung from before its first:
    # the audio is written that many bars (and a bar of pre-roll) behind the composing.
    lag_bars = patch.lyrics.phrase_bars + 1 if singer is not None else 0
    vocals = VocalStats()
    with EventLog(log_path) as log:
        log.header(patch=patch.to_dict(), seed=conductor.seed, model=runner.name,
                   model_bars=runner.bars, z_size=runner.z_size, bars=bars, bpm=bpm,
                   provider=runner.provider,
                   lyricist=writer.source.name if writer is not None else "off")
        for _ in range(bars):
            plan = conductor.plan()
            arranged = composer.realize(plan)
            log.write({"type": "bar"} | plan.to_dict() | arranged.to_dict())
            written = lyrics.feed(plan, arranged) if lyrics is not None else None
            if written is not None:
                phrases.append(written[0])
                log.write(lyric_record(*written))
                if singer is not None and stream is not None:
                    _sing(singer, written[0], patch, stream, vocals)
            _collect(arranged, patch, midi_notes)
            if stream is not None:
                stream.add(synth_events(arranged, patch, tempo, muted))
                stream.render_until(tempo.seconds_at_bar(plan.index + 1 - lag_bars)
                                    - SAFETY_SECONDS)
            _progress(plan.index + 1, bars, started)
    if stream is not None:
        stream.close(tempo.seconds_at_bar(bars))
    programs = {name: part.program for name, part in patch.parts.items()}
    channels = {name: part.channel - 1 for name, part in patch.parts.items()}  # 0-based
    audible = {p: notes for p, notes in midi_notes.items()
               if not getattr(patch.parts, p).mute}
    write_midi(out / "song.mid", audible, bpm=bpm, programs=programs, channels=channels,
               lyrics=lyric_events(phrases), volumes=part_volumes(patch))
    return RenderResult(out / "song.mid", out / "song.wav" if audio else None, log_path, bars,
                        tempo.seconds_at_bar(bars), time.perf_counter() - started,
                        runner.provider,
                        singer.name if singer is not None else "", vocals, len(phrases))


@dataclass
class VocalStats:
    """How the singing went: phrases sung, failed, and the real-time factor of each."""

    sung: int = 0
    failed: int = 0
    rtf: list[float] = field(default_factory=list)
    last_error: str = ""


def _sing(singer: Singer, phrase: PhrasePlan, patch: Patch, stream: _StreamingAudio,
          stats: VocalStats) -> None:
    """Render one phrase and mix it in; a phrase the singer fails on is left out."""
    began = time.perf_counter()
    try:
        sung = singer.render(phrase.transposed(patch.voice.transpose), patch.song.tempo)
    except Exception as err:  # noqa: BLE001 - one bad phrase must not stop the set
        stats.failed += 1
        stats.last_error = f"bar {phrase.bar}: {type(err).__name__}: {err}"
        return
    stats.sung += 1
    stats.rtf.append((time.perf_counter() - began) / max(sung.duration, 1e-9))
    if not patch.voice.mute:
        stream.add_vocal(sung.start_seconds, resample(sung, stream.rate), patch.voice.level)


def _collect(arranged: ArrangedBar, patch: Patch, into: dict[str, list[Note]]) -> None:
    offset = arranged.index * STEPS_PER_BAR
    for part, notes in played(arranged, patch).items():
        into[part].extend(n.shifted(offset) for n in notes)
