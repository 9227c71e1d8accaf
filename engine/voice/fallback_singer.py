"""The fallback singer: espeak-ng speech, re-timed and re-pitched with the WORLD vocoder.

When no neural voicebank is at hand, the engine still sings: espeak-ng (a small formant
synthesizer, Debian package ``espeak-ng``) speaks the phrase's syllables, and WORLD
(``pyworld``) analyses that speech into a pitch track, a spectral envelope and an
aperiodicity, warps them in time so that each syllable's vowel lands on its note and lasts
as long as its notes, replaces the pitch with the melody, and resynthesizes. It is on pitch
and on time, and it sounds robotic. On 2 busy cores it renders at roughly a tenth of real
time.

How a phrase is rendered
------------------------
1. **Phonemes.** Each syllable's ARPAbet phonemes (the plan's, lower case, no stress
   digits) are spelled in espeak-ng's phoneme mnemonics (``l ay t`` -> ``laIt``; a stressed
   syllable gets espeak's stress mark ``'``; ``ah`` and ``er`` become ``V`` / ``3:`` when
   stressed and ``@`` / ``3`` when not). Syllables without phonemes (or with a symbol that
   is not ARPAbet) are pronounced by espeak-ng's own spelling rules, a whole word at a time
   when all its syllables lack them (then split among them at its vowels), so words CMUdict
   lacks still sing; a syllable left with nothing to say sings a schwa.
2. **Speech and alignment.** The phrase is spoken in one espeak-ng call, each syllable one
   word of phoneme input (``[[h'oUld D@ l'aIt]]``), through the library ``libespeak-ng``
   (ctypes) rather than the command line, because the library reports where every word
   and phoneme starts in the audio (its word and phoneme events, exact to the sample). A
   syllable's span is its phonemes'; its *nucleus* runs from its first vowel phoneme's
   start to its last vowel phoneme's end; before it is the onset, after it the coda. If
   the word events do not come back one per word (not seen in testing, but espeak-ng's
   rules are not ours), each word is spoken by itself instead. The library runs in a
   fresh child process for every phrase (see :class:`_EspeakWorker`: it carries state from
   one utterance to the next, which would make renders differ by a few samples), with a
   timeout; a spare child is started ahead of time, so this costs no latency.
3. **Timing** (OpenUtau's convention). The nucleus starts exactly on the syllable's first
   note and holds until its coda, which ends at the end of the syllable's last note (or
   earlier, where the next syllable's onset needs the room). Onset consonants sound *before*
   the beat: in the rest before the note when there is one, else at the end of the previous
   note. Consonants keep espeak's durations unless they would leave the vowel less than
   half its note (or 80 ms on short notes); then they are compressed, never stretched. The
   first onset is pre-roll: up to 0.35 s before the first note. Vowels are time-warped
   piecewise: the first 20 % of the spoken vowel plays at natural speed, the next 20 % is
   stretched to fill the note and the last 60 % (a diphthong's glide) plays at natural
   speed at the note's end; vowels longer than their note are compressed linearly.
4. **Pitch.** The new f0 is the notes' pitches (Hz from MIDI) as a step curve that steps at
   each note's start (after a rest: where the onset starts, so that voiced consonants in
   the rest already have the new pitch), smoothed by a 60 ms window (a short portamento:
   30 ms each side of the step), with a light vibrato (5.5 Hz, up to +-15 cents, fading
   in after 0.25 s) on notes of 0.45 s or more.
   Frames are voiced where espeak's speech was voiced (WORLD's DIO + StoneMask) and always
   inside a nucleus.
5. **Synthesis.** WORLD resynthesizes with 5 ms frames at espeak-ng's rate (22.05 kHz:
   its speech has nothing above 11 kHz), and a polyphase filter (``scipy.signal``)
   resamples to the output rate (44.1 kHz by default; any rate works). Frames between
   syllables' spans are silent; a 25 ms fade at every edge avoids clicks. The result is
   float32 mono, scaled down only if its peak would exceed -1 dBFS.

The audio starts 50 ms before the first onset consonant (``SungAudio.start_seconds``: the
song time of its first sample, before the first note's start, and negative if the phrase's
first note is at the very start of the song) and ends 150 ms after the last note. Output is
deterministic: the same plan, tempo, voice and rate give the same samples (a fresh
espeak-ng every phrase; WORLD's noise generator is reseeded on every synthesis).

Needs: the Debian package ``espeak-ng`` (:class:`EspeakNotFoundError` says so when it is
missing) and ``pyworld`` (0.3.5 builds from source: numpy and a C++ compiler).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import os
import subprocess
import sys
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from engine.lyrics.phrase import PhrasePlan, SungSyllable
from engine.voice.singer import SungAudio
from engine.voice.teachers import (
    TEACHER_ORDER,
    SpareChild,
    Speech,
    Teacher,
    TeacherNotFoundError,
    make_teacher,
)

FRAME_PERIOD_MS = 5.0
"""WORLD's analysis and synthesis hop."""
ESPEAK_RATE_WPM = 150
"""espeak-ng's speaking rate: a little slower than its default 175, for longer vowels."""

