"""The GPT-2 lyricist runtime (ONNX Runtime + tokenizers) on the session's tiny trained model.

The model comes from ``tiny_gpt2_onnx_dir`` (tests/conftest.py): a 2-layer GPT-2 trained for
a few seconds on sixteen lines, exported with export/gpt2_onnx.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.lyrics.gpt2_runner import GPT2Lyricist, sample, top_k_indices
from engine.lyrics.huge_pages import huge_pages

REPO = Path(__file__).resolve().parents[2]
PROMPT = "about: night\n"


@pytest.fixture(scope="module")
def lyricist(tiny_gpt2_onnx_dir: Path) -> GPT2Lyricist:
    return GPT2Lyricist.load(tiny_gpt2_onnx_dir, providers=["CPUExecutionProvider"])


def repeats(rows: list[list[int]]) -> int:
    """Tokens that already occurred earlier in their own line, over all lines."""
    return sum(len(row) - len(set(row)) for row in rows)


# ---- lines ----------------------------------------------------------------------------------
def test_lines_are_seeded(lyricist: GPT2Lyricist) -> None:
    a = lyricist.generate_lines(PROMPT, 6, np.random.default_rng(7))
    b = lyricist.generate_lines(PROMPT, 6, np.random.default_rng(7))
    c = lyricist.generate_lines(PROMPT, 6, np.random.default_rng(8))
    assert a == b
    assert a != c


@pytest.mark.parametrize("n", [1, 5])
def test_a_batch_of_n_gives_n_lines_without_newlines(lyricist: GPT2Lyricist, n: int) -> None:
    for seed in range(4):
        lines = lyricist.generate_lines(PROMPT, n, np.random.default_rng(seed), max_tokens=30)
        assert len(lines) == n
        assert all(isinstance(line, str) and "\n" not in line for line in lines)
        assert all(line == line.strip() for line in lines)


def test_lines_stop_at_a_newline_or_max_tokens(lyricist: GPT2Lyricist) -> None:
    rows = lyricist.generate_ids(PROMPT, 16, np.random.default_rng(0), max_tokens=40)
    stops = set(lyricist.config["newline_token_ids"]) | {lyricist.eos_id}
    assert all(0 < len(row) <= 40 and not stops & set(row) for row in rows)
    assert sum(len(row) < 40 for row in rows) >= 8  # the model learned to end its lines
    short = lyricist.generate_ids(PROMPT, 4, np.random.default_rng(0), max_tokens=3)
    assert all(len(row) <= 3 for row in short)


def test_top_k_1_and_temperature_0_are_greedy(lyricist: GPT2Lyricist) -> None:
    prompt = PROMPT + "the moon is rising over silver water\n"
    stops = set(lyricist.config["newline_token_ids"]) | {lyricist.eos_id}
    greedy = lyricist.greedy(prompt, 20)
    expected = greedy[: next((i for i, t in enumerate(greedy) if t in stops), 20)]
    assert expected  # the check below must compare something
    for kwargs in ({"top_k": 1}, {"temperature": 0.0}):
        rows = lyricist.generate_ids(prompt, 3, np.random.default_rng(5), max_tokens=20,
                                     repetition_penalty=1.0, min_tokens=0, **kwargs)
        assert rows == [expected] * 3, kwargs


def test_repetition_penalty_lowers_repeats(lyricist: GPT2Lyricist) -> None:
    def total(penalty: float) -> int:
        return sum(repeats(lyricist.generate_ids(PROMPT, 16, np.random.default_rng(seed),
                                                 max_tokens=24, repetition_penalty=penalty))
                   for seed in range(3))

    plain, penalised = total(1.0), total(3.0)
    assert plain > 0
    assert penalised < plain / 2


def test_a_prompt_longer_than_the_model_is_cut_from_the_left(lyricist: GPT2Lyricist) -> None:
    long_prompt = "the night is long and the road is cold\n" * 40  # > 96 positions
    ids = lyricist.context_ids(long_prompt, 16)
    assert len(ids) == lyricist.n_positions - 16
    lines = lyricist.generate_lines(long_prompt, 2, np.random.default_rng(0), max_tokens=16)
    assert len(lines) == 2
    with pytest.raises(ValueError, match="positions"):
        lyricist.generate_lines(PROMPT, 1, np.random.default_rng(0), max_tokens=96)


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_p": 0}, {"top_k": -1},
                                    {"repetition_penalty": 0}, {"max_tokens": 0}])
def test_bad_sampling_settings_are_refused(lyricist: GPT2Lyricist, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        lyricist.generate_lines(PROMPT, 1, np.random.default_rng(0), **kwargs)


# ---- the cache --------------------------------------------------------------------------------
def test_cached_steps_equal_the_full_sequence(lyricist: GPT2Lyricist) -> None:
    ids = np.asarray([lyricist.context_ids(PROMPT + "we danced until the city lights")])
    full = lyricist.new_cache(1, ids.shape[1]).run(ids, all_logits=True)
    cache = lyricist.new_cache(1, ids.shape[1] + 3)
    steps = [cache.run(ids[:, :4], all_logits=True)]
    for j in range(4, ids.shape[1]):
        steps.append(cache.run(ids[:, j:j + 1], all_logits=True))
    assert cache.length == ids.shape[1] and full.shape == (1, ids.shape[1], lyricist.vocab_size)
    assert np.abs(np.concatenate(steps, axis=1) - full).max() <= 1e-4
    # several tokens on a filled cache (batch 1): the same as one at a time
    again = lyricist.new_cache(1, ids.shape[1])
    again.run(ids[:, :4])
    assert np.abs(again.run(ids[:, 4:], all_logits=True) - full[:, 4:]).max() <= 1e-4


def test_the_last_positions_logits_alone_equal_the_full_runs(lyricist: GPT2Lyricist) -> None:
    ids = np.asarray([lyricist.context_ids(PROMPT)])
    full = lyricist.new_cache(1, ids.shape[1]).run(ids, all_logits=True)
    last = lyricist.new_cache(1, ids.shape[1]).run(ids)
    assert last.shape == (1, lyricist.vocab_size)
    assert np.abs(last - full[:, -1]).max() <= 1e-5


def test_the_cache_refuses_what_the_graph_cannot_do(lyricist: GPT2Lyricist) -> None:
    cache = lyricist.new_cache(2, 6)
    cache.run(np.zeros((2, 3), np.int64))                # a prompt on an empty cache: fine
    with pytest.raises(ValueError, match="one token at a time"):
        cache.run(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="rows"):
        cache.run(np.zeros((1, 1), np.int64))
    for _ in range(3):
        cache.run(np.zeros((2, 1), np.int64))
    assert cache.length == 6
    with pytest.raises(ValueError, match="7 positions do not fit the cache's 6"):
        cache.run(np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match="batch-1"):
        cache.repeated(4)


def test_the_expanded_cache_gives_every_row_the_prompts_logits(lyricist: GPT2Lyricist) -> None:
    ids = lyricist.context_ids(PROMPT)
    one, cache_one = lyricist._prefill(ids, 1, 2)
    many, cache_many = lyricist._prefill(ids, 4, 2)
    assert cache_many.batch == 4 and many.shape == (4, lyricist.vocab_size)
    assert cache_many.capacity == len(ids) + 2 == cache_one.capacity
    token = np.full((4, 1), ids[-1])
    step_many = cache_many.run(token)
    step_one = cache_one.run(token[:1])
    assert np.abs(step_many - step_one).max() <= 1e-5
    assert np.abs(many - one).max() == 0


# ---- scoring words ----------------------------------------------------------------------------
def test_word_logprobs_sum_the_words_tokens(lyricist: GPT2Lyricist) -> None:
    prefix = PROMPT + "i walk alone beneath the silver"
    words = ["moon", "water", "zqxv"]
    scores = lyricist.token_logprob_of_words(prefix, words)
    assert scores.shape == (3,) and np.all(scores < 0)
    context = lyricist.context_ids(prefix)
    for word, score in zip(words, scores, strict=True):
        pieces = lyricist.encode(" " + word)
        ids = np.asarray([context + pieces])
        logits = lyricist.new_cache(1, ids.shape[1]).run(ids, all_logits=True)
        shifted = logits[0] - logits[0].max(axis=-1, keepdims=True)
        logprobs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        expected = sum(logprobs[len(context) - 1 + j, t] for j, t in enumerate(pieces))
        assert score == pytest.approx(expected, abs=1e-4), word
    assert len(lyricist.encode(" zqxv")) > 1  # the multi-token path was taken
    assert scores[0] > scores[2]  # the line it was trained on beats nonsense


def test_word_logprobs_at_a_line_start_take_no_space(lyricist: GPT2Lyricist) -> None:
    both = lyricist.token_logprob_of_words(PROMPT, ["the", "we"])
    alone = lyricist.token_logprob_of_words(PROMPT, ["the"])
    assert both[0] == pytest.approx(alone[0], abs=1e-5)
    after_eos = lyricist.token_logprob_of_words("<|endoftext|>", ["the"])
    expected = lyricist.token_logprob_of_words("", ["the"])
    assert after_eos[0] == pytest.approx(expected[0], abs=1e-5)
    assert lyricist.token_logprob_of_words(PROMPT, []).shape == (0,)


# ---- sampling -------------------------------------------------------------------------------
def test_sample_filters() -> None:
    scores = np.log(np.asarray([[0.5, 0.3, 0.15, 0.05]] * 2000))
    rng = np.random.default_rng(0)
    picks = sample(scores, rng, temperature=1.0)
    assert abs(np.mean(picks == 0) - 0.5) < 0.05 and np.mean(picks == 3) > 0.02
    assert set(sample(scores, rng, temperature=1.0, top_k=2)) == {0, 1}
    assert set(sample(scores, rng, temperature=1.0, top_p=0.7)) == {0, 1}  # 0.5 + 0.3 >= 0.7
    assert set(sample(scores, rng, temperature=1.0, top_p=0.4)) == {0}
    assert set(sample(scores, rng, temperature=0.0)) == {0}
    banned = scores.copy()
    banned[:, 0] = -np.inf
    assert 0 not in set(sample(banned, rng, temperature=1.0))


@pytest.mark.parametrize("vocab", [300, 8192, 50257])
@pytest.mark.parametrize("k", [1, 40])
def test_top_k_indices_equal_argpartition(vocab: int, k: int) -> None:
    scores = np.random.default_rng(vocab + k).standard_normal((8, vocab)).astype(np.float32)
    expected = np.sort(np.argpartition(scores, vocab - k, axis=1)[:, vocab - k:], axis=1)
    assert np.array_equal(np.sort(top_k_indices(scores, k), axis=1), expected)


# ---- refusals -------------------------------------------------------------------------------
def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    return out


def test_a_missing_folder_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder.*encore convert gpt2 DIR OUT"):
        GPT2Lyricist.load(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json", "encore_gpt2.json"])
def test_a_missing_file_is_named(tiny_gpt2_onnx_dir: Path, tmp_path: Path, name: str) -> None:
    folder = _copy(tiny_gpt2_onnx_dir, tmp_path)
    (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing {name}.*encore convert gpt2"):
        GPT2Lyricist.load(folder)


@pytest.mark.parametrize("change, message", [
    ({"version": 99}, "version 99"),
    ({"format": "other"}, "not an Encore GPT-2 config"),
    ({"n_head": 3}, "'past_key.0'.*expected"),
    ({"n_layer": 3}, "not the 9 of a cached GPT-2 graph of 3 layers"),
    ({"vocab_size": 17}, "'logits'.*expected"),
])
def test_a_config_that_does_not_fit_is_refused(tiny_gpt2_onnx_dir: Path, tmp_path: Path,
                                               change: dict, message: str) -> None:
    folder = _copy(tiny_gpt2_onnx_dir, tmp_path)
    config = json.loads((folder / "encore_gpt2.json").read_text())
    (folder / "encore_gpt2.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=message):
        GPT2Lyricist.load(folder)


def test_a_garbage_tokenizer_is_refused(tiny_gpt2_onnx_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_gpt2_onnx_dir, tmp_path)
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json.*cannot read"):
        GPT2Lyricist.load(folder)


def _graph(path: Path, inputs: dict[str, tuple[int, list]], outputs: dict[str, tuple[int, list]],
           nodes: list) -> None:
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        nodes, "wrong",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_graph_with_other_tensor_names_is_refused(tiny_gpt2_onnx_dir: Path,
                                                    tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    folder = _copy(tiny_gpt2_onnx_dir, tmp_path)
    f = onnx.TensorProto.FLOAT
    _graph(folder / "model.onnx", {"x": (f, ["n"])}, {"y": (f, ["n"])},
           [onnx.helper.make_node("Identity", ["x"], ["y"])])
    with pytest.raises(ValueError, match=r"inputs are \['x'\], not the 7.*encore convert gpt2"):
        GPT2Lyricist.load(folder)


def test_a_graph_with_a_wrong_rank_is_refused(tiny_gpt2_onnx_dir: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    folder = _copy(tiny_gpt2_onnx_dir, tmp_path)
    f, i32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32, onnx.TensorProto.INT64
    cache3 = ["b", 2, "p"]  # rank 3: no head_dim axis
    past = [f"past_{kind}.{i}" for i in range(2) for kind in ("key", "value")]
    present = [name.replace("past", "present") for name in past]
    _graph(folder / "model.onnx",
           {"input_ids": (i64, ["b", "s"]), "total_length": (i32, []),
            "logits_start": (i64, []), **{name: (f, cache3) for name in past}},
           {"logits": (f, ["b", "s"]), **{name: (f, cache3) for name in present}},
           [onnx.helper.make_node("Cast", ["input_ids"], ["logits"], to=f)]
           + [onnx.helper.make_node("Identity", [a], [b])
              for a, b in zip(past, present, strict=True)])
    with pytest.raises(ValueError, match=r"'past_key.0' is tensor\(float\).*expected"):
        GPT2Lyricist.load(folder)


def test_a_folder_of_the_first_format_is_told_to_convert_again(tiny_gpt2_onnx_dir: Path,
                                                               tmp_path: Path) -> None:
    folder = _copy(tiny_gpt2_onnx_dir, tmp_path)
    config = json.loads((folder / "encore_gpt2.json").read_text())
    (folder / "encore_gpt2.json").write_text(json.dumps({**config, "version": 1}))
    with pytest.raises(ValueError, match="version 1, this runner reads \\[2\\].*convert"):
        GPT2Lyricist.load(folder)


def test_auto_weights_open_the_int8_graph_when_the_folder_has_one(tiny_gpt2_onnx_dir: Path,
                                                                  tmp_path: Path) -> None:
    folder = _copy(tiny_gpt2_onnx_dir, tmp_path)
    assert GPT2Lyricist.load(folder).weights == "float"  # no int8 file: the float graph
    # a damaged int8 file shows which graph each choice opens
    (folder / "model_int8.onnx").write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="model_int8.onnx: ONNX Runtime cannot load it"):
        GPT2Lyricist.load(folder)
    assert GPT2Lyricist.load(folder, weights="float").weights == "float"
    shutil.copyfile(folder / "model.onnx", folder / "model_int8.onnx")  # the same contract
    lyricist = GPT2Lyricist.load(folder)
    assert lyricist.weights == "int8" and "int8 weights" in repr(lyricist)
    assert len(lyricist.generate_lines(PROMPT, 2, np.random.default_rng(0))) == 2


def test_weights_asked_for_that_the_folder_lacks_are_refused(tiny_gpt2_onnx_dir: Path,
                                                             tmp_path: Path) -> None:
    folder = _copy(tiny_gpt2_onnx_dir, tmp_path)
    with pytest.raises(FileNotFoundError, match="no int8 weights.*--int8"):
        GPT2Lyricist.load(folder, weights="int8")
    with pytest.raises(ValueError, match="weights must be one of"):
        GPT2Lyricist.load(folder, weights="int4")
    # a folder whose model.onnx itself is the int8 graph (written by an earlier --int8)
    config = json.loads((folder / "encore_gpt2.json").read_text())
    (folder / "encore_gpt2.json").write_text(json.dumps({**config, "weights": "int8"}))
    assert GPT2Lyricist.load(folder).weights == "int8"
    with pytest.raises(FileNotFoundError, match="no float graph"):
        GPT2Lyricist.load(folder, weights="float")


def test_weights_in_huge_pages_give_the_same_lines(tiny_gpt2_onnx_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.lyrics.gpt2_runner as runner

    plain = GPT2Lyricist.load(tiny_gpt2_onnx_dir).generate_lines(
        PROMPT, 4, np.random.default_rng(3))
    advised = []
    monkeypatch.setattr(runner, "HUGE_PAGES_FROM", 0)  # the tiny model counted as big
    monkeypatch.setattr(runner, "huge_pages", lambda regions: advised.append(
        sum(end - start for start, end in regions)) or huge_pages(regions))
    again = GPT2Lyricist.load(tiny_gpt2_onnx_dir).generate_lines(
        PROMPT, 4, np.random.default_rng(3))
    assert len(advised) == 1 and again == plain


def test_the_runtime_imports_no_torch_or_transformers() -> None:
    code = ("import sys, engine.lyrics.gpt2_runner; "
            "bad = {'torch', 'transformers'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)

