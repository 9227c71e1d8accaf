"""Benchmark every singer on the same sung phrases: intelligibility, pitch and speed.

An independent recogniser judges intelligibility: PocketSphinx (``pip install
pocketsphinx==5.1.1``, BSD-2-Clause), which ships its US-English acoustic model and a
phone language model, decodes each phrase's audio (resampled to 16 kHz) as a phone
sequence (its ``allphone`` mode: no words, no dictionary, so it cannot guess words from
context). The *phone error rate* is the edit distance between the recognised phones
(silences and noises dropped) and the phrase's own ARPAbet phones, divided by the number
of the latter. 1.0 is as bad as recognising nothing.

Singers, all on the same seeded phrases (``bench_fallback_singer.make_phrase``: CMUdict
words on a random melody, melismas and rests), in one run:

- ``encore_voice``: the shipped DiffSinger voicebank (``models_onnx/encore_voice``), 20 steps
  (``--banks`` adds other voicebank folders, e.g. a retrained one, as ``bank/<folder>``);
- ``sung/espeak``, ``sung/flite``, ``sung/festival``: the fallback singer with each teacher
  (the speech re-timed and re-pitched onto the notes by WORLD); the teachers that are not
  installed are skipped and named;
- ``spoken/espeak``, ``spoken/flite``, ``spoken/festival``: the synthesizer simply speaking
  the phrase's words (no melody; the reference the issue asks us to beat).

Printed per singer: phone error rate (pooled over phrases: total edits / total phones,
and the median of per-phrase rates), pitch error (Harvest on the sung audio, voiced frames
inside notes, 50 ms trimmed each side; pooled median cents; not for speech), and the
real-time factor (render time / audio seconds: each phrase rendered ``--repeats`` times,
the singers interleaved phrase by phrase, the median of each phrase's times; the median
over phrases is printed). ``--save DIR`` writes every rendering as a WAV for listening.

Usage: ``python benchmarks/bench_voice_intelligibility.py [--phrases 16] [--seed 0]
[--repeats 3] [--save DIR]``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fallback_singer import cents_errors, make_phrase  # noqa: E402

from engine.lyrics.phrase import PhrasePlan  # noqa: E402
from engine.lyrics.syllables import Pronouncer  # noqa: E402
from engine.voice.singer import SungAudio  # noqa: E402
from engine.voice.teachers import TeacherNotFoundError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_IGNORED = {"sil", "+nsn+", "+spn+", "+ns+", "+breath+", "+cough+", "+noise+", "+um+",
            "+uh+", "+smack+"}


# --------------------------------------------------------------------------------------
# the recogniser


class PhoneRecogniser:
    """PocketSphinx's allphone decoder with its shipped en-us model."""

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError:
            sys.exit("bench_voice_intelligibility needs pocketsphinx: "
                     "pip install pocketsphinx==5.1.1")
        model = Path(get_model_path()) / "en-us"
        self._decoder = Decoder(hmm=str(model / "en-us"),
                                allphone=str(model / "en-us-phone.lm.bin"),
                                lm=None, dict=None, lw=2.0, beam=1e-20, pbeam=1e-20,
                                logfn="/dev/null")

    def phones(self, samples: np.ndarray, rate: int) -> list[str]:
        x = np.asarray(samples, dtype=np.float64)
        if rate != 16000:
            g = gcd(16000, rate)
            x = resample_poly(x, 16000 // g, rate // g)
        peak = float(np.max(np.abs(x))) or 1.0
        pcm = (x / peak * 0.9 * 32767).astype("<i2").tobytes()
        d = self._decoder
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        return [s.word.lower() for s in d.seg() if s.word.lower() not in _IGNORED]


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def expected_phones(plan: PhrasePlan) -> list[str]:
    return [p.lower().rstrip("012") for s in plan.syllables for p in s.phonemes]


# --------------------------------------------------------------------------------------
# singers and speakers


def _wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels())[:, 0]
    return data.astype(np.float64) / 32768.0, rate


def speaker(name: str) -> Callable[[str], tuple[np.ndarray, int]] | None:
    """A function speaking plain text with a synthesizer's own prosody; None if missing."""
    def run(cmd: list[str], out: Path, stdin: str | None = None) -> tuple[np.ndarray, int]:
        subprocess.run(cmd, input=stdin.encode() if stdin else None, check=True,
                       capture_output=True, timeout=60)
        return _wav(out)

    tmp = Path(tempfile.mkdtemp(prefix="encore-bench-speak-"))
    out = tmp / "speech.wav"
    if name == "espeak" and shutil.which("espeak-ng"):
        return lambda text: run(["espeak-ng", "-v", "en-us", "-w", str(out), text], out)
    if name == "flite" and shutil.which("flite"):
        return lambda text: run(["flite", "-voice", "slt", "-t", text, "-o", str(out)], out)
    if name == "festival" and shutil.which("text2wave") and Path(
            "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts").is_dir():
        return lambda text: run(["text2wave", "-eval", "(voice_cmu_us_slt_arctic_hts)",
                                 "-o", str(out)], out, text)
    return None