_FRAME = FRAME_PERIOD_MS / 1000.0
_PRE_PAD = 0.05
_TAIL_PAD = 0.15
_MAX_FIRST_ONSET = 0.35
_MIN_VOWEL = 0.08
_MIN_VOWEL_SHARE = 0.5
"""Consonants are compressed where they would leave the vowel less than this share of its
note (or ``_MIN_VOWEL`` seconds on short notes)."""
_PORTAMENTO = 0.06
_FADE = 0.025
_VIBRATO_MIN_NOTE = 0.45
_VIBRATO_DELAY = 0.25
_VIBRATO_RAMP = 0.2
_VIBRATO_RATE = 5.5
_VIBRATO_DEPTH = 0.15  # semitones
_PEAK = 10 ** (-1 / 20)  # -1 dBFS

# ARPAbet (CMUdict, no stress) -> espeak-ng en-us phoneme mnemonics. ``ah``/``er`` differ
# by stress (see _STRESSED).
ARPABET_TO_ESPEAK: dict[str, str] = {
    "aa": "A:", "ae": "a", "ah": "@", "ao": "O:", "aw": "aU", "ay": "aI", "eh": "E",
    "er": "3", "ey": "eI", "ih": "I", "iy": "i:", "ow": "oU", "oy": "OI", "uh": "U",
    "uw": "u:",
    "b": "b", "ch": "tS", "d": "d", "dh": "D", "f": "f", "g": "g", "hh": "h", "jh": "dZ",
    "k": "k", "l": "l", "m": "m", "n": "n", "ng": "N", "p": "p", "r": "r", "s": "s",
    "sh": "S", "t": "t", "th": "T", "v": "v", "w": "w", "y": "j", "z": "z", "zh": "Z",
}
_STRESSED = {"ah": "V", "er": "3:"}
_ESPEAK_VOWEL_START = set("aAeEiIoOuUV@3")
"""espeak-ng's English vowel mnemonics all begin with one of these; no consonant does."""


class EspeakNotFoundError(TeacherNotFoundError):
    """espeak-ng's library (Debian package ``espeak-ng``) is not installed."""


# --------------------------------------------------------------------------------------
# pyworld


def _load_pyworld() -> ModuleType:
    """Import pyworld's compiled module.

    pyworld 0.3.5's ``__init__`` reads its version through ``pkg_resources``, which
    setuptools 81 and later no longer ship; when that import fails, the compiled extension
    (which needs nothing of it) is loaded straight from the package folder.
    """
    try:
        import pyworld

        return pyworld
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise RuntimeError(
                "the fallback singer needs pyworld: pip install pyworld==0.3.5 "
                "(it compiles from source: needs numpy and a C++ compiler, e.g. Debian g++)"
            ) from exc
    spec = importlib.util.find_spec("pyworld")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [p for f in folders for p in glob.glob(os.path.join(f, "pyworld*.so"))]
    found += [p for f in folders for p in glob.glob(os.path.join(f, "pyworld*.pyd"))]
    if not found:
        raise RuntimeError("pyworld is installed without its compiled module: reinstall it")
    ext_spec = importlib.util.spec_from_file_location("pyworld.pyworld", found[0])
    assert ext_spec is not None and ext_spec.loader is not None
    module = importlib.util.module_from_spec(ext_spec)
    ext_spec.loader.exec_module(module)
    return module


_pyworld: ModuleType | None = None


def _pw() -> ModuleType:
    global _pyworld
    if _pyworld is None:
        _pyworld = _load_pyworld()
    return _pyworld


# --------------------------------------------------------------------------------------
# espeak-ng, in a fresh child process per phrase

_INSTALL_HINT = ("install the Debian package espeak-ng "
                 "(apt-get install --no-install-recommends espeak-ng, or scripts/setup.sh)")
