"""The live form of a DiffSinger voice: its int8 vocoder (made once, cached outside the
bank), steps chosen per phrase from the deadline, and phrases that come back sung from the
cache. The speed itself is measured in benchmarks/bench_voicebank.py, not here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.voice.accelerate import cache_dir, int8_vocoder
from engine.voice.diffsinger import DiffSingerRunner
from engine.voice.step_planner import StepPlanner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _plan(pitch: int = 60) -> PhrasePlan:
    syllables = tuple(
        SungSyllable(text=w, word=w, phonemes=tuple(p.split()),
                     notes=(SungNote(pitch + i, 4.0 + i, 1.0),))
        for i, (w, p) in enumerate((("night", "n ay t"), ("light", "l ay t"))))
    return PhrasePlan(bar=1, section="verse", text="night light", syllables=syllables)


def conv_vocoder(path: Path, bins: int, hop: int) -> Path:
    """A small convolutional vocoder with the contract's names: mel [1, F, bins] and f0
    [1, F] -> waveform [1, F * hop] (two 1-D convolutions, fixed random weights)."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((32, bins, 3)) / np.sqrt(bins * 3)).astype(np.float32)
    w2 = (rng.standard_normal((hop, 32, 3)) / np.sqrt(32 * 3)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["mel"], ["x"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1]),
        helper.make_node("Tanh", ["h"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["y"], pads=[1, 1]),  # [1, hop, F]
        helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["yt", "flat"], ["waveform"]),
    ]
    graph = helper.make_graph(
        nodes, "vocoder",
        [helper.make_tensor_value_info("mel", onnx.TensorProto.FLOAT, [1, "n_frames", bins]),
         helper.make_tensor_value_info("f0", onnx.TensorProto.FLOAT, [1, "n_frames"])],
        [helper.make_tensor_value_info("waveform", onnx.TensorProto.FLOAT, [1, "n_samples"])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(np.array([1, -1], np.int64), "flat")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_the_int8_vocoder_is_cached_outside_the_bank_and_sounds_alike(tmp_path, vb):
    (tmp_path / "bank").mkdir()
    model = conv_vocoder(tmp_path / "bank" / "vocoder.onnx", vb.BINS, vb.HOP)
    before = _snapshot(tmp_path / "bank")
    rng = np.random.default_rng(0)
    pairs = [((rng.standard_normal((1, 50, vb.BINS)) - 4).astype(np.float32),
              np.full((1, 50), 220.0, np.float32)) for _ in range(3)]
    path = int8_vocoder(model, pairs)
    assert path is not None and path.is_relative_to(cache_dir())
    assert _snapshot(tmp_path / "bank") == before  # nothing written into the bank
    assert int8_vocoder(model, []) == path  # made once: found again without calibration
    quant = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QLinearConv" for n in onnx.load(str(path)).graph.node)
    full = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feeds = {"mel": (rng.standard_normal((1, 80, vb.BINS)) - 4).astype(np.float32),
             "f0": np.full((1, 80), 220.0, np.float32)}
    want = full.run(None, feeds)[0]
    got = quant.run(None, feeds)[0]
    assert got.shape == want.shape
    error = np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want ** 2))
    assert error < 0.1  # within -20 dB of the float vocoder on this small net
    os.utime(model, ns=(1, 1))  # the vocoder changed: a new copy is due
    assert int8_vocoder(model, []) is None


def test_a_live_runner_sings_through_the_int8_vocoder(bank_factory, vb):
    folder = bank_factory()
    conv_vocoder(folder / "dsvocoder" / "test_hifigan.onnx", vb.BINS, vb.HOP)
    before = _snapshot(folder)
    studio = DiffSingerRunner(folder)
    live = DiffSingerRunner(folder, live=True)
    assert live.vocoder.path.is_relative_to(cache_dir())
    assert studio.vocoder.path == folder / "dsvocoder" / "test_hifigan.onnx"
    assert _snapshot(folder) == before
    a = studio.render(_plan(), 120.0).samples
    b = live.render(_plan(), 120.0).samples
    assert a.shape == b.shape
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.1 * np.sqrt(np.mean(a ** 2))
    assert set(live.stage_seconds) == {"acoustic", "vocoder"}


def test_a_phrase_that_comes_back_is_sung_from_the_cache(bank_factory):
    singer = DiffSingerRunner(bank_factory(), cache_seconds=60.0)
    first = singer.render(_plan(), 120.0, steps=4)
    again = singer.render(_plan(), 120.0, steps=4)
    assert singer.stage_seconds == {"cache": 0.0} and singer.cache.hits == 1
    np.testing.assert_array_equal(first.samples, again.samples)
    assert again.start_seconds == first.start_seconds
    singer.render(_plan(), 120.0, steps=2)  # other steps, other notes: sung anew
    singer.render(_plan(62), 120.0, steps=4)
    assert singer.cache.hits == 1 and singer.cache.misses == 3


def test_the_cache_keeps_at_most_its_size():
    from engine.voice.diffsinger import PhraseCache

    cache = PhraseCache(10)
    for i in range(5):
        cache.put(bytes([i]), np.zeros(4, np.float32))
    assert cache.get(bytes([0])) is None and cache.get(bytes([4])) is not None
    assert sum(v.size for v in cache._items.values()) <= 10
    cache.put(b"big", np.zeros(11, np.float32))  # larger than the whole cache: not kept
    assert cache.get(b"big") is None


def test_the_planner_gives_the_most_steps_that_fit():
    # 1 ms a frame fixed, 0.5 ms a frame a step: 100 frames at 4 steps = 0.3 s
    planner = StepPlanner.fit([(1, 0.15), (4, 0.30)], frames=100, cap=10)
    assert planner.fixed == pytest.approx(0.001) and planner.per_step == pytest.approx(0.0005)
    assert planner.predict(4, 100) == pytest.approx(0.3)
    assert planner.choose(100, 10.0) == 10  # the cap
    assert planner.choose(100, 0.3 * planner.margin) == 4
    assert planner.choose(100, 0.0) == 1  # no time left: the fewest
    planner.observe(4, 100, 0.9)  # three times slower than predicted: at once
    assert planner.load == pytest.approx(3.0)
    assert planner.choose(100, 0.3 * planner.margin) == 1
    planner.observe(4, 100, 0.3)  # quick again: the estimate comes down slowly
    assert 1.0 < planner.load < 3.0


def test_the_planner_needs_two_step_counts():
    with pytest.raises(ValueError, match="two step counts"):
        StepPlanner.fit([(4, 0.3), (4, 0.31)], frames=100, cap=4)


def test_a_bank_that_cannot_sing_the_calibration_keeps_its_float_vocoder(bank_factory, vb):
    # none of English's sounds but one: the calibration's words cannot be sung (a bank of
    # another language, say)
    folder = bank_factory(phonemes=("<PAD>", "SP", "AP", "zh"))
    conv_vocoder(folder / "dsvocoder" / "test_hifigan.onnx", vb.BINS, vb.HOP)
    live = DiffSingerRunner(folder, live=True)
    assert live.vocoder.path == folder / "dsvocoder" / "test_hifigan.onnx"
