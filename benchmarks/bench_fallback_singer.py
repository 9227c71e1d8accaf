"""Benchmark the fallback singer (espeak-ng + WORLD): speed and pitch accuracy.

Renders ~20 phrases of 4-10 syllables (CMUdict words on a seeded random melody with
melismas and rests, 90-140 bpm) and prints, per phrase and overall:

- the real-time factor: render time / duration of the phrase's audio (< 1 is faster than
  real time; the first, warm-up render is left out);
- the pitch accuracy: WORLD's Harvest tracks the rendered audio's f0; over the voiced frames
  inside each note (its first and last 50 ms left out: portamento), the absolute error in
  cents against the note's pitch; its median (and 90th percentile) per phrase and pooled.

Usage: ``python benchmarks/bench_fallback_singer.py [--phrases 20] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.lyrics.syllables import Pronouncer
from engine.voice.fallback_singer import FallbackSinger, _pw

WORDS = (
    "hold the light we run into night and never look back my heart is on fire tonight "
    "we are golden dancing under silver rain remember every little thing you said to me "
    "carry me over the river again forever yesterday beautiful together open window "
    "shadow morning city lonely feeling believe desire broken highway"
).split()


def syllabify(phones: list[str]) -> list[tuple[list[str], bool]]:
    """CMUdict phones (with stress digits) -> syllables (phonemes without digits, stressed).
    Consonants between vowels go to the next syllable, but for half of those beyond the
    first (the singer's own rule)."""
    vowels = [i for i, p in enumerate(phones) if p[-1].isdigit()]
    cuts = [0]
    for a, b in zip(vowels, vowels[1:], strict=False):
        cuts.append(a + 1 + max(0, b - a - 2) // 2)
    cuts.append(len(phones))
    out = []
    for j in range(len(vowels)):
        part = phones[cuts[j]:cuts[j + 1]]
        stressed = phones[vowels[j]][-1] in "12"
        out.append(([p.rstrip("012").lower() for p in part], stressed))
    return out


def make_phrase(rng: random.Random, pron: Pronouncer, bar: int) -> PhrasePlan:
    """A phrase of 4-10 syllables on a random melody starting at ``bar`` (4/4)."""
    target = rng.randint(4, 10)
    sylls: list[tuple[str, str, list[str], bool, bool]] = []
    while len(sylls) < target:
        word = rng.choice(WORDS)
        parts = syllabify(pron.phones(word)[0])
        if len(sylls) + len(parts) > 10:
            continue
        for j, (ph, stressed) in enumerate(parts):
            sylls.append((word if len(parts) == 1 else f"{word}{j}", word, ph, stressed, j == 0))
    beat = bar * 4.0
    pitch = rng.randint(57, 69)
    out = []
    for text, word, ph, stressed, first in sylls:
        notes = []
        for _ in range(2 if rng.random() < 0.15 else 1):  # melisma
            dur = rng.choice((0.5, 0.5, 1.0, 1.0, 1.5, 2.0))
            pitch = min(76, max(52, pitch + rng.choice((-4, -3, -2, -1, 0, 1, 2, 3, 5))))
            notes.append(SungNote(pitch, beat, dur))
            beat += dur
        if rng.random() < 0.15:
            beat += rng.choice((0.5, 1.0))  # a rest
        out.append(SungSyllable(text, word, tuple(ph), tuple(notes), stressed, first))
    text = " ".join(dict.fromkeys(s[1] for s in sylls))
    return PhrasePlan(bar=bar, section="verse", text=text, syllables=tuple(out))


def cents_errors(audio, plan: PhrasePlan, tempo: float, trim: float = 0.05) -> np.ndarray:
    """Absolute cents errors of Harvest's f0 over voiced frames inside the plan's notes."""
    pw = _pw()
    x = audio.samples.astype(np.float64)
    f0, t = pw.harvest(x, audio.sample_rate, f0_floor=70.0, f0_ceil=1000.0, frame_period=5.0)
    song_t = t + audio.start_seconds
    errs = []
    for syl in plan.syllables:
        for note in syl.notes:
            a, b = note.start * 60 / tempo + trim, note.end * 60 / tempo - trim
            sel = (song_t >= a) & (song_t < b) & (f0 > 0)
            target = 440.0 * 2 ** ((note.pitch - 69) / 12)
            errs.append(np.abs(1200 * np.log2(f0[sel] / target)))
    return np.concatenate(errs) if errs else np.zeros(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phrases", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    pron = Pronouncer()
    singer = FallbackSinger()
    phrases = [(make_phrase(rng, pron, 2 + 4 * i), rng.choice((90, 100, 110, 120, 140)))
               for i in range(args.phrases)]
    singer.render(*phrases[0])  # warm-up: loads espeak-ng and pyworld
    rtfs, medians, pooled = [], [], []
    print(f"{'#':>2} {'syl':>3} {'bpm':>3} {'audio s':>7} {'render s':>8} {'RTF':>6} "
          f"{'med c':>6} {'p90 c':>6}  text")
    for i, (plan, tempo) in enumerate(phrases):
        t0 = time.perf_counter()
        audio = singer.render(plan, tempo)
        dt = time.perf_counter() - t0
        rtf = dt / audio.duration
        errs = cents_errors(audio, plan, tempo)
        med = float(np.median(errs)) if len(errs) else float("nan")
        p90 = float(np.percentile(errs, 90)) if len(errs) else float("nan")
        rtfs.append(rtf)
        medians.append(med)
        pooled.append(errs)
        print(f"{i:>2} {len(plan.syllables):>3} {tempo:>3} {audio.duration:7.2f} {dt:8.3f} "
              f"{rtf:6.3f} {med:6.1f} {p90:6.1f}  {plan.text}")
    allerr = np.concatenate(pooled)
    print(f"\nreal-time factor: median {statistics.median(rtfs):.3f}, "
          f"mean {statistics.fmean(rtfs):.3f}, max {max(rtfs):.3f} over {len(rtfs)} phrases")
    print(f"pitch error (cents, voiced frames inside notes, Harvest): pooled median "
          f"{np.median(allerr):.1f}, p90 {np.percentile(allerr, 90):.1f}; worst phrase "
          f"median {max(medians):.1f}")


if __name__ == "__main__":
    main()