_ESPEAK_TIMEOUT = 30.0
_ESPEAK_PARAMS = ((1, ESPEAK_RATE_WPM), (2, 100), (3, 50), (4, 20), (7, 0))
"""espeak_SetParameter pairs: rate (wpm), volume, pitch (0-99), pitch range, word gap."""

# The child: plain Python with only the standard library (started with -I -S, ~50 ms,
# and started ahead of need: see _EspeakWorker). It loads libespeak-ng and initializes it
# before it reads its request, so a spare child waits ready. Request (stdin, JSON):
# {"voice", "params": [[id, value]...], "vowels": str, "words": [{"phonemes": str} or
# {"texts": [str...]}...]}. Reply (stdout): one JSON line {"sample_rate", "said": [espeak
# phoneme word per input word], "words": [[[phoneme, start sample, end sample]...]...],
# "one_by_one": whether the words had to be spoken one by one} or
# {"error": "missing"|"voice", "message"}, then the audio as raw little-endian int16.
_WORKER_SOURCE = r"""
import ctypes, ctypes.util, json, sys

class Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]

class Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", Id)]

CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                            ctypes.POINTER(Event))
chunks, events = [], []

def on_audio(wav, n, ev):
    if n > 0 and wav:
        chunks.append(ctypes.string_at(wav, 2 * n))
    i = 0
    while ev[i].type != 0:  # espeakEVENT_LIST_TERMINATED
        e = ev[i]
        if e.type == 1:  # espeakEVENT_WORD
            events.append((1, e.sample, ""))
        elif e.type == 7:  # espeakEVENT_PHONEME
            events.append((7, e.sample, e.id.string.decode("ascii", "replace")))
        i += 1
    return 0

callback = CALLBACK(on_audio)
error = None
try:
    lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                      ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                          ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    # synchronous output, phoneme events on, never exit() on an error
    rate = lib.espeak_Initialize(2, 0, None, 0x0001 | 0x8000)
    if rate <= 0:
        raise OSError("espeak_Initialize failed (is espeak-ng-data installed?)")
    lib.espeak_SetSynthCallback(callback)
except (OSError, AttributeError) as exc:
    error = {"error": "missing", "message": str(exc)}

request = json.loads(sys.stdin.buffer.read() or b"{}")

def reply(header, audio=b""):
    sys.stdout.buffer.write(json.dumps(header).encode() + b"\n" + audio)
    sys.stdout.buffer.flush()
    sys.exit(0)

if error:
    reply(error)
if lib.espeak_SetVoiceByName(request.get("voice", "en-us").encode()) != 0:
    reply({"error": "voice", "message": "no such voice"})
for param, value in request.get("params", []):
    lib.espeak_SetParameter(param, value, 0)
vowels = set(request.get("vowels", ""))

def phonemize(text):
    buf = ctypes.create_string_buffer(text.encode("utf-8"))
    ptr = ctypes.c_char_p(ctypes.addressof(buf))
    out = []
    for _ in range(64):  # one clause per call
        if not ptr.value:
            break
        res = lib.espeak_TextToPhonemes(ctypes.byref(ptr), 1, 0)
        if res:
            out.append(res.decode("ascii", "replace"))
    return "".join("".join(out).split()).replace("[", "").replace("]", "")

def speak(text):
    chunks.clear()
    events.clear()
    data = text.encode("utf-8")
    lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0x1 | 0x100, None, None)
    lib.espeak_Synchronize()
    audio = b"".join(chunks)
    # Events come in order: a word, then its phonemes; a phoneme ends where the next
    # starts. Names starting with "_" are pauses.
    words, marks = [], []
    for kind, sample, name in events:
        if kind == 1:
            words.append([])
        elif words:
            marks.append((len(words) - 1, sample, name))
    ends = [m[1] for m in marks[1:]] + [len(audio) // 2]
    for (word, start, name), end in zip(marks, ends):
        if name and not name.startswith("_"):
            words[word].append([name, start, max(start, end)])
    while words and not words[-1]:
        words.pop()  # a word event just before the final pause
    return audio, words

said = []
for word in request.get("words", []):
    if "phonemes" in word:
        said.append(word["phonemes"])
        continue
    found = "@"
    for text in word.get("texts", []):
        ph = phonemize(text) if text else ""
        if any(c in vowels for c in ph):
            found = ph
            break
    said.append(found)
audio, words = speak("[[" + " ".join(said) + "]]") if said else (b"", [])
one_by_one = len(words) != len(said)
if one_by_one:  # not one word event per word: speak them one by one
    pieces, words, offset = [], [], 0
    for ph in said:
        piece, ws = speak("[[" + ph + "]]")
        words.append([[n, a + offset, b + offset] for w in ws for n, a, b in w])
        pieces.append(piece)
        offset += len(piece) // 2
    audio = b"".join(pieces)
reply({"sample_rate": rate, "said": said, "words": words, "one_by_one": one_by_one}, audio)
"""


