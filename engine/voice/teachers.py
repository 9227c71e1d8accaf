"""The speech the fallback singer re-times and re-pitches: one backend per speech synthesizer.

A *teacher* speaks a phrase's syllables, grouped into words (see
``fallback_singer._groups``), and says where each phoneme of each word starts and ends in
its audio. The fallback singer then warps that speech onto the notes with WORLD. Three
backends, all free software Debian ships:

- ``flite``: CMU Flite with its ``slt`` voice (Debian package ``flite``, BSD-style
  licence; a statistical-parametric voice built from the CMU ARCTIC recordings of speaker
  SLT; 16 kHz). Measured the most intelligible when sung, and the fastest
  (``benchmarks/bench_voice_intelligibility.py``), so ``auto`` takes it first.
- ``festival``: Festival with the HTS voice ``cmu_us_slt_arctic_hts`` (Debian packages
  ``festival`` and ``festvox-us-slt-hts``; the same speaker; 32 kHz): about as intelligible
  when sung, three times slower; used when Flite is missing.
- ``espeak``: espeak-ng's formant synthesis (Debian package ``espeak-ng``; 22.05 kHz),
  which lives in :mod:`engine.voice.fallback_singer` (its library reports phoneme events).

Festival and Flite are given the syllables' ARPAbet phonemes through a lexicon of made-up
words (``encorea``, ``encoreb``, ...: one per group, the stressed syllable marked), so they
say exactly the plan's phonemes, with their own durations and coarticulation. A group
without phonemes (a word CMUdict lacks) is spelled by :func:`engine.voice.g2p.letters_to_phonemes`.
Nothing of the lyric's text reaches either program: only generated names and phoneme
symbols from a fixed set. Each phrase runs in a fresh child process with a timeout, in a
private temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.lyrics.phrase import SungSyllable
from engine.voice.g2p import ARPABET_VOWELS, letters_to_phonemes, syllabify

TEACHER_ORDER = ("flite", "festival", "espeak")
"""``auto`` takes the first of these that is installed (most intelligible first)."""
ARPABET_VOWEL_INITIALS = "aeiou"
"""Every ARPAbet vowel starts with one of these letters; no consonant does."""
_TIMEOUT = 30.0
_FESTIVAL_VOICE = "cmu_us_slt_arctic_hts"
_FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices/us",)
_CONSONANTS = frozenset(
    "b ch d dh f g hh jh k l m n ng p r s sh t th v w y z zh".split())
_PHONES = _CONSONANTS | {"aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy",
                         "ow", "oy", "uh", "uw"}


class TeacherNotFoundError(RuntimeError):
    """The speech synthesizer a teacher needs is not installed."""


@dataclass(frozen=True)
class Speech:
    """A phrase spoken: mono float64 audio in -1..1 at ``sample_rate``, and per word (group)
    its phonemes as ``[name, start sample, end sample]``."""

    audio: np.ndarray
    sample_rate: int
    words: list[list[list]]


class Teacher(Protocol):
    """Speaks groups of syllables (see the module notes)."""

    name: str
    vowel_initials: str

    def speak(self, syllables: tuple[SungSyllable, ...], groups: list[list[int]]) -> Speech: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------
# phonemes for the lexicon


def group_syllables(syllables: tuple[SungSyllable, ...], group: list[int]
                    ) -> list[tuple[list[str], bool]]:
    """One group's syllables as (ARPAbet phones, stressed), the plan's own phonemes when it
    has them, else a spelling guess of the whole word (or the group's text) split at its
    vowels; a schwa when nothing has a vowel. Phones outside ARPAbet are dropped."""
    first = syllables[group[0]]
    if len(group) == 1:
        phones = [p.lower().rstrip("012") for p in first.phonemes]
        if phones and all(p in _PHONES for p in phones):
            return [(phones, first.stressed)]
    whole_word = first.word_start and (
        group[-1] + 1 == len(syllables) or syllables[group[-1] + 1].word_start)
    texts = [first.word] if whole_word else []
    texts.append("".join(syllables[i].text for i in group))
    for text in texts:
        phones = [p for p in letters_to_phonemes(text) if p in _PHONES]
        if any(p in ARPABET_VOWELS for p in phones):
            parts = syllabify(phones, ARPABET_VOWELS)
            return [(list(part), k == 0) for k, part in enumerate(parts)]
    return [(["ah"], first.stressed)]


def lexicon_word(index: int) -> str:
    """A made-up word of letters only for group ``index``: encorea, encoreb, ... encoreba."""
    letters = ""
    index += 1
    while index > 0:
        index, r = divmod(index - 1, 26)
        letters = chr(ord("a") + r) + letters
    return "encore" + letters


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise RuntimeError(f"unexpected speech file format in {path.name}")
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0, rate


def _run(cmd: list[str], what: str, stdin: bytes | None = None, cwd: str | None = None
         ) -> str:
    try:
        out = subprocess.run(cmd, input=stdin, capture_output=True, timeout=_TIMEOUT,
                             cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{what} took over {_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise TeacherNotFoundError(f"{what} cannot run ({exc})") from None
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {out.returncode}): "
                           f"{out.stderr.decode(errors='replace')[-600:]}")
    return out.stdout.decode(errors="replace")


# --------------------------------------------------------------------------------------
# Flite


class FliteTeacher:
    """CMU Flite's ``slt`` voice (Debian package ``flite``), through its command line:
    ``-add_lex`` takes the made-up words, ``-psdur`` prints each segment's end time."""

    name = "flite"
    vowel_initials = ARPABET_VOWEL_INITIALS

    def __init__(self, voice: str = "slt") -> None:
        self._binary = shutil.which("flite")
        if self._binary is None:
            raise TeacherNotFoundError(
                "flite is not installed: apt-get install --no-install-recommends flite")
        self.voice = voice
        voices = _run([self._binary, "-lv"], "flite -lv")
        if voice not in voices.split():
            raise TeacherNotFoundError(f"flite has no voice {voice!r} ({voices.strip()})")

    def close(self) -> None:
        """Nothing to stop: one process per phrase."""

    def speak(self, syllables: tuple[SungSyllable, ...], groups: list[list[int]]) -> Speech:
        words = [group_syllables(syllables, g) for g in groups]
        with tempfile.TemporaryDirectory(prefix="encore-flite-") as tmp:
            audio, rate, segments = self._say(words, Path(tmp))
            expected = sum(len(ph) for word in words for ph, _ in word)
            if len(segments) == expected:
                return Speech(audio, rate, _assign(words, segments, rate))
            # the segment count differs (a postlexical rule): speak word by word
            pieces, out, offset = [], [], 0
            for word in words:
                piece, rate, segs = self._say([word], Path(tmp))
                out.append([[n, a + offset, b + offset]
                            for n, a, b in _to_samples(segs, rate)])
                pieces.append(piece)
                offset += len(piece)
            return Speech(np.concatenate(pieces), rate, out)

    def _say(self, words: list[list[tuple[list[str], bool]]], tmp: Path
             ) -> tuple[np.ndarray, int, list[tuple[str, float, float]]]:
        lex = tmp / "lex.txt"
        lines = []
        for k, word in enumerate(words):
            phones = [p + ("1" if stressed else "0") if p not in _CONSONANTS else p
                      for part, stressed in word for p in part]
            lines.append(f"{lexicon_word(k)} : {' '.join(phones)}")
        lex.write_text("\n".join(lines) + "\n", encoding="ascii")
        wav = tmp / "speech.wav"
        text = " ".join(lexicon_word(k) for k in range(len(words)))
        out = _run([self._binary, "-voice", self.voice, "-add_lex", str(lex), "-psdur",
                    "-t", text, "-o", str(wav)], "flite")
        audio, rate = _read_wav(wav)
        segments, start = [], 0.0
        for item in out.split():
            name, _, end = item.rpartition(":")
            end_s = float(end)
            if name != "pau":
                segments.append((name, start, end_s))
            start = end_s
        return audio, rate, segments


def _to_samples(segments: list[tuple[str, float, float]], rate: int) -> list[list]:
    return [[n, int(round(a * rate)), int(round(b * rate))] for n, a, b in segments]


def _assign(words: list[list[tuple[list[str], bool]]],
            segments: list[tuple[str, float, float]], rate: int) -> list[list[list]]:
    """Segments in order, handed to the words by their phone counts."""
    out, i = [], 0
    for word in words:
        n = sum(len(ph) for ph, _ in word)
        out.append(_to_samples(segments[i:i + n], rate))
        i += n
    return out


# --------------------------------------------------------------------------------------
# Festival


class SpareChild:
    """A child process started ahead of need, so a phrase does not wait for its start-up:
    :meth:`take` hands the waiting one over (a fresh one if it died) and starts the next;
    :meth:`close` stops the one waiting."""

    def __init__(self, spawn: Callable[[], subprocess.Popen]) -> None:
        self._spawn = spawn
        self._lock = threading.Lock()
        self._spare: subprocess.Popen | None = None

    def take(self) -> subprocess.Popen:
        with self._lock:
            proc = self._spare
            if proc is None or proc.poll() is not None:
                proc = self._spawn()
            self._spare = self._spawn()
        return proc

    def close(self) -> None:
        with self._lock:
            proc, self._spare = self._spare, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()


class FestivalTeacher:
    """Festival with the HTS voice ``cmu_us_slt_arctic_hts`` (Debian packages ``festival``
    and ``festvox-us-slt-hts``). A spare ``festival --pipe`` child is started ahead of need,
    already loading the voice (about 0.3 s), so a phrase pays only for its synthesis."""

    name = "festival"
    vowel_initials = ARPABET_VOWEL_INITIALS

    def __init__(self) -> None:
        self._binary = shutil.which("festival")
        if self._binary is None:
            raise TeacherNotFoundError(
                "festival is not installed: apt-get install --no-install-recommends "
                "festival festvox-us-slt-hts")
        if not any(os.path.isdir(os.path.join(d, _FESTIVAL_VOICE))
                   for d in _FESTIVAL_VOICE_DIRS):
            raise TeacherNotFoundError(
                f"festival's voice {_FESTIVAL_VOICE} is not installed: apt-get install "
                "--no-install-recommends festvox-us-slt-hts")
        self._children = SpareChild(self._spawn)
        probe = self.speak((SungSyllable("ah", "ah", ("aa",), (), True, True),), [[0]])
        if not probe.words or not probe.words[0]:
            raise TeacherNotFoundError("festival spoke nothing: is festvox-us-slt-hts whole?")

    def _spawn(self) -> subprocess.Popen:
        proc = subprocess.Popen([self._binary, "--pipe"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(f"(voice_{_FESTIVAL_VOICE})\n".encode())
        proc.stdin.flush()
        return proc

    def close(self) -> None:
        """Stop the spare child."""
        self._children.close()

    def __del__(self) -> None:  # a spare child would otherwise wait for its stdin to close
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def speak(self, syllables: tuple[SungSyllable, ...], groups: list[list[int]]) -> Speech:
        words = [group_syllables(syllables, g) for g in groups]
        proc = self._children.take()
        with tempfile.TemporaryDirectory(prefix="encore-festival-") as tmp:
            wav = Path(tmp) / "speech.wav"
            script = []
            for k, word in enumerate(words):
                sylls = " ".join(f"(({' '.join(ph)}) {1 if stressed else 0})"
                                 for ph, stressed in word)
                script.append(f'(lex.add.entry \'("{lexicon_word(k)}" nil ({sylls})))')
            text = " ".join(lexicon_word(k) for k in range(len(words)))
            script += [
                f'(set! utt (utt.synth (Utterance Text "{text}")))',
                f'(utt.save.wave utt "{wav}" \'riff)',
                '(mapcar (lambda (s) (format t "@seg %s %f %s\\n" (item.name s) '
                '(item.feat s "end") (item.feat s "R:SylStructure.parent.parent.name"))) '
                "(utt.relation.items utt 'Segment))",
            ]
            try:
                out, err = proc.communicate("\n".join(script).encode() + b"\n",
                                            timeout=_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise TimeoutError(f"festival took over {_TIMEOUT:.0f} s") from None
            if not wav.exists():
                raise RuntimeError("festival wrote no audio: "
                                   f"{err.decode(errors='replace')[-600:]}")
            audio, rate = _read_wav(wav)
        index = {lexicon_word(k): k for k in range(len(words))}
        spoken: list[list[list]] = [[] for _ in words]
        start = 0.0
        for line in out.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) != 4 or parts[0] != "@seg":
                continue
            end = float(parts[2])
            if parts[1] != "pau" and parts[3] in index:
                spoken[index[parts[3]]].append(
                    [parts[1], int(round(start * rate)), int(round(end * rate))])
            start = end
        return Speech(audio, rate, spoken)


def make_teacher(name: str) -> Teacher:
    """The named non-espeak teacher (``festival`` or ``flite``), loaded; raises
    :class:`TeacherNotFoundError` when it is not installed."""
    if name == "festival":
        return FestivalTeacher()
    if name == "flite":
        return FliteTeacher()
    raise ValueError(f"no teacher {name!r}: use one of {', '.join(TEACHER_ORDER)} or auto")
