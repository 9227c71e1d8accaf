"""The fallback singer's other teachers (Flite, Festival's HTS voice), for real: each sings a
phrase through WORLD, and WORLD's Harvest checks every note's pitch; a missing program falls
back cleanly (a real PATH without it, not a mock).

Measured here: 1-6 cents median per note for both teachers; the bound is 50.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.lyrics.phrase import SungSyllable
from engine.voice import fallback_singer as fs
from engine.voice import teachers
from tests.voice.test_fallback_singer import HOLD, MAX_CENTS, TEMPO, note_errors, rms, seconds

INSTALLED = {
    "flite": shutil.which("flite") is not None,
    "festival": shutil.which("festival") is not None and any(
        (Path(d) / "cmu_us_slt_arctic_hts").is_dir() for d in teachers._FESTIVAL_VOICE_DIRS),
}


@pytest.mark.parametrize("name", ["flite", "festival"])
def test_teacher_sings_on_pitch_and_time(name: str) -> None:
    if not INSTALLED[name]:
        pytest.skip(f"{name} is not installed (scripts/setup.sh)")
    singer = fs.FallbackSinger(teacher=name)
    try:
        assert singer.teacher.name == name
        audio = singer.render(HOLD, TEMPO)
        again = singer.render(HOLD, TEMPO)
    finally:
        singer.close()
    assert audio.sample_rate == 44100 and np.isfinite(audio.samples).all()
    for pitch, cents, voiced in note_errors(audio, HOLD):
        assert voiced > 0.5, f"{name}: note {pitch} is mostly unvoiced ({voiced:.0%})"
        assert cents < MAX_CENTS, f"{name}: note {pitch} off by {cents:.0f} cents"
    # the rest between "light" and "see" (beats 7.5-8.5) is quiet; the notes are not
    assert rms(audio, seconds(7.6), seconds(8.4)) < 0.1 * rms(audio, seconds(4.1), seconds(5))
    assert np.array_equal(audio.samples, again.samples), "renders must be deterministic"


@pytest.mark.parametrize("name", ["flite", "festival"])
def test_word_not_in_cmudict_still_sings(name: str) -> None:
    if not INSTALLED[name]:
        pytest.skip(f"{name} is not installed (scripts/setup.sh)")
    teacher = teachers.make_teacher(name)
    try:
        word = (SungSyllable("zor", "zorblax", (), (), True, True),
                SungSyllable("blax", "zorblax", (), (), False, False))
        speech = teacher.speak(word, [[0, 1]])
    finally:
        teacher.close()
    names = [p[0] for p in speech.words[0]]
    assert names and any(n[0] in "aeiou" for n in names), names
    assert len(speech.audio) > 0.2 * speech.sample_rate


def test_group_syllables_spells_the_plan() -> None:
    sylls = (SungSyllable("light", "light", ("L", "AY1", "T"), (), True, True),
             SungSyllable("zor", "zorblax", (), (), True, True),
             SungSyllable("blax", "zorblax", (), (), False, False))
    assert teachers.group_syllables(sylls, [0]) == [(["l", "ay", "t"], True)]
    spelled = teachers.group_syllables(sylls, [1, 2])
    assert len(spelled) == 2 and spelled[0][1] and not spelled[1][1]
    assert [teachers.lexicon_word(k) for k in (0, 25, 26)] == ["encorea", "encorez",
                                                                "encoreaa"]


def test_missing_programs_fall_back_to_espeak(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))  # a real PATH with neither flite nor festival
    with pytest.raises(teachers.TeacherNotFoundError, match="apt-get install"):
        teachers.make_teacher("flite")
    with pytest.raises(teachers.TeacherNotFoundError, match="apt-get install"):
        teachers.make_teacher("festival")
    singer = fs.FallbackSinger()
    try:
        assert singer.teacher.name == "espeak"
        audio = singer.render(HOLD, TEMPO)
    finally:
        singer.close()
    assert max(c for _, c, _ in note_errors(audio, HOLD)) < MAX_CENTS


def test_missing_festival_voice_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                         ) -> None:
    if shutil.which("festival") is None:
        pytest.skip("festival is not installed")
    monkeypatch.setattr(teachers, "_FESTIVAL_VOICE_DIRS", (str(tmp_path),))
    with pytest.raises(teachers.TeacherNotFoundError, match="festvox-us-slt-hts"):
        teachers.FestivalTeacher()


def test_unknown_teacher_is_refused() -> None:
    with pytest.raises(ValueError, match="no teacher 'mbrola'"):
        fs.FallbackSinger(teacher="mbrola")


def test_doctor_names_the_teacher_and_what_is_missing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.doctor import check_teacher

    if any(INSTALLED.values()):
        found = check_teacher(needed=True)
        assert found.status == "OK" and found.detail.split()[0] in INSTALLED, found.line()
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = check_teacher(needed=True)
    assert missing.status == "WARN" and "flite" in missing.fix, missing.line()
    assert "espeak-ng" in missing.detail or "none" in missing.detail
    assert check_teacher(needed=False).status == "OK"