@dataclass
class Result:
    edits: list[int] = field(default_factory=list)
    phones: list[int] = field(default_factory=list)
    cents: list[np.ndarray] = field(default_factory=list)
    rtf: list[float] = field(default_factory=list)

    def per(self) -> float:
        return sum(self.edits) / max(1, sum(self.phones))


def _save(folder: Path | None, name: str, i: int, x: np.ndarray, rate: int) -> None:
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{i:02d}_{name.replace('/', '_')}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        peak = float(np.max(np.abs(x))) or 1.0
        w.writeframes((np.asarray(x) / peak * 0.9 * 32767).astype("<i2").tobytes())


def load_singers(steps: int, only: list[str] | None = None, banks: list[Path] = ()
                 ) -> dict[str, Callable[[PhrasePlan, float], SungAudio]]:
    from engine.voice.diffsinger import DiffSingerRunner, RenderSettings
    from engine.voice.fallback_singer import FallbackSinger

    singers: dict[str, Callable[[PhrasePlan, float], SungAudio]] = {}
    bank = ROOT / "models_onnx" / "encore_voice"
    if (bank / "dsconfig.yaml").exists() and (only is None or "encore_voice" in only):
        runner = DiffSingerRunner(bank, RenderSettings(steps=steps))
        singers["encore_voice"] = runner.render
    for extra in banks:
        singers[f"bank/{extra.name}"] = DiffSingerRunner(extra, RenderSettings(steps=steps)).render
    for teacher in ("espeak", "flite", "festival"):
        if only is not None and f"sung/{teacher}" not in only:
            continue
        try:
            singers[f"sung/{teacher}"] = FallbackSinger(teacher=teacher).render
        except TeacherNotFoundError as err:
            print(f"skipped sung/{teacher}: {err}")
    return singers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phrases", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="renders per phrase for timing")
    ap.add_argument("--steps", type=int, default=20, help="encore_voice's diffusion steps")
    ap.add_argument("--save", type=Path, default=None, help="write every rendering as WAV")
    ap.add_argument("--banks", nargs="+", type=Path, default=[],
                    help="more DiffSinger voicebank folders to compare (named by folder)")
    ap.add_argument("--only", nargs="+", default=None,
                    help="only these singers/speakers (names as printed, e.g. sung/festival)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    pron = Pronouncer()
    phrases = [(make_phrase(rng, pron, 2 + 4 * i), rng.choice((90, 100, 110, 120, 140)))
               for i in range(args.phrases)]
    recogniser = PhoneRecogniser()
    singers = load_singers(args.steps, args.only, args.banks)
    speakers = {f"spoken/{n}": f for n in ("espeak", "flite", "festival")
                if (args.only is None or f"spoken/{n}" in args.only)
                and (f := speaker(n)) is not None}
    for render in singers.values():  # warm-up: sessions, children, pyworld
        render(*phrases[0])
    results = {name: Result() for name in [*singers, *speakers]}
    for i, (plan, tempo) in enumerate(phrases):
        truth = expected_phones(plan)
        for name, render in singers.items():
            times = []
            for _ in range(max(1, args.repeats)):
                t0 = time.perf_counter()
                audio = render(plan, tempo)
                times.append(time.perf_counter() - t0)
            r = results[name]
            r.rtf.append(statistics.median(times) / audio.duration)
            heard = recogniser.phones(audio.samples, audio.sample_rate)
            r.edits.append(edit_distance(truth, heard))
            r.phones.append(len(truth))
            r.cents.append(cents_errors(audio, plan, tempo))
            _save(args.save, name, i, audio.samples, audio.sample_rate)
        words = " ".join(dict.fromkeys(s.word for s in plan.syllables))
        for name, speak in speakers.items():
            x, rate = speak(words)
            heard = recogniser.phones(x, rate)
            results[name].edits.append(edit_distance(truth, heard))
            results[name].phones.append(len(truth))
            _save(args.save, name, i, x, rate)
        print(f"phrase {i:2d} ({len(truth)} phones, {tempo} bpm): " + "  ".join(
            f"{n} {results[n].edits[-1] / len(truth):.2f}" for n in results), flush=True)

    print(f"\n{len(phrases)} phrases, seed {args.seed}, {args.repeats} renders each for "
          f"timing; recogniser: pocketsphinx allphone, en-us model")
    print(f"{'singer':<16} {'PER pooled':>10} {'PER median':>10} {'pitch med c':>11} "
          f"{'pitch p90 c':>11} {'RTF median':>10} {'RTF max':>8}")
    for name, r in results.items():
        per_phrase = [e / max(1, n) for e, n in zip(r.edits, r.phones, strict=True)]
        cents = np.concatenate(r.cents) if r.cents else np.zeros(0)
        med_c = f"{np.median(cents):11.1f}" if len(cents) else f"{'-':>11}"
        p90_c = f"{np.percentile(cents, 90):11.1f}" if len(cents) else f"{'-':>11}"
        rtf = f"{statistics.median(r.rtf):10.3f} {max(r.rtf):8.3f}" if r.rtf else \
            f"{'-':>10} {'-':>8}"
        print(f"{name:<16} {r.per():10.3f} {statistics.median(per_phrase):10.3f} "
              f"{med_c} {p90_c} {rtf}")


if __name__ == "__main__":
    main()
