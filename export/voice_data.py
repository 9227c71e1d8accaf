"""Teacher data for Encore's own voice: sung phrases from the fallback singer, on the grid
the DiffSinger runner feeds.

    python -m export.train_voice data --phrases 2000 --workers 2     # -> export/cache/voice/

Each example is one random phrase plan (CMUdict words on a random melody) sung by
:class:`~engine.voice.fallback_singer.FallbackSinger` (its teacher, the first installed of
Flite's slt voice, Festival's HTS voice and espeak-ng, re-pitched by WORLD: see
:mod:`engine.voice.teachers`) at
44.1 kHz, and, on the frame grid of :func:`engine.voice.timing.time_phrase` (hop 512), what
the runner will feed a voicebank plus the teacher's answer:

- ``tokens`` / ``durations``: the phrase's tokens (SP + phonemes + SP, ids from
  :data:`PHONEMES`) and frames per token, exactly as the runner computes them;
- ``f0``: the runner's note curve (Hz per frame; what the acoustic model and the vocoder
  get at inference);
- ``f0_sung``: the f0 the teacher actually sang (its WORLD synthesis f0, recorded while it
  renders, resampled to the frames; where the teacher was unvoiced, ``f0``). It differs
  from ``f0`` in its vibrato and glides (the fallback draws its own); the models train on it
  so that the mel's harmonics and the vocoder's excitation agree;
- ``mel``: the 128-bin natural-log Slaney mel of the teacher audio (:func:`log_mel`),
  placed on the grid by song time (the teacher's first sample plays at its
  ``start_seconds``, frame 0 at ``timing.start_seconds``);
- ``audio``: that same audio on the grid: ``n_frames * 512`` samples (int16).

Both the teacher and ``time_phrase`` put each syllable's vowel on its note's start and the
consonants before it (OpenUtau's convention); their consonant lengths differ (the
teacher's own vs 60 ms each). :func:`alignment_lag` measures how well the two line up: the lag (in
frames) that best matches the teacher's energy envelope to the vowel frames of the timing.

Licence of the data: the audio is synthesized here by the teacher: Flite's slt voice
(BSD-style licence; built from the CMU ARCTIC recordings, released by CMU for any use),
Festival (X11-style licence) with the HTS voice cmu_us_slt_arctic_hts (BSD-3-Clause and
CMU's free licence), or
espeak-ng (GPL-3.0-or-later software; its synthesized output is not a covered work of the
program, so the licence does not extend to it); re-pitched by WORLD (pyworld,
modified-BSD/MIT-style). The
words come from CMUdict (BSD-style licence). No recordings of people are involved.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.lyrics.syllabify import word_syllables
from engine.lyrics.syllables import Pronouncer
from engine.voice import fallback_singer as fb
from engine.voice.timing import PhraseTiming, time_phrase

SAMPLE_RATE = 44100
HOP = 512
N_FFT = 2048
WIN = 2048
N_MELS = 128
FMIN = 40.0
FMAX = 16000.0
VOWELS = ("aa ae ah ao aw ay eh er ey ih iy ow oy uh uw").split()
CONSONANTS = ("b ch d dh f g hh jh k l m n ng p r s sh t th v w y z zh").split()
PHONEMES: tuple[str, ...] = ("<PAD>", "SP", "AP", *VOWELS, *CONSONANTS)
"""The voice's phoneme set: id = index (0 is padding, never fed)."""
PHONEME_IDS = {p: i for i, p in enumerate(PHONEMES)}
CACHE = Path("export/cache/voice")

COMMON_WORDS = (
    "hold the light we run into night and never look back my heart is on fire tonight we are "
    "golden dancing under silver rain remember every little thing you said to me carry me "
    "over the river again forever yesterday beautiful together open window shadow morning "
    "city lonely feeling believe desire broken highway love you baby time heart world "
    "dream fly away home rise fall sky blue sun shine hand hold stay go know feel see young "
    "wild free moon star ocean fade burn cold touch breathe voice song sing music dark "
    "bright street road change alone with you all through the long summer days oh yeah"
).split()


# ---- mel ----------------------------------------------------------------------------------

def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz)
                    / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)),
                    f_sp * mel)


def mel_basis(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
              fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] Slaney-normalized triangular filters (librosa's
    ``filters.mel`` with its defaults, htk=False, norm="slaney")."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(pts)
    ramps = pts[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (pts[2:] - pts[:-2]))[:, None]
    return weights.astype(np.float32)


_BASIS: np.ndarray | None = None