class _EspeakWorker:
    """Speaks through espeak-ng in a child process, a fresh one for every phrase.

    A fresh process because libespeak-ng carries state from one utterance to the next (its
    pitch flutter and waveform phase), which moves phoneme boundaries by a few samples:
    the same phrase would not sound the same twice. One spare child is started ahead of
    need, so a render does not wait for its start-up. Every call has a timeout.
    """

    def __init__(self) -> None:
        self._children = SpareChild(self._spawn)

    @staticmethod
    def _spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-I", "-S", "-c", _WORKER_SOURCE],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def run(self, voice: str, words: list[dict[str, Any]]
            ) -> tuple[dict[str, Any], np.ndarray]:
        """Speak ``words`` (see ``_WORKER_SOURCE``): the reply's header and its audio
        (float64, -1..1, at ``header["sample_rate"]``)."""
        proc = self._children.take()
        request = json.dumps({"voice": voice, "params": _ESPEAK_PARAMS,
                              "vowels": "".join(sorted(_ESPEAK_VOWEL_START)), "words": words})
        try:
            out, err = proc.communicate(request.encode(), timeout=_ESPEAK_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise TimeoutError(f"espeak-ng took over {_ESPEAK_TIMEOUT:.0f} s") from None
        head, _, body = out.partition(b"\n")
        try:
            header = json.loads(head)
        except ValueError:
            raise RuntimeError(f"the espeak-ng child failed (exit {proc.returncode}): "
                               f"{err.decode(errors='replace')[-800:]}") from None
        if header.get("error") == "missing":
            raise EspeakNotFoundError(f"espeak-ng is unavailable ({header.get('message')}): "
                                      f"{_INSTALL_HINT}")
        if header.get("error") == "voice":
            raise ValueError(f"espeak-ng has no voice {voice!r} (see espeak-ng --voices)")
        audio = np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.float64)
        return header, audio / 32768.0

    def close(self) -> None:
        """Stop the spare child (it would also exit by itself when this process ends)."""
        self._children.close()


# --------------------------------------------------------------------------------------
# phonemes


def arpabet_to_espeak(phonemes: tuple[str, ...] | list[str], stressed: bool) -> str | None:
    """A syllable's ARPAbet phonemes as one espeak-ng phoneme word (``l ay t`` stressed ->
    ``'laIt``); case and stress digits are ignored. None if a symbol is not ARPAbet or
    there are none."""
    phones = [p.lower().rstrip("012") for p in phonemes]
    if not phones or not all(p in ARPABET_TO_ESPEAK for p in phones):
        return None
    mapped = [(_STRESSED.get(p, ARPABET_TO_ESPEAK[p]) if stressed else ARPABET_TO_ESPEAK[p])
              for p in phones]
    return ("'" if stressed else "") + "".join(mapped)


def _groups(syllables: tuple[SungSyllable, ...]) -> list[list[int]]:
    """Syllable indices spoken as one espeak-ng word each: a syllable with ARPAbet phonemes
    alone; consecutive syllables of one word without them together (espeak-ng then
    pronounces the word from its spelling and the syllables are split by its vowels)."""
    groups: list[list[int]] = []
    prev_open = False
    for i, syl in enumerate(syllables):
        if arpabet_to_espeak(syl.phonemes, syl.stressed) is not None:
            groups.append([i])
            prev_open = False
            continue
        same_word = i > 0 and not syl.word_start and syllables[i - 1].word == syl.word
        if prev_open and same_word:
            groups[-1].append(i)
        else:
            groups.append([i])
        prev_open = True
    return groups


def _letters(text: str) -> str:
    return " ".join("".join(c if c.isalpha() or c == "'" else " " for c in text).split())


def _espeak_word(syllables: tuple[SungSyllable, ...], group: list[int]) -> dict[str, Any]:
    """What the espeak-ng child says for one group (see :func:`_groups`): mapped ARPAbet
    (``{"phonemes": ...}``), or texts for espeak-ng to pronounce by its own rules, the first
    that has a vowel winning: the whole word, then the group's syllables' text (a schwa
    when neither has a vowel)."""
    first = syllables[group[0]]
    if len(group) == 1:
        mapped = arpabet_to_espeak(first.phonemes, first.stressed)
        if mapped is not None:
            return {"phonemes": mapped}
    whole_word = first.word_start and (
        group[-1] + 1 == len(syllables) or syllables[group[-1] + 1].word_start)
    texts = [_letters(first.word)] if whole_word else []
    texts.append(_letters("".join(syllables[i].text for i in group)))
    return {"texts": texts}


