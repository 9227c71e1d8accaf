"""Encore's own voice (export/voice_*.py): a bank exported from a tiny random model loads and
sings through the unchanged DiffSinger runner; the shipped bank, when there is one, too.

Also: the ONNX acoustic graph (its Euler loop is an ONNX Loop over the ``steps`` input)
matches the PyTorch model, ``steps`` and ``depth`` change the mel, the teacher data lines
up on the runner's frame grid, and the vocoder's sine excitation sits at the f0 it is given.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable  # noqa: E402
from engine.voice.diffsinger import DiffSingerRunner, RenderSettings  # noqa: E402
from engine.voice.voicebank import load_voicebank  # noqa: E402
from export import voice_data as vd  # noqa: E402
from export.voice_acoustic import AcousticConfig, AcousticModel, export_onnx  # noqa: E402
from export.voice_export import write_bank  # noqa: E402
from export.voice_vocoder import Vocoder, VocoderConfig  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[2] / "models_onnx" / "encore_voice"


def syl(text: str, phonemes: str, pitch: int, start: float, dur: float,
        word_start: bool = True) -> SungSyllable:
    return SungSyllable(text, text, tuple(phonemes.split()), (SungNote(pitch, start, dur),),
                        True, word_start)


PLAN = PhrasePlan(bar=1, section="verse", text="hold the light tonight", syllables=(
    syl("hold", "hh ow l d", 60, 4.0, 1.0), syl("the", "dh ah", 62, 5.0, 0.5),
    syl("light", "l ay t", 64, 5.5, 1.5), syl("to", "t ah", 62, 7.5, 0.5),
    syl("night", "n ay t", 67, 8.0, 2.0, word_start=False)))


def tiny_models() -> tuple[AcousticModel, Vocoder]:
    torch.manual_seed(0)
    acoustic = AcousticModel(AcousticConfig(hidden=32, flow_hidden=32, enc_layers=1,
                                            dec_layers=1, flow_layers=1))
    # the flow's output layer starts at zero (no motion); give it weights so steps matter
    torch.nn.init.normal_(acoustic.velocity.out.weight, std=0.5)
    return acoustic.eval(), Vocoder(VocoderConfig(hidden=16, layers=1, harmonics=8,
                                                  bands=4)).eval()


@pytest.fixture(scope="module")
def tiny_bank(tmp_path_factory) -> Path:
    acoustic, vocoder = tiny_models()
    return write_bank(acoustic, vocoder, tmp_path_factory.mktemp("own") / "encore_voice",
                      max_depth=0.6)


def banks(tiny: Path) -> list[Path]:
    return [tiny] + ([SHIPPED] if (SHIPPED / "dsconfig.yaml").is_file() else [])


def test_bank_loads_with_the_contract(tiny_bank):
    for folder in banks(tiny_bank):
        bank = load_voicebank(folder)
        assert bank.acoustic.audio.sample_rate == 44100
        assert bank.acoustic.audio.hop_size == 512
        assert bank.acoustic.audio.num_mel_bins == 128
        assert bank.acoustic.audio.mel_base == "e"
        assert bank.vocoder.folder == folder / "dsvocoder"
        assert {"SP", "AP", "aa", "zh"} <= set(bank.phonemes.ids)
        session = ort.InferenceSession(str(bank.acoustic.model))
        declared = {i.name: (i.type, len(i.shape)) for i in session.get_inputs()}
        assert declared == {"tokens": ("tensor(int64)", 2), "durations": ("tensor(int64)", 2),
                            "f0": ("tensor(float)", 2), "steps": ("tensor(int64)", 0),
                            "depth": ("tensor(float)", 0)}
        assert session.get_outputs()[0].shape == [1, "n_frames", 128]


def test_runner_sings_a_plan_with_the_right_length(tiny_bank):
    for folder in banks(tiny_bank):
        runner = DiffSingerRunner(folder, RenderSettings(steps=3))
        timing = runner.prepare(PLAN, 120.0)
        audio = runner.render(PLAN, 120.0)
        assert audio.sample_rate == 44100
        assert len(audio.samples) == timing.n_frames * 512
        assert audio.start_seconds == pytest.approx(4.0 * 0.5 - 43 / (44100 / 512))
        assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() > 0


def test_steps_and_depth_change_the_output(tiny_bank):
    for folder in banks(tiny_bank):
        runner = DiffSingerRunner(folder, RenderSettings(steps=1))
        one = runner.render(PLAN, 120.0, steps=1).samples
        four = runner.render(PLAN, 120.0, steps=4).samples
        again = runner.render(PLAN, 120.0, steps=4).samples
        assert np.array_equal(four, again), "rendering must be deterministic"
        assert np.abs(one - four).max() > 1e-4
    acoustic, _ = tiny_models()
    tokens = torch.tensor([[1, 20, 5, 1]])
    durations = torch.tensor([[5, 4, 9, 5]])
    f0 = torch.full((1, 23), 262.0)
    coarse = acoustic.sample(tokens, durations, f0, steps=4, depth=0.0)
    deep = acoustic.sample(tokens, durations, f0, steps=4, depth=0.8)
    assert (coarse - deep).abs().max() > 1e-3


def test_onnx_acoustic_matches_pytorch(tmp_path):
    acoustic, _ = tiny_models()
    path = export_onnx(acoustic, tmp_path / "acoustic.onnx")
    session = ort.InferenceSession(str(path))
    tokens = np.array([[1, 20, 5, 33, 1]], np.int64)
    durations = np.array([[7, 3, 12, 4, 6]], np.int64)
    f0 = np.linspace(200, 300, 32, dtype=np.float32)[None]
    for steps, depth in ((1, 0.3), (5, 0.6), (9, 1.0)):
        got = session.run(None, {"tokens": tokens, "durations": durations, "f0": f0,
                                 "steps": np.array(steps, np.int64),
                                 "depth": np.array(depth, np.float32)})[0]
        want = acoustic.sample(torch.from_numpy(tokens), torch.from_numpy(durations),
                               torch.from_numpy(f0), steps, depth).numpy()
        assert got.shape == (1, 32, 128)
        np.testing.assert_allclose(got, want, atol=1e-4)


def _peak_hz(wave: np.ndarray) -> float:
    x = wave[4096:-4096] * np.hanning(len(wave) - 8192)
    spec = np.abs(np.fft.rfft(x, 1 << 17))
    return float(np.argmax(spec) * 44100 / (1 << 17))


@pytest.mark.parametrize("hz", [196.0, 330.0, 523.0])
def test_vocoder_excitation_sits_at_f0(tiny_bank, hz):
    """A constant f0 with the mel of a pure tone at that f0: the output's spectral peak is
    the f0 (within 1 %), in the tiny untrained vocoder and in the shipped one."""
    t = np.arange(64 * 512) / 44100
    mel = vd.log_mel(0.3 * np.sin(2 * np.pi * hz * t).astype(np.float32))
    f0 = np.full((1, mel.shape[0]), hz, np.float32)
    for folder in banks(tiny_bank):
        session = ort.InferenceSession(str(folder / "dsvocoder" / "model.onnx"))
        wave = session.run(None, {"mel": mel[None], "f0": f0})[0].reshape(-1)
        assert wave.shape == (64 * 512,)
        assert _peak_hz(wave) == pytest.approx(hz, rel=0.01)


def test_mel_matches_the_grid():
    sr = 44100
    audio = np.sin(2 * np.pi * 1000 * np.arange(40 * 512) / sr).astype(np.float32)
    mel = vd.log_mel(audio)
    assert mel.shape == (40, 128)
    centre = vd._hz_to_mel(np.array(1000.0))
    points = vd._hz_to_mel(np.array([vd.FMIN, vd.FMAX]))
    expected_bin = (centre - points[0]) / (points[1] - points[0]) * 129 - 1
    assert abs(int(np.argmax(mel[20])) - float(expected_bin)) <= 1.0
    basis = vd.mel_basis()
    assert basis.shape == (128, 1025) and (basis >= 0).all()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_teacher_example_is_aligned_on_the_runner_grid(tiny_bank):
    teacher = vd.Teacher()
    ex = vd.make_example(teacher, PLAN, 120.0)
    n = ex.n_frames
    assert len(ex.tokens) == len(ex.durations) and (ex.durations >= 1).all()
    assert len(ex.f0) == len(ex.f0_sung) == ex.mel.shape[0] == n
    assert ex.mel.shape[1] == 128 and len(ex.audio) == n * 512
    # the same tokens and frames the runner feeds a bank with this phoneme set
    timing = DiffSingerRunner(tiny_bank).prepare(PLAN, 120.0)
    assert list(timing.token_ids) == list(ex.tokens)
    assert list(timing.durations) == list(ex.durations)
    np.testing.assert_allclose(timing.f0, ex.f0)
    # the teacher's vowels fall on the timing's vowel frames, give or take its onsets
    assert abs(ex.lag) <= 4
    # where the teacher is voiced in the middle of a vowel, it sings the note's pitch
    bounds = np.concatenate([[0], np.cumsum(ex.durations)])
    cents = []
    for k, kind in enumerate(ex.kinds):
        if kind == "nucleus":
            a, b = bounds[k], bounds[k + 1]
            mid = slice(a + (b - a) // 4, b - (b - a) // 4)
            cents.append(np.abs(1200 * np.log2(ex.f0_sung[mid] / ex.f0[mid])))
    assert np.median(np.concatenate(cents)) < 30
    # the mel is the mel of the audio, and the audio is not silent where vowels are
    np.testing.assert_allclose(vd.log_mel(ex.audio), ex.mel, atol=1e-4)
    vowel = np.concatenate([np.arange(bounds[k], bounds[k + 1])
                            for k, kind in enumerate(ex.kinds) if kind == "nucleus"])
    silent = np.concatenate([np.arange(bounds[k], bounds[k + 1])
                             for k, kind in enumerate(ex.kinds) if kind == "rest"])
    assert ex.mel[vowel].mean() > ex.mel[silent].mean() + 2.0