def log_mel(audio: np.ndarray) -> np.ndarray:
    """float32 [len(audio) // 512, 128]: DiffSinger's mel of ``audio`` (44.1 kHz, any length
    that is a multiple of 512 gives exactly len/512 frames).

    As openvpi's DiffSinger computes it: reflect-pad (win - hop) / 2 = 768 samples each
    side, periodic Hann window of 2048, hop 512, no centring, magnitude (not power),
    Slaney mel 40-16000 Hz, natural log of max(mel, 1e-5). Frame f covers samples
    [f*512 - 768, f*512 + 1280): it is centred on the middle of its own hop.
    """
    global _BASIS
    if _BASIS is None:
        _BASIS = mel_basis()
    x = np.asarray(audio, dtype=np.float32)
    pad = (WIN - HOP) // 2
    if len(x) <= pad:
        x = np.pad(x, (0, pad + 1 - len(x)))
    x = np.pad(x, (pad, pad), mode="reflect")
    n = (len(x) - N_FFT) // HOP + 1
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:n]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)).astype(np.float32)
    spec = np.fft.rfft(frames * window, axis=-1)
    mag = np.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9).astype(np.float32)
    return np.log(np.maximum(mag @ _BASIS.T, 1e-5)).astype(np.float32)


# ---- random phrases -----------------------------------------------------------------------

class WordPool:
    """Words to sing: common lyric words half the time, any plain CMUdict word otherwise."""

    def __init__(self, pronouncer: Pronouncer | None = None) -> None:
        self.pron = pronouncer or Pronouncer()
        lex = self.pron.lexicon
        self.common = [w for w in COMMON_WORDS if w in lex]
        self.all = sorted(w for w in lex if w.isalpha() and 2 <= len(w) <= 10)

    def pick(self, rng: random.Random) -> str:
        return rng.choice(self.common if rng.random() < 0.5 else self.all)


def random_plan(rng: random.Random, words: WordPool, bar: int = 2) -> tuple[PhrasePlan, float]:
    """A phrase of 3-10 syllables on a random melody (MIDI 55-79, notes of 0.25-2 beats,
    15 % melismas, 15 % rests) and a tempo of 80-160 bpm."""
    target = rng.randint(3, 10)
    sylls: list[tuple[str, str, tuple[str, ...], bool, bool]] = []
    while len(sylls) < target:
        word = words.pick(rng)
        parts = word_syllables(word, words.pron)
        if len(sylls) + len(parts) > 10 or not all(p.phonemes for p in parts):
            continue
        if not all(ph in PHONEME_IDS for p in parts for ph in p.phonemes):
            continue
        for p in parts:
            sylls.append((p.text, word, p.phonemes, p.stress == "1", p.word_start))
    beat = bar * 4.0
    pitch = rng.randint(58, 76)
    out = []
    for text, word, ph, stressed, first in sylls:
        notes = []
        for _ in range(2 if rng.random() < 0.15 else 1):
            dur = rng.choice((0.25, 0.5, 0.5, 0.75, 1.0, 1.0, 1.5, 2.0))
            pitch = min(79, max(55, pitch + rng.choice((-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5))))
            notes.append(SungNote(pitch, beat, dur))
            beat += dur
        if rng.random() < 0.15:
            beat += rng.choice((0.5, 1.0))
        out.append(SungSyllable(text, word, ph, tuple(notes), stressed, first))
    text = " ".join(dict.fromkeys(s[1] for s in sylls))
    tempo = float(rng.randint(80, 160))
    return PhrasePlan(bar=bar, section="verse", text=text, syllables=tuple(out)), tempo


def timing_of(plan: PhrasePlan, tempo: float) -> PhraseTiming:
    """The runner's layout of ``plan`` on this voice's phoneme set and grid."""
    return time_phrase(plan, tempo, phoneme_ids=PHONEME_IDS, vowels=VOWELS,
                       sample_rate=SAMPLE_RATE, hop_size=HOP)


# ---- the teacher --------------------------------------------------------------------------

class _RecordingWorld:
    """pyworld, but remembering the f0 of its last ``synthesize`` call (the f0 the fallback
    singer actually sings; it computes that internally and returns only audio)."""

    def __init__(self, real: object) -> None:
        self._real = real
        self.last_f0: np.ndarray | None = None
        self.last_period_ms: float = fb.FRAME_PERIOD_MS

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def synthesize(self, f0: np.ndarray, sp: np.ndarray, ap: np.ndarray, fs: int,
                   frame_period: float = 5.0) -> np.ndarray:
        self.last_f0 = np.array(f0, dtype=np.float64)
        self.last_period_ms = frame_period
        return self._real.synthesize(f0, sp, ap, fs, frame_period=frame_period)