class EspeakTeacher:
    """espeak-ng as a teacher (see :mod:`engine.voice.teachers`): its library in a fresh
    child process per phrase, phoneme times from its events."""

    name = "espeak"
    vowel_initials = "".join(sorted(_ESPEAK_VOWEL_START))

    def __init__(self, voice: str = "en-us") -> None:
        self.voice = voice
        self._worker = _EspeakWorker()
        self._worker.run(voice, [])  # fail early on a missing espeak-ng or an unknown voice

    def close(self) -> None:
        self._worker.close()

    def speak(self, syllables: tuple[SungSyllable, ...], groups: list[list[int]]) -> Speech:
        header, audio = self._worker.run(self.voice, [_espeak_word(syllables, g)
                                                      for g in groups])
        return Speech(audio, int(header["sample_rate"]), header["words"])


def load_teacher(name: str = "auto", voice: str = "en-us") -> Teacher:
    """The named teacher (``festival``, ``flite`` or ``espeak``); ``auto``: the first of
    :data:`~engine.voice.teachers.TEACHER_ORDER` that is installed, espeak-ng last.
    ``voice`` is espeak-ng's voice (the others have one each). Raises
    :class:`TeacherNotFoundError` (:class:`EspeakNotFoundError` for espeak-ng) when the
    named one, or for ``auto`` every one, is missing."""
    if name == "espeak":
        return EspeakTeacher(voice)
    if name != "auto":
        return make_teacher(name)
    missing = []
    for candidate in TEACHER_ORDER:
        try:
            return EspeakTeacher(voice) if candidate == "espeak" else make_teacher(candidate)
        except TeacherNotFoundError as err:
            if candidate == "espeak":
                raise EspeakNotFoundError(f"no speech synthesizer for the fallback singer "
                                          f"({'; '.join(missing)}; {err})") from err
            missing.append(str(err))
    raise AssertionError("unreachable: espeak is the last teacher")


@dataclass(frozen=True)
class _Spoken:
    """One syllable's span in the spoken audio, in seconds."""

    start: float
    vowel_start: float
    vowel_end: float
    end: float


