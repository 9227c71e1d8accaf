"""Offline FluidSynth rendering with the real library and TimGM6mb."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engine.audio.fluid_render import (
    FLUID_BLOCK,
    FluidRenderer,
    SoundFontNotFoundError,
    SynthEvent,
    note_events,
    soft_clip,
    write_wav,
)
from engine.music.notes import Note

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
RATE = 44100
OCARINA = 79  # GM program 80: a near-sine tone, so the fundamental is the strongest partial
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not SOUNDFONT.is_file(),
                                reason="TimGM6mb.sf2 missing (apt-get install timgm6mb-soundfont)")


@pytest.fixture(scope="module")
def renderer():
    with FluidRenderer(SOUNDFONT, sample_rate=RATE) as fr:
        yield fr


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    n = len(x)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n))
    k = int(np.argmax(spectrum[1:])) + 1
    a, b, c = np.log(spectrum[k - 1:k + 2] + 1e-20)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / (8 * n)


def test_middle_c_is_261_6_hz(renderer):
    renderer.program(0, OCARINA)
    audio = renderer.render([SynthEvent.note_on(0.0, 0, 60, 100),
                             SynthEvent.note_off(0.5, 0, 60)], 0.5)
    assert audio.shape == (RATE // 2, 2) and audio.dtype == np.float32
    assert renderer.float_output
    assert np.sqrt(np.mean(audio ** 2)) > 0.01
    assert abs(dominant_frequency(audio.mean(axis=1), RATE) - 261.63) < 3.0


def test_silent_before_note_on_and_sounding_within_a_block(renderer):
    renderer.program(0, OCARINA)
    onset = 10_000  # not on a 64-frame boundary
    audio = renderer.render([SynthEvent.note_on(onset / RATE, 0, 60, 100)], 0.5)
    level = np.abs(audio).max(axis=1)
    assert level[:onset].max() < 1e-6  # reverb keeps ~1e-8 of anti-denormal noise
    first = int(np.argmax(level > 1e-5))
    assert onset <= first <= onset + 2 * FLUID_BLOCK


def test_drums_on_channel_10_give_a_transient(renderer):
    onset = int(0.1 * RATE)
    audio = renderer.render([SynthEvent.note_on(0.1, 9, 38, 110)], 0.5)  # snare, no program
    level = np.abs(audio).max(axis=1)
    assert level[:onset].max() < 1e-6
    peak_at = int(np.argmax(level))
    assert onset <= peak_at < onset + int(0.02 * RATE)
    assert level.max() > 0.1
    early = np.sqrt(np.mean(audio[onset:onset + 2205] ** 2))
    late = np.sqrt(np.mean(audio[-4410:] ** 2))
    assert late < 0.05 * early


def test_bank_128_makes_any_channel_a_drum_channel(renderer):
    kit = renderer.render([SynthEvent.note_on(0.05, 9, 38, 110)], 0.3)
    renderer.program(3, 0, bank=128)
    on_ch4 = renderer.render([SynthEvent.note_on(0.05, 3, 38, 110)], 0.3)
    renderer.program(3, 0)
    piano = renderer.render([SynthEvent.note_on(0.05, 3, 38, 110)], 0.3)
    assert np.array_equal(kit, on_ch4)
    assert not np.array_equal(kit, piano)


def test_program_events_and_tuples(renderer):
    renderer.program(0, 0)
    events = [(0.0, "program", 0, OCARINA, -1), (0.0, "note_on", 0, 60, 100)]
    via_event = renderer.render(events, 0.25)
    renderer.program(0, OCARINA)
    direct = renderer.render([SynthEvent.note_on(0.0, 0, 60, 100)], 0.25)
    assert np.array_equal(via_event, direct)
    renderer.program(0, 0)
    renderer.render(events, 0.05)  # a program event lasts for its render only
    piano = renderer.render([SynthEvent.note_on(0.0, 0, 60, 100)], 0.25)
    assert not np.array_equal(piano, direct)
    with pytest.raises(ValueError, match="kind"):
        renderer.render([(0.0, "sysex", 0, 1, 2)], 0.1)
    with pytest.raises(ValueError, match="out of range"):
        SynthEvent.note_on(0.0, 0, 128, 100)
    with pytest.raises(ValueError, match="time"):
        SynthEvent.note_on(-0.1, 0, 60, 100)


PIECE = [(0.0, "program", 0, 0, -1), (0.0, "note_on", 0, 60, 96), (0.05, "note_on", 9, 36, 120),
         (0.1, "cc", 0, 91, 90), (0.2, "note_on", 0, 64, 80), (0.3, "note_on", 9, 38, 110),
         (0.45, "note_off", 0, 60, 0), (0.5, "note_off", 0, 64, 0),
         (0.55, "note_on", 0, 67, 70)]


def test_deterministic_in_process_and_across_processes(renderer):
    first = hashlib.sha256(renderer.render(PIECE, 0.8).tobytes()).hexdigest()
    renderer.render([SynthEvent.note_on(0.0, 0, 72, 127)], 0.1337)  # leave state behind
    assert hashlib.sha256(renderer.render(PIECE, 0.8).tobytes()).hexdigest() == first
    script = textwrap.dedent(f"""
        import hashlib
        from engine.audio.fluid_render import FluidRenderer
        with FluidRenderer({str(SOUNDFONT)!r}, sample_rate={RATE}) as fr:
            print(hashlib.sha256(fr.render({PIECE!r}, 0.8).tobytes()).hexdigest())
    """)
    hashes = [subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                             text=True, check=True, timeout=120).stdout.strip().splitlines()[-1]
              for _ in range(2)]
    assert hashes == [first, first]


def test_missing_soundfont_says_how_to_fix(tmp_path):
    with pytest.raises(SoundFontNotFoundError) as info:
        FluidRenderer(tmp_path / "nope.sf2")
    message = str(info.value)
    assert "apt-get install timgm6mb-soundfont" in message
    assert "[audio]" in message and "nope.sf2" in message
    assert isinstance(info.value, FileNotFoundError)


def test_not_a_soundfont(tmp_path):
    bogus = tmp_path / "bogus.sf2"
    bogus.write_bytes(b"RIFF nothing here")
    with pytest.raises(ValueError, match="SoundFont"):
        FluidRenderer(bogus)


def test_note_events_apply_humanize_offsets():
    notes = [Note(0, 60, 4, 100), Note(4, 62, 8, 90)]
    events = note_events([(notes[0], 0.01), (notes[1], -0.5)], bpm=120, channel=2)
    assert [(e.kind, e.channel, e.data1) for e in events] == [
        ("note_on", 2, 60), ("note_off", 2, 60), ("note_on", 2, 62), ("note_off", 2, 62)]
    assert events[0].time == pytest.approx(0.01) and events[1].time == pytest.approx(0.51)
    assert events[2].time == 0.0  # clamped
    assert [e.time for e in note_events(notes, bpm=120, channel=0)] == [0.0, 0.5, 0.5, 1.0]


def test_write_wav_is_peak_safe(tmp_path):
    t = np.arange(RATE // 10) / RATE
    quiet = 0.5 * np.sin(2 * np.pi * 440 * t)
    loud = 3.0 * np.sin(2 * np.pi * 440 * t)
    audio = np.stack([quiet, loud], axis=1).astype(np.float32)
    path = tmp_path / "out.wav"
    write_wav(path, audio, RATE)
    back, rate = soundfile.read(path, dtype="float32")
    assert rate == RATE and back.shape == audio.shape
    assert soundfile.info(str(path)).subtype == "PCM_16"
    assert np.abs(back[:, 0] - audio[:, 0]).max() < 1e-4  # below the knee: unchanged
    assert 0.9 < np.abs(back[:, 1]).max() <= 0.98 + 1 / 32768
    assert np.abs(soft_clip(np.array([0.95, -50.0]))).max() <= 0.98
    with pytest.raises(ValueError, match="NaN"):
        write_wav(path, np.array([0.0, np.nan]), RATE)


def test_callback_functions_play_exactly_what_the_checked_path_plays():
    """The audio callback's GIL-keeping FluidSynth calls (PyDLL) give the same samples as
    the ordinary methods, for notes, controllers and pitch bends sent between blocks."""
    events = [(0, "note_on", 0, 60, 100), (300, "cc", 0, 7, 64), (500, "pitch_bend", 0, -2048, 0),
              (700, "note_on", 0, 64, 0), (700, "note_on", 9, 36, 110), (900, "note_off", 0, 60, 0)]

    def play(functions: bool) -> tuple[np.ndarray, int]:
        with FluidRenderer(SOUNDFONT, sample_rate=RATE) as fr:
            fr.program(0, OCARINA)
            if functions:
                render_into, send, voices = fr.callback_functions()
            else:
                render_into, send, voices = fr.render_into, fr.send, fr.active_voices
            out = np.zeros((1200, 2), dtype=np.float32)
            position = 0
            for frame, kind, channel, data1, data2 in events:
                render_into(out.ctypes.data, position, frame - position)
                position = frame
                send(kind, channel, data1, data2)
            render_into(out.ctypes.data, position, len(out) - position)
            return out, voices()

    checked, checked_voices = play(False)
    held, held_voices = play(True)
    assert np.sqrt(np.mean(checked ** 2)) > 0.01  # it played
    assert checked_voices > 0 and held_voices == checked_voices
    np.testing.assert_array_equal(held, checked)