class Teacher:
    """The fallback singer, with its sung f0 recorded."""

    def __init__(self) -> None:
        self.world = _RecordingWorld(fb._pw())
        fb._pyworld = self.world  # the fallback singer asks fb._pw() for pyworld each render
        self.singer = fb.FallbackSinger(sample_rate=SAMPLE_RATE)
        self.name = self.singer.teacher.name

    def sing(self, plan: PhrasePlan, tempo: float) -> tuple[np.ndarray, float, np.ndarray,
                                                             float]:
        """(audio, its song start seconds, the sung f0 at WORLD's frames (0: unvoiced),
        WORLD's frame period in seconds)."""
        audio = self.singer.render(plan, tempo)
        f0 = self.world.last_f0
        if f0 is None:
            raise RuntimeError("the fallback singer did not call pyworld.synthesize; the "
                               "teacher recorder needs updating to its new code path")
        return audio.samples, audio.start_seconds, f0, self.world.last_period_ms / 1000.0


@dataclass
class Example:
    """One phrase on the grid (see the module notes)."""

    tokens: np.ndarray      # int64 [T]
    durations: np.ndarray   # int64 [T]
    f0: np.ndarray          # float32 [F]
    f0_sung: np.ndarray     # float32 [F]
    mel: np.ndarray         # float32 [F, 128]
    audio: np.ndarray       # float32 [F * 512]
    kinds: tuple[str, ...]
    plan: PhrasePlan
    tempo: float
    lag: int

    @property
    def n_frames(self) -> int:
        return int(self.durations.sum())


def place_on_grid(samples: np.ndarray, start_seconds: float, timing: PhraseTiming
                  ) -> np.ndarray:
    """``samples`` (song time ``start_seconds``) cut / padded onto the timing's
    ``n_frames * hop`` samples starting at ``timing.start_seconds``."""
    n = timing.n_frames * timing.hop_size
    offset = int(round((start_seconds - timing.start_seconds) * timing.sample_rate))
    out = np.zeros(n, dtype=np.float32)
    src0, dst0 = max(0, -offset), max(0, offset)
    length = min(len(samples) - src0, n - dst0)
    if length > 0:
        out[dst0:dst0 + length] = samples[src0:src0 + length]
    return out


def sung_f0_on_grid(f0_world: np.ndarray, period: float, start_seconds: float,
                    timing: PhraseTiming) -> np.ndarray:
    """The teacher's f0 (WORLD frames from ``start_seconds``) at the timing's frame centres
    (middle of each hop), linearly interpolated in log; unvoiced or outside: ``timing.f0``."""
    centres = timing.start_seconds + (np.arange(timing.n_frames) + 0.5) / timing.frame_rate
    pos = (centres - start_seconds) / period
    i0 = np.clip(np.floor(pos).astype(int), 0, len(f0_world) - 1)
    i1 = np.clip(i0 + 1, 0, len(f0_world) - 1)
    w = np.clip(pos - np.floor(pos), 0, 1)
    a, b = f0_world[i0], f0_world[i1]
    voiced = (a > 0) & (b > 0) & (pos >= 0) & (pos <= len(f0_world) - 1)
    safe_a, safe_b = np.where(voiced, a, 1.0), np.where(voiced, b, 1.0)
    sung = np.exp(np.log(safe_a) * (1 - w) + np.log(safe_b) * w)
    return np.where(voiced, sung, timing.f0).astype(np.float32)


def alignment_lag(mel: np.ndarray, timing: PhraseTiming, max_lag: int = 10) -> int:
    """Frames by which the teacher's energy envelope lags the timing's vowels (positive:
    the teacher is late): the lag maximizing the correlation of the z-scored frame energy
    with the z-scored indicator of vowel frames."""
    energy = np.log(np.exp(mel).sum(axis=1) + 1e-6)
    vowel = np.zeros(timing.n_frames)
    bounds = np.concatenate([[0], np.cumsum(timing.durations)])
    for k, kind in enumerate(timing.kinds):
        if kind == "nucleus":
            vowel[bounds[k]:bounds[k + 1]] = 1.0
    e = (energy - energy.mean()) / (energy.std() + 1e-9)
    v = (vowel - vowel.mean()) / (vowel.std() + 1e-9)
    best, best_lag = -np.inf, 0
    n = len(e)
    for lag in range(-max_lag, max_lag + 1):
        a = e[max(0, lag):n + min(0, lag)]
        b = v[max(0, -lag):n - max(0, lag)]
        c = float(np.mean(a * b))
        if c > best:
            best, best_lag = c, lag
    return best_lag


