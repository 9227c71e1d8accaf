"""The fallback singer, for real: espeak-ng speaks, WORLD re-pitches, WORLD's Harvest listens.

These tests pin the espeak-ng teacher (``teacher="espeak"``); the other teachers are tested
in ``test_teachers.py``.

Pitch is judged per note: over the voiced frames inside the note (its first and last 50 ms
left out for portamento), the median absolute error in cents against the note's pitch.
Measured here: 0-12 cents per note; the bound is 50.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pytest

from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.voice import fallback_singer as fs
from engine.voice.singer import Singer, SungAudio

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed (scripts/setup.sh)")

TEMPO = 120.0  # a beat is 0.5 s
MAX_CENTS = 50.0


def syl(text: str, phonemes: str, notes: list[tuple[int, float, float]], *,
        stressed: bool = True, word: str | None = None, word_start: bool = True
        ) -> SungSyllable:
    return SungSyllable(text=text, word=word or text, phonemes=tuple(phonemes.split()),
                        notes=tuple(SungNote(p, s, d) for p, s, d in notes),
                        stressed=stressed, word_start=word_start)


def plan(*syllables: SungSyllable) -> PhrasePlan:
    return PhrasePlan(bar=1, section="verse", text=" ".join(s.text for s in syllables),
                      syllables=syllables)


# "hold the light" on C4 E4 G4 (60 64 67), "light" a melisma G4 -> F4, after a rest "see".
HOLD = plan(
    syl("hold", "hh ow l d", [(60, 4.0, 1.0)]),
    syl("the", "dh ah", [(64, 5.0, 0.5)], stressed=False),
    syl("light", "l ay t", [(67, 5.5, 1.0), (65, 6.5, 1.0)]),
    syl("see", "s iy", [(62, 9.0, 1.5)]),  # after a rest of 1.5 beats (0.75 s)
)


@pytest.fixture(scope="module")
def singer() -> Iterator[fs.FallbackSinger]:
    s = fs.FallbackSinger(teacher="espeak")
    yield s
    s.close()


@pytest.fixture(scope="module")
def hold_audio(singer: fs.FallbackSinger) -> SungAudio:
    return singer.render(HOLD, TEMPO)


def seconds(beat: float) -> float:
    return beat * 60.0 / TEMPO


def pitch_track(audio: SungAudio) -> tuple[np.ndarray, np.ndarray]:
    """Harvest's f0 (Hz, 0 = unvoiced) and each frame's song time."""
    pw = fs._pw()
    f0, t = pw.harvest(audio.samples.astype(np.float64), audio.sample_rate,
                       f0_floor=70.0, f0_ceil=1000.0, frame_period=5.0)
    return f0, t + audio.start_seconds


def note_errors(audio: SungAudio, p: PhrasePlan) -> list[tuple[int, float, float]]:
    """(pitch, median |cents|, voiced fraction) for every note of ``p``."""
    f0, t = pitch_track(audio)
    out = []
    for s in p.syllables:
        for n in s.notes:
            inside = (t >= seconds(n.start) + 0.05) & (t < seconds(n.end) - 0.05)
            voiced = inside & (f0 > 0)
            target = 440.0 * 2 ** ((n.pitch - 69) / 12)
            cents = np.abs(1200 * np.log2(f0[voiced] / target))
            out.append((n.pitch, float(np.median(cents)) if len(cents) else np.inf,
                        voiced.sum() / max(inside.sum(), 1)))
    return out


def rms(audio: SungAudio, a: float, b: float) -> float:
    """RMS of the audio between song times a and b."""
    i = max(0, int(round((a - audio.start_seconds) * audio.sample_rate)))
    j = int(round((b - audio.start_seconds) * audio.sample_rate))
    seg = audio.samples[i:j].astype(np.float64)
    return float(np.sqrt(np.mean(seg ** 2))) if len(seg) else 0.0


def test_is_a_singer(singer: fs.FallbackSinger) -> None:
    assert isinstance(singer, Singer)
    assert singer.name == "fallback" and singer.sample_rate == 44100


def test_audio_covers_the_phrase_from_before_its_first_note(hold_audio: SungAudio) -> None:
    a = hold_audio
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1 and a.sample_rate == 44100
    assert np.isfinite(a.samples).all()
    first, last = seconds(HOLD.start), seconds(HOLD.end)
    assert first - 0.5 < a.start_seconds <= first  # "h" and a little pre-roll
    assert a.end_seconds >= last
    assert 0.05 < np.max(np.abs(a.samples)) <= 10 ** (-1 / 20) + 1e-6  # peak-limited


def test_every_note_sounds_on_pitch(hold_audio: SungAudio) -> None:
    errors = note_errors(hold_audio, HOLD)
    print("per note (pitch, median |cents|, voiced fraction):",
          [(p, round(c, 1), round(v, 2)) for p, c, v in errors])
    for pitch, cents, voiced in errors:
        assert voiced > 0.6, f"note {pitch} mostly unvoiced ({voiced:.2f})"
        assert cents <= MAX_CENTS, f"note {pitch} off by {cents:.1f} cents"
    for s in HOLD.syllables:
        for n in s.notes:
            assert rms(hold_audio, seconds(n.start), seconds(n.end)) > 0.02


def test_melisma_moves_within_the_vowel(hold_audio: SungAudio) -> None:
    f0, t = pitch_track(hold_audio)

    def median_hz(a: float, b: float) -> float:
        sel = (t >= a) & (t < b) & (f0 > 0)
        return float(np.median(f0[sel]))

    g4, f4 = median_hz(2.8, 3.2), median_hz(3.3, 3.6)  # "light": 67 then 65
    assert abs(1200 * np.log2(g4 / 392.0)) < MAX_CENTS
    assert abs(1200 * np.log2(f4 / 349.23)) < MAX_CENTS


def test_rest_and_pre_roll_are_quiet(hold_audio: SungAudio) -> None:
    sung = rms(hold_audio, seconds(5.5), seconds(7.5))
    rest = rms(hold_audio, seconds(7.5) + 0.15, seconds(9.0) - 0.3)  # before "s" of "see"
    lead_in = rms(hold_audio, hold_audio.start_seconds, hold_audio.start_seconds + 0.03)
    assert rest < 0.01 * sung
    assert lead_in < 0.05 * sung


def test_vowel_lands_on_the_beat_consonant_before_it(hold_audio: SungAudio) -> None:
    f0, t = pitch_track(hold_audio)
    beat = seconds(9.0)  # "see" (62) after the rest: "s" is unvoiced, "iy" voiced
    # The vowel starts where the pitch is within a semitone of the note for 20 ms on end
    # (Harvest finds a little periodicity in WORLD's resynthesized "s", far off the note).
    near = (t > beat - 0.25) & (np.abs(1200 * np.log2(np.maximum(f0, 1) / 293.66)) < 100)
    run = np.convolve(near, np.ones(4), mode="full")[: len(near)] == 4
    vowel_starts = float(t[np.argmax(run)] - 0.015)
    assert abs(vowel_starts - beat) < 0.035, f"vowel starts at {vowel_starts - beat:+.3f} s"
    sung = rms(hold_audio, beat, beat + 0.5)
    assert rms(hold_audio, beat - 0.08, beat - 0.01) > 0.05 * sung  # the "s", before the beat


def test_deterministic(singer: fs.FallbackSinger, hold_audio: SungAudio) -> None:
    again = singer.render(HOLD, TEMPO)
    assert again.start_seconds == hold_audio.start_seconds
    assert np.array_equal(again.samples, hold_audio.samples)


def test_word_not_in_cmudict_still_sings(singer: fs.FallbackSinger) -> None:
    # No phonemes at all: espeak-ng pronounces "snorgleblat" and it is split at its vowels.
    p = plan(
        syl("snor", "", [(62, 4.0, 1.0)], word="snorgleblat"),
        syl("gle", "", [(64, 5.0, 0.5)], word="snorgleblat", word_start=False),
        syl("blat", "", [(60, 5.5, 1.5)], word="snorgleblat", word_start=False),
        syl("zzxq", "", [(67, 8.0, 1.0)]),  # nothing pronounceable: still a sung vowel
    )
    audio = singer.render(p, TEMPO)
    errors = note_errors(audio, p)
    print("unknown word, per note:", [(q, round(c, 1), round(v, 2)) for q, c, v in errors])
    for pitch, cents, _ in errors:
        assert cents <= MAX_CENTS, f"note {pitch} off by {cents:.1f} cents"
    for s in p.syllables:
        assert rms(audio, seconds(s.start), seconds(s.end)) > 0.02


def test_other_output_rate(hold_audio: SungAudio) -> None:
    singer48 = fs.FallbackSinger(sample_rate=48000, teacher="espeak")
    try:
        p = plan(syl("go", "g ow", [(69, 4.0, 1.0)]), syl("home", "hh ow m", [(64, 5.0, 1.0)]))
        audio = singer48.render(p, TEMPO)
    finally:
        singer48.close()
    assert audio.sample_rate == 48000
    for pitch, cents, _ in note_errors(audio, p):
        assert cents <= MAX_CENTS, f"note {pitch} off by {cents:.1f} cents at 48 kHz"


def test_bad_input_is_refused(singer: fs.FallbackSinger) -> None:
    with pytest.raises(ValueError, match="tempo"):
        singer.render(HOLD, 0)
    with pytest.raises(ValueError, match="no syllables"):
        singer.render(PhrasePlan(bar=0, section="verse", text="", syllables=()), TEMPO)
    with pytest.raises(ValueError, match="time order"):
        singer.render(plan(syl("a", "ah", [(60, 4, 1)]), syl("b", "b iy", [(60, 2, 1)])),
                      TEMPO)
    with pytest.raises(ValueError, match="no voice"):
        fs.FallbackSinger(voice="no-such-voice", teacher="espeak")


def test_missing_espeak_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real child process, pointed at a library that does not exist.
    source = fs._WORKER_SOURCE.replace('"libespeak-ng.so.1"', '"libespeak-ng-absent.so.9"')
    source = source.replace('ctypes.util.find_library("espeak-ng")', "None")
    assert source != fs._WORKER_SOURCE
    monkeypatch.setattr(fs, "_WORKER_SOURCE", source)
    with pytest.raises(fs.EspeakNotFoundError, match="apt-get install"):
        fs.FallbackSinger(teacher="espeak")


def test_arpabet_spelling() -> None:
    assert fs.arpabet_to_espeak(("L", "AY1", "T"), stressed=True) == "'laIt"
    assert fs.arpabet_to_espeak(("dh", "ah"), stressed=False) == "D@"
    assert fs.arpabet_to_espeak(("k", "ah", "t"), stressed=True) == "'kVt"
    assert fs.arpabet_to_espeak(("x", "ah"), stressed=True) is None
    assert fs.arpabet_to_espeak((), stressed=True) is None


def test_split_word_at_vowels() -> None:
    # "winter": w I n t 3 -> "wi" + "nter" (consonants go before the next beat), but
    # "monstrous" m A n s t r @ s -> "mon" + "strous"; two vowels for three syllables share.
    phones = [["w", 0, 10], ["I", 10, 30], ["n", 30, 40], ["t", 40, 50], ["3", 50, 80]]
    a, b = fs._split_word(phones, 2, sr=10)
    assert (a.start, a.vowel_start, a.vowel_end, a.end) == (0.0, 1.0, 3.0, 3.0)
    assert (b.start, b.vowel_start, b.vowel_end, b.end) == (3.0, 5.0, 8.0, 8.0)
    mon = [["m", 0, 1], ["A", 1, 2], ["n", 2, 3], ["s", 3, 4], ["t", 4, 5], ["r", 5, 6],
           ["@", 6, 7], ["s", 7, 8]]
    a, b = fs._split_word(mon, 2, sr=1)
    assert (a.end, b.start) == (3.0, 3.0)
    spans = fs._split_word(phones, 3, sr=10)
    assert [s.vowel_start for s in spans] == [1.0, 1.0, 5.0]
    assert fs._split_word([], 2, sr=10) == [None, None]