def _split_word(phones: list[list[Any]], k: int, sr: int,
                vowel_initials: str | set[str] = _ESPEAK_VOWEL_START) -> list[_Spoken | None]:
    """Split one spoken word (its phonemes as ``[name, start, end]``, in samples at ``sr``)
    into ``k`` syllables at its vowels.

    With at least ``k`` vowel phonemes, syllable j gets the j-th of k even runs of them; the
    consonants between two syllables' vowels go to the next's onset, but for half (rounded
    down) of those beyond the first, which close the first syllable (``wi-nter``, ``mon-strous``).
    With fewer vowels, neighbouring syllables share one (the same stretch of speech is sung
    twice); with none, every syllable is the whole word.
    """
    if not phones:
        return [None] * k
    vowels = [i for i, p in enumerate(phones) if p[0][0] in vowel_initials]
    m = len(vowels)
    if m == 0:
        whole = _Spoken(phones[0][1] / sr, phones[0][1] / sr, phones[-1][2] / sr,
                        phones[-1][2] / sr)
        return [whole] * k
    first = [vowels[(j * m) // k] for j in range(k)]
    last = [vowels[max((j * m) // k, ((j + 1) * m) // k - 1)] for j in range(k)]
    a, b = [0] * k, [len(phones)] * k
    for j in range(k - 1):
        if last[j] < first[j + 1]:
            cut = last[j] + 1 + max(0, first[j + 1] - last[j] - 2) // 2
            b[j] = a[j + 1] = cut
        else:  # shared vowel
            b[j], a[j + 1] = last[j] + 1, first[j + 1]
    return [_Spoken(phones[a[j]][1] / sr, phones[first[j]][1] / sr,
                    phones[last[j]][2] / sr, phones[b[j] - 1][2] / sr) for j in range(k)]


# --------------------------------------------------------------------------------------
# the singer


@dataclass(frozen=True)
class _Placed:
    """One syllable's target times in song seconds."""

    onset_start: float
    vowel_start: float
    vowel_end: float
    coda_end: float


class FallbackSinger:
    """Sings a :class:`PhrasePlan` with a speech synthesizer's voice (its *teacher*),
    re-timed and re-pitched by WORLD.

    ``teacher``: ``auto`` (Flite's slt voice, else Festival's HTS voice, else espeak-ng: see
    :mod:`engine.voice.teachers`), or one of ``festival``, ``flite``, ``espeak``.
    ``voice`` is an espeak-ng voice name (``en-us``, ``en``, or with a variant such as
    ``en-us+f3``), used when espeak-ng is the teacher; ``sample_rate`` the output rate
    (44100 by default; any rate works). Thread-safe; deterministic for the same plan and
    tempo. Raises :class:`EspeakNotFoundError` at construction when no teacher is installed
    (:class:`~engine.voice.teachers.TeacherNotFoundError` when a named one is missing).
    """

    name = "fallback"

    def __init__(self, sample_rate: int = 44100, voice: str = "en-us",
                 teacher: str = "auto") -> None:
        if sample_rate < 16000:
            raise ValueError(f"sample_rate {sample_rate} too low: use 44100 or 48000")
        self.sample_rate = int(sample_rate)
        self.voice = voice
        _pw()  # fail early on a missing pyworld
        self.teacher = load_teacher(teacher, voice)
        self._finalizer = weakref.finalize(self, self.teacher.close)

    def close(self) -> None:
        """Stop the teacher's spare child process (also done when the singer is collected)."""
        self._finalizer()

    # -- public --------------------------------------------------------------------------

    def render(self, plan: PhrasePlan, tempo_bpm: float) -> SungAudio:
        """Sing ``plan`` at ``tempo_bpm``: float32 mono audio at ``self.sample_rate`` whose
        first sample plays at song time ``start_seconds`` (before the first note)."""
        if not tempo_bpm > 0:
            raise ValueError(f"tempo_bpm must be positive, got {tempo_bpm}")
        syllables = plan.syllables
        if not syllables:
            raise ValueError("the phrase has no syllables")
        for s in syllables:
            if not s.notes:
                raise ValueError(f"syllable {s.text!r} has no notes")
            if any(n.duration <= 0 for n in s.notes):
                raise ValueError(f"syllable {s.text!r} has a note of no duration")
        audio, spans, sr = self._speak(syllables)
        spb = 60.0 / tempo_bpm
        placed = _place(syllables, spans, spb)
        return self._synthesize(audio, sr, syllables, spans, placed, spb)

    # -- speech --------------------------------------------------------------------------

    def _speak(self, syllables: tuple[SungSyllable, ...]
               ) -> tuple[np.ndarray, list[_Spoken | None], int]:
        """The teacher's speech of the phrase and each syllable's span in it."""
        groups = _groups(syllables)
        speech = self.teacher.speak(syllables, groups)
        sr = speech.sample_rate
        spans: list[_Spoken | None] = []
        for group, phones in zip(groups, speech.words, strict=True):
            spans.extend(_split_word(phones, len(group), sr, self.teacher.vowel_initials))
        return speech.audio, spans, sr

    # -- WORLD ---------------------------------------------------------------------------

    def _synthesize(self, audio: np.ndarray, sr: int, syllables: tuple[SungSyllable, ...],
                    spans: list[_Spoken | None], placed: list[_Placed | None], spb: float
                    ) -> SungAudio:
        pw = _pw()
        x = np.ascontiguousarray(audio if len(audio) else np.zeros(sr // 10))
        f0, t = pw.dio(x, sr, f0_floor=50.0, f0_ceil=500.0, frame_period=FRAME_PERIOD_MS)
        f0 = pw.stonemask(x, f0, t, sr)
        n_src = len(f0)
        nucleus_src = np.zeros(n_src, dtype=bool)
        for sp_ in spans:
            if sp_ is not None:
                a = int(np.floor(sp_.vowel_start / _FRAME))
                b = int(np.ceil(sp_.vowel_end / _FRAME))
                nucleus_src[max(a, 0):min(b + 1, n_src)] = True
        f0 = _fill_unvoiced(f0, nucleus_src)
        sp = pw.cheaptrick(x, f0, t, sr)
        ap = pw.d4c(x, f0, t, sr)
        src_voiced = f0 > 0

        firsts = [p.onset_start for p in placed if p is not None]
        lasts = [p.coda_end for p in placed if p is not None]
        note_end = max(s.end for s in syllables) * spb
        t0 = (min(firsts) if firsts else syllables[0].start * spb) - _PRE_PAD
        t_end = max([*lasts, note_end]) + _TAIL_PAD
        n_out = int(np.ceil((t_end - t0) / _FRAME)) + 1
        times = t0 + np.arange(n_out) * _FRAME

        src_pos = np.full(n_out, np.nan)  # fractional source frame per output frame
        in_nucleus = np.zeros(n_out, dtype=bool)
        for sp_, pl in zip(spans, placed, strict=True):
            if sp_ is None or pl is None:
                continue
            _map(times, src_pos, pl.onset_start, pl.vowel_start, sp_.start, sp_.vowel_start)
            mask = _map_vowel(times, src_pos, pl.vowel_start, pl.vowel_end,
                              sp_.vowel_start, sp_.vowel_end)
            in_nucleus |= mask
            _map(times, src_pos, pl.vowel_end, pl.coda_end, sp_.vowel_end, sp_.end)

        mapped = ~np.isnan(src_pos)
        pos = np.clip(np.where(mapped, src_pos, 0.0), 0.0, n_src - 1.0)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, n_src - 1)
        w = (pos - i0)[:, None]
        log_sp = np.log(np.maximum(sp, 1e-20))
        sp_out = np.exp(log_sp[i0] * (1 - w) + log_sp[i1] * w)
        ap_out = ap[i0] * (1 - w) + ap[i1] * w
        voiced = mapped & (in_nucleus | src_voiced[np.rint(pos).astype(int)])

        sp_out *= (_edge_gain(mapped, max(1, int(round(_FADE / _FRAME)))) ** 2)[:, None]
        ap_out[~mapped] = 1.0

        f0_out = np.where(voiced, _melody_hz(times, syllables, placed, spb), 0.0)
        # WORLD synthesizes at espeak-ng's rate (there is nothing above its Nyquist to keep;
        # half the cost of synthesizing at 44.1 kHz), then a polyphase filter resamples.
        y = pw.synthesize(np.ascontiguousarray(f0_out),
                          np.ascontiguousarray(np.maximum(sp_out, 1e-16)),
                          np.ascontiguousarray(ap_out), sr, frame_period=FRAME_PERIOD_MS)
        if sr != self.sample_rate:
            g = math.gcd(self.sample_rate, sr)
            y = resample_poly(y, self.sample_rate // g, sr // g)
        n_samples = int(round((t_end - t0) * self.sample_rate))
        y = np.pad(y, (0, max(0, n_samples - len(y))))[:n_samples]
        peak = float(np.max(np.abs(y))) if len(y) else 0.0
        if peak > _PEAK:
            y = y * (_PEAK / peak)
        return SungAudio(samples=y.astype(np.float32), sample_rate=self.sample_rate,
                         start_seconds=float(t0))


# --------------------------------------------------------------------------------------
# timing, pitch and envelope helpers


def _place(syllables: tuple[SungSyllable, ...], spans: list[_Spoken | None], spb: float
           ) -> list[_Placed | None]:
    """Where each syllable's onset, nucleus and coda sound (module notes, step 3)."""
    n = len(syllables)
    starts = [s.start * spb for s in syllables]
    for a, b in zip(starts, starts[1:], strict=False):
        if b < a:
            raise ValueError("the phrase's syllables are not in time order")
    ends = [min(s.end * spb, starts[k + 1]) if k + 1 < n else s.end * spb
            for k, s in enumerate(syllables)]
    onset = [(sp.vowel_start - sp.start) if sp else 0.0 for sp in spans]
    coda = [(sp.end - sp.vowel_end) if sp else 0.0 for sp in spans]
    onset_len = list(onset)
    onset_len[0] = min(onset[0], _MAX_FIRST_ONSET)
    coda_len = [0.0] * n
    for k in range(n):
        length = ends[k] - starts[k]
        min_vowel = max(_MIN_VOWEL_SHARE * length, min(length, _MIN_VOWEL))
        gap = starts[k + 1] - ends[k] if k + 1 < n else 0.0
        nxt = onset[k + 1] if k + 1 < n else 0.0
        free = max(0.0, length - min_vowel + gap)
        cons = coda[k] + nxt
        scale = min(1.0, free / cons) if cons > 0 else 1.0
        coda_len[k] = min(coda[k] * scale, max(0.0, length - min_vowel))
        if k + 1 < n:
            onset_len[k + 1] = nxt * scale
    placed: list[_Placed | None] = []
    for k in range(n):
        if spans[k] is None:
            placed.append(None)
            continue
        next_onset = starts[k + 1] - onset_len[k + 1] if k + 1 < n else np.inf
        coda_end = min(ends[k], next_onset)
        vowel_end = max(starts[k], coda_end - coda_len[k])
        placed.append(_Placed(starts[k] - onset_len[k], starts[k], vowel_end, coda_end))
    return placed


def _map(times: np.ndarray, src_pos: np.ndarray, t_a: float, t_b: float, s_a: float,
         s_b: float) -> None:
    """Map output frames in [t_a, t_b) linearly onto source seconds [s_a, s_b)."""
    if t_b <= t_a or s_b <= s_a:
        return
    sel = (times >= t_a) & (times < t_b)
    src_pos[sel] = (s_a + (times[sel] - t_a) * (s_b - s_a) / (t_b - t_a)) / _FRAME


def _map_vowel(times: np.ndarray, src_pos: np.ndarray, t_a: float, t_b: float, s_a: float,
               s_b: float) -> np.ndarray:
    """Map a nucleus: natural-speed head, stretched hold, natural-speed tail (or linear
    compression when the note is shorter than the spoken vowel). Returns the frames."""
    sel = (times >= t_a) & (times < t_b)
    if t_b <= t_a:
        return sel
    src_len, tgt_len = max(s_b - s_a, _FRAME), t_b - t_a
    if tgt_len <= src_len:
        knots_t, knots_s = [t_a, t_b], [s_a, s_a + src_len]
    else:
        knots_t = [t_a, t_a + 0.2 * src_len, t_b - 0.6 * src_len, t_b]
        knots_s = [s_a, s_a + 0.2 * src_len, s_a + 0.4 * src_len, s_a + src_len]
    src_pos[sel] = np.interp(times[sel], knots_t, knots_s) / _FRAME
    return sel


def _edge_gain(mapped: np.ndarray, fade: int) -> np.ndarray:
    """1 inside mapped runs, ramping linearly over ``fade`` frames at each run's edges
    (and 0 outside), so that sound starts and stops without clicks."""
    gain = np.zeros(len(mapped))
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mapped.astype(np.int8), [0]))))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        k = np.arange(b - a)
        gain[a:b] = np.minimum(1.0, np.minimum(k + 1, b - a - k) / fade)
    return gain


def _fill_unvoiced(f0: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Give unvoiced frames inside nuclei an f0 interpolated from voiced ones, so that the
    envelope and aperiodicity analyses treat every vowel frame as voiced."""
    f0 = f0.copy()
    voiced = f0 > 0
    holes = inside & ~voiced
    if not holes.any():
        return f0
    idx = np.flatnonzero(voiced)
    if len(idx) == 0:
        f0[holes] = 120.0
    else:
        f0[holes] = np.interp(np.flatnonzero(holes), idx, f0[idx])
    return f0


def _melody_hz(times: np.ndarray, syllables: tuple[SungSyllable, ...],
               placed: list[_Placed | None], spb: float) -> np.ndarray:
    """The sung f0 at each output frame (module notes, step 4)."""
    changes: list[tuple[float, float]] = []
    prev_end = -np.inf
    for syl, pl in zip(syllables, placed, strict=True):
        for i, note in enumerate(syl.notes):
            at = note.start * spb
            if i == 0 and pl is not None:  # after a rest, the onset already has the pitch
                at = min(at, max(pl.onset_start, prev_end))
            changes.append((at, float(note.pitch)))
        prev_end = syl.end * spb
    changes.sort(key=lambda c: c[0])
    at = np.array([c[0] for c in changes])
    pitches = np.array([c[1] for c in changes])
    idx = np.clip(np.searchsorted(at, times, side="right") - 1, 0, len(pitches) - 1)
    midi = pitches[idx]
    width = max(1, int(round(_PORTAMENTO / _FRAME)))
    if width > 1:
        win = np.hanning(width + 2)[1:-1]
        win /= win.sum()
        padded = np.pad(midi, (width, width), mode="edge")
        midi = np.convolve(padded, win, mode="same")[width:-width]
    for syl in syllables:
        for note in syl.notes:
            start, dur = note.start * spb, note.duration * spb
            if dur < _VIBRATO_MIN_NOTE:
                continue
            sel = (times >= start + _VIBRATO_DELAY) & (times < start + dur)
            tt = times[sel] - (start + _VIBRATO_DELAY)
            depth = _VIBRATO_DEPTH * np.minimum(1.0, tt / _VIBRATO_RAMP)
            midi[sel] += depth * np.sin(2 * np.pi * _VIBRATO_RATE * tt)
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)