def make_example(teacher: Teacher, plan: PhrasePlan, tempo: float) -> Example:
    """Sing ``plan`` with the teacher and lay everything on the runner's grid."""
    timing = timing_of(plan, tempo)
    samples, start, f0_world, period = teacher.sing(plan, tempo)
    audio = place_on_grid(samples, start, timing)
    mel = log_mel(audio)
    assert mel.shape[0] == timing.n_frames
    return Example(
        tokens=timing.token_ids.astype(np.int64), durations=timing.durations.astype(np.int64),
        f0=timing.f0.astype(np.float32),
        f0_sung=sung_f0_on_grid(f0_world, period, start, timing), mel=mel, audio=audio,
        kinds=timing.kinds, plan=plan, tempo=tempo, lag=alignment_lag(mel, timing))


# ---- shards -------------------------------------------------------------------------------

def write_shard(examples: Sequence[Example], path: Path) -> None:
    """Many examples in one .npz: concatenated arrays plus offsets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        tokens=np.concatenate([e.tokens for e in examples]).astype(np.int16),
        durations=np.concatenate([e.durations for e in examples]).astype(np.int32),
        n_tokens=np.array([len(e.tokens) for e in examples], dtype=np.int32),
        n_frames=np.array([e.n_frames for e in examples], dtype=np.int32),
        f0=np.concatenate([e.f0 for e in examples]),
        f0_sung=np.concatenate([e.f0_sung for e in examples]),
        mel=np.concatenate([e.mel for e in examples]).astype(np.float16),
        audio=np.round(np.concatenate([e.audio for e in examples]) * 32767).clip(
            -32768, 32767).astype(np.int16),
        tempo=np.array([e.tempo for e in examples], dtype=np.float32),
        lag=np.array([e.lag for e in examples], dtype=np.int32),
        plans=np.array([json.dumps(e.plan.to_dict()) for e in examples]),
    )


@dataclass
class Item:
    """One loaded example (arrays as stored; mel float32, audio float32)."""

    tokens: np.ndarray
    durations: np.ndarray
    f0: np.ndarray
    f0_sung: np.ndarray
    mel: np.ndarray
    audio: np.ndarray
    plan: PhrasePlan
    tempo: float
    lag: int


def read_shard(path: Path) -> Iterator[Item]:
    z = np.load(path)
    tok_end = np.cumsum(z["n_tokens"])
    frm_end = np.cumsum(z["n_frames"])
    mel, audio = z["mel"], z["audio"]
    for i in range(len(tok_end)):
        t0, t1 = tok_end[i] - z["n_tokens"][i], tok_end[i]
        f0_, f1 = frm_end[i] - z["n_frames"][i], frm_end[i]
        yield Item(
            tokens=z["tokens"][t0:t1].astype(np.int64),
            durations=z["durations"][t0:t1].astype(np.int64),
            f0=z["f0"][f0_:f1], f0_sung=z["f0_sung"][f0_:f1],
            mel=mel[f0_:f1].astype(np.float32),
            audio=audio[f0_ * HOP:f1 * HOP].astype(np.float32) / 32767.0,
            plan=PhrasePlan.from_dict(json.loads(str(z["plans"][i]))),
            tempo=float(z["tempo"][i]), lag=int(z["lag"][i]))


def load_corpus(folder: Path = CACHE) -> list[Item]:
    """Every example in ``folder``'s shards, in a stable order."""
    shards = sorted(folder.glob("shard-*.npz"))
    if not shards:
        raise FileNotFoundError(f"{folder}: no shard-*.npz; generate the teacher data first: "
                                f"python -m export.train_voice data")
    return [item for path in shards for item in read_shard(path)]


def generate(n: int, seed: int, out: Path, *, shard_size: int = 100,
             max_seconds: float | None = None, log: bool = True) -> int:
    """Sing ``n`` random phrases (seeded) into shards ``out/shard-<seed>-<k>.npz``; stop
    early after ``max_seconds``. Returns how many were written."""
    rng = random.Random(seed)
    words = WordPool()
    teacher = Teacher()
    t_start = time.perf_counter()
    batch: list[Example] = []
    written, audio_s, render_s, k = 0, 0.0, 0.0, 0
    for i in range(n):
        plan, tempo = random_plan(rng, words)
        t = time.perf_counter()
        batch.append(make_example(teacher, plan, tempo))
        render_s += time.perf_counter() - t
        audio_s += batch[-1].n_frames * HOP / SAMPLE_RATE
        over = max_seconds is not None and time.perf_counter() - t_start > max_seconds
        if len(batch) >= shard_size or i == n - 1 or over:
            write_shard(batch, out / f"shard-{seed:04d}-{k:03d}.npz")
            written += len(batch)
            k += 1
            batch = []
            if log:
                print(f"[data seed {seed}, teacher {teacher.name}] {written} phrases, "
                      f"{audio_s / 60:.1f} min audio, "
                      f"{render_s / max(audio_s, 1e-9):.3f} s per s of audio", flush=True)
        if over:
            break
    return written
