"""GPT-2 -> ONNX with a key/value cache: contract, parity with transformers, refusals, CLI.

The model is the session's tiny trained GPT-2 (``tiny_gpt2_hf_dir`` in tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine.cli import main  # noqa: E402
from engine.lyrics.gpt2_runner import GPT2Lyricist  # noqa: E402
from engine.output_files import OutputExistsError  # noqa: E402
from export.gpt2_onnx import INT8_MODEL_FILE, PARITY_TOLERANCE, export_gpt2  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::Warning:torch"),
              pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def hf_model(hf_dir: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()


def session(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def test_parity_figures_are_within_tolerance(tiny_gpt2_onnx_dir: Path) -> None:
    parity = json.loads((tiny_gpt2_onnx_dir / "encore_gpt2.json").read_text())["parity"]
    scale = max(1.0, parity["reference_logits_max_abs"])
    worst = max(parity["full_logits_max_abs_diff"], parity["cached_logits_max_abs_diff"])
    assert parity["max_relative_diff"] == pytest.approx(worst / scale)
    assert parity["max_relative_diff"] <= PARITY_TOLERANCE <= 1e-5
    assert parity["greedy_tokens"] == 32 and parity["greedy_identical"] is True
    assert parity["tolerance"] == PARITY_TOLERANCE and parity["reference_logits_max_abs"] > 1


def test_graph_keeps_the_io_contract(tiny_gpt2_onnx_dir: Path) -> None:
    sess = session(tiny_gpt2_onnx_dir)
    config = json.loads((tiny_gpt2_onnx_dir / "encore_gpt2.json").read_text())
    assert (config["n_layer"], config["n_head"], config["head_dim"]) == (2, 2, 32)
    assert config["version"] == 2
    io = {t.name: (t.type, t.shape) for t in sess.get_inputs() + sess.get_outputs()}
    cache = [f"{kind}.{i}" for i in range(2) for kind in ("key", "value")]
    assert [t.name for t in sess.get_inputs()] == [
        "input_ids", "total_length", "logits_start", *(f"past_{c}" for c in cache)]
    assert [t.name for t in sess.get_outputs()] == ["logits", *(f"present_{c}" for c in cache)]
    assert io["input_ids"] == ("tensor(int64)", ["batch", "seq"])
    assert io["total_length"] == ("tensor(int32)", []) and io["logits_start"][1] == []
    for name in cache:  # [batch, n_head, capacity, head_dim], the same for past and present
        assert io[f"past_{name}"] == io[f"present_{name}"] == (
            "tensor(float)", ["batch", 2, "capacity", 32])
    assert io["logits"][1][2] == config["vocab_size"]


def test_config_names_the_stop_tokens(tiny_gpt2_onnx_dir: Path) -> None:
    config = json.loads((tiny_gpt2_onnx_dir / "encore_gpt2.json").read_text())
    lyricist = GPT2Lyricist.load(tiny_gpt2_onnx_dir)
    assert config["newline_token_ids"]
    assert all("\n" in lyricist.tokenizer.decode([i]) for i in config["newline_token_ids"])
    assert lyricist.tokenizer.token_to_id("<|endoftext|>") == config["eos_token_id"]
    assert config["source"].endswith("/hf") and config["format"] == "encore-gpt2"


def test_batched_cache_matches_transformers(tiny_gpt2_hf_dir: Path,
                                            tiny_gpt2_onnx_dir: Path) -> None:
    """Batch 3: 5 tokens, then 4 more one at a time through the cache buffers (bound as both
    past and present), against one transformers forward."""
    from engine.lyrics.gpt2_cache import KVCache

    model, sess = hf_model(tiny_gpt2_hf_dir), session(tiny_gpt2_onnx_dir)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, (3, 9))
    with torch.no_grad():
        reference = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    cache = KVCache.empty(sess, n_layer=2, n_head=2, head_dim=32, batch=3, capacity=12)
    logits = [cache.run(ids[:, :5], all_logits=True)]
    logits += [cache.run(ids[:, j:j + 1], all_logits=True) for j in range(5, 9)]
    assert cache.length == 9 and cache.buffers[0].shape == (3, 2, 12, 32)
    assert not cache.buffers[0][:, :, 9:].any()  # positions past the filled ones untouched
    assert np.abs(np.concatenate(logits, axis=1) - reference).max() <= 1e-4
    with torch.no_grad():  # the buffers hold transformers' own keys and values
        past = model(input_ids=torch.from_numpy(ids), use_cache=True).past_key_values
    keys = past.layers[1].keys  # transformers' DynamicCache: layer 1's keys
    assert np.abs(cache.buffers[2][:, :, :9] - keys.numpy()).max() <= 1e-5


def test_greedy_through_the_cache_equals_generate(tiny_gpt2_hf_dir: Path,
                                                  tiny_gpt2_onnx_dir: Path) -> None:
    model = hf_model(tiny_gpt2_hf_dir)
    lyricist = GPT2Lyricist.load(tiny_gpt2_onnx_dir)
    prompt = "about: moon\nthe night is long and the road is cold\n"
    ids = lyricist.context_ids(prompt)
    generation = transformers.GenerationConfig(do_sample=False, max_new_tokens=32,
                                               eos_token_id=[], pad_token_id=0)
    x = torch.tensor([ids])
    with torch.no_grad():
        expected = model.generate(x, attention_mask=torch.ones_like(x),
                                  generation_config=generation)[0, len(ids):].tolist()
    assert len(expected) == 32
    assert lyricist.greedy(prompt, 32) == expected


def test_a_folder_with_only_vocab_and_merges_converts(tiny_gpt2_hf_dir: Path,
                                                      tmp_path: Path) -> None:
    """Like a downloaded gpt2: config, weights, vocab.json + merges.txt, no tokenizer.json."""
    plain = tmp_path / "plain_gpt2"
    plain.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_gpt2_hf_dir / name, plain / name)
    tokenizers = pytest.importorskip("tokenizers")
    original = tokenizers.Tokenizer.from_file(str(tiny_gpt2_hf_dir / "tokenizer.json"))
    original.model.save(str(plain))  # BPE: vocab.json, merges.txt
    assert sorted(p.name for p in plain.iterdir()) == [
        "config.json", "merges.txt", "model.safetensors", "vocab.json"]
    config = export_gpt2(plain, tmp_path / "out")
    assert config["parity"]["greedy_identical"] and config["source"] == "plain_gpt2"
    converted = tokenizers.Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    text = "the moon is rising over silver water\nwe ran"
    assert converted.encode(text).ids == original.encode(text).ids
    lines = GPT2Lyricist.load(tmp_path / "out").generate_lines("about: moon\n", 2,
                                                              np.random.default_rng(0))
    assert len(lines) == 2


def test_a_folder_without_config_is_refused(tiny_gpt2_hf_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no_config"
    shutil.copytree(tiny_gpt2_hf_dir, folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json.*save_pretrained"):
        export_gpt2(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_other_model_types_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="'llama'.*only GPT-2"):
        export_gpt2(tmp_path, tmp_path / "out")


def test_a_parity_failure_raises_and_leaves_nothing(tiny_gpt2_hf_dir: Path,
                                                    tmp_path: Path) -> None:
    """A failed export writes nothing: its files are moved into OUT only on success."""
    with pytest.raises(ValueError, match="more than the tolerance 0.*--tolerance"):
        export_gpt2(tiny_gpt2_hf_dir, tmp_path / "out", tolerance=0.0)  # any rounding fails
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="no such folder"):
        GPT2Lyricist.load(tmp_path / "out")


def test_cli_converts_and_prints_parity(tiny_gpt2_hf_dir: Path, tmp_path: Path,
                                        capsys) -> None:
    out = tmp_path / "lyrics_gpt2"
    assert main(["convert", "gpt2", str(tiny_gpt2_hf_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("model.onnx", "tokenizer.json", "encore_gpt2.json"):
        assert f"wrote {out / name}" in printed
    assert "logits max |diff|" in printed and "identical: True" in printed
    assert GPT2Lyricist.load(out).config["n_layer"] == 2
    assert "model_int8.onnx" not in printed  # a small model: no int8 file unless asked
    int8_out = tmp_path / "with_int8"
    assert main(["convert", "gpt2", str(tiny_gpt2_hf_dir), str(int8_out), "--int8"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {int8_out / 'model_int8.onnx'}" in printed and "int8 weights:" in printed
    assert GPT2Lyricist.load(int8_out).weights == "int8"


def test_cli_convert_of_a_missing_folder_exits_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["convert", "gpt2", str(tmp_path / "none"), str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("encore: error:") and "no such folder" in err


def test_cli_train_lyrics_fine_tunes_and_exports(tiny_gpt2_hf_dir: Path, tmp_path: Path,
                                                 capsys) -> None:
    text = tmp_path / "lyrics.txt"
    text.write_text("the night is long\nthe road is cold\n\ni walk alone\nbeneath the moon\n" * 8)
    code = main(["train", "lyrics", "--from", str(tiny_gpt2_hf_dir), "--text", str(text),
                 "--out", str(tmp_path / "run"), "--steps", "2", "--batch", "2",
                 "--onnx", str(tmp_path / "onnx")])
    assert code == 0
    assert (tmp_path / "run" / "hf" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert GPT2Lyricist.load(tmp_path / "onnx").config["source"] == "run/hf"


def test_cli_train_lyrics_help_lists_both_modes(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "lyrics", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--from HF_DIR --text FILE" in out and "--limit-lines" in out


def test_an_exported_folder_becomes_a_hugging_face_folder_again(
        tiny_gpt2_hf_dir: Path, tiny_gpt2_onnx_dir: Path, tmp_path: Path) -> None:
    from export.gpt2_onnx import hf_from_export

    rebuilt = hf_from_export(tiny_gpt2_onnx_dir, tmp_path / "hf")
    ids = torch.tensor([[0, 5, 17, 42, 7]])
    with torch.no_grad():
        original = hf_model(tiny_gpt2_hf_dir)(ids).logits
        again = hf_model(rebuilt)(ids).logits
    assert torch.equal(original, again)
    tok = transformers.AutoTokenizer.from_pretrained(rebuilt)
    assert tok("the night")["input_ids"] == transformers.AutoTokenizer.from_pretrained(
        tiny_gpt2_hf_dir)("the night")["input_ids"]


def test_the_shipped_kind_of_folder_fine_tunes_directly(tiny_gpt2_onnx_dir: Path,
                                                        tmp_path: Path) -> None:
    text = tmp_path / "lyrics.txt"
    text.write_text("the night is long\nthe road is cold\n\ni walk alone\nbeneath the moon\n" * 8)
    code = main(["train", "lyrics", "--from", str(tiny_gpt2_onnx_dir), "--text", str(text),
                 "--out", str(tmp_path / "run"), "--steps", "2", "--batch", "2",
                 "--onnx", str(tmp_path / "onnx")])
    assert code == 0
    assert GPT2Lyricist.load(tmp_path / "onnx").greedy("the night", 4)


def test_half_weights_halve_the_file_and_keep_parity_with_the_rounded_model(
        tiny_gpt2_hf_dir: Path, tiny_gpt2_onnx_dir: Path, tmp_path: Path) -> None:
    from export.gpt2_onnx import hf_from_export

    config = export_gpt2(tiny_gpt2_hf_dir, tmp_path / "half")  # the default, as shipped
    full = (tiny_gpt2_onnx_dir / "model.onnx").stat().st_size
    half = (tmp_path / "half" / "model.onnx").stat().st_size
    assert half < 0.7 * full
    parity = config["parity"]
    assert parity["greedy_identical"]
    assert parity["max_relative_diff"] <= PARITY_TOLERANCE
    assert 0 < parity["half_rounding_max_abs_diff"] < 0.05
    runner = GPT2Lyricist.load(tmp_path / "half")
    assert runner.greedy("the night", 8) == GPT2Lyricist.load(tiny_gpt2_onnx_dir).greedy(
        "the night", 8)
    rebuilt = hf_from_export(tmp_path / "half", tmp_path / "hf")  # still fine-tunable
    assert (rebuilt / "model.safetensors").is_file()


def test_a_model_whose_logits_reach_the_hundreds_converts_without_flags(
        tiny_gpt2_hf_dir: Path, tmp_path: Path, capsys) -> None:
    """Random weights with the final layer norm scaled up: logits in the hundreds, where an
    absolute tolerance of 1e-4 is below float32's rounding; the relative one passes."""
    config = transformers.GPT2Config.from_pretrained(tiny_gpt2_hf_dir)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(400.0)
    folder = tmp_path / "loud"
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_gpt2_hf_dir / name, folder / name)
    out = tmp_path / "out"
    assert main(["convert", "gpt2", str(folder), str(out)]) == 0
    parity = json.loads((out / "encore_gpt2.json").read_text())["parity"]
    assert parity["reference_logits_max_abs"] > 100
    assert parity["greedy_identical"] and parity["max_relative_diff"] <= PARITY_TOLERANCE
    assert "relative" in capsys.readouterr().out


def test_hf_from_export_follows_merged_equal_initializers(tiny_gpt2_hf_dir: Path,
                                                          tiny_gpt2_onnx_dir: Path,
                                                          tmp_path: Path) -> None:
    """An exporter that merges equal initializers keeps one and names the others through
    Identity nodes (as format-1 graphs of untrained models did): the weights still come back."""
    onnx = pytest.importorskip("onnx")
    from export.gpt2_onnx import hf_from_export

    folder = tmp_path / "merged"
    shutil.copytree(tiny_gpt2_onnx_dir, folder)
    graph = onnx.load(str(folder / "model.onnx"))
    merged = ["transformer.h.1.ln_2.bias", "transformer.ln_f.weight"]
    for name in merged:
        init = next(t for t in graph.graph.initializer if t.name == name)
        graph.graph.initializer.remove(init)
        init.name = "kept_" + name
        graph.graph.initializer.append(init)
        graph.graph.node.insert(0, onnx.helper.make_node("Identity", [init.name], [name]))
    onnx.save(graph, str(folder / "model.onnx"))
    assert GPT2Lyricist.load(folder).greedy("the night", 4)  # the graph still runs
    rebuilt = hf_from_export(folder, tmp_path / "hf")
    original, again = hf_model(tiny_gpt2_hf_dir).state_dict(), hf_model(rebuilt).state_dict()
    assert all(torch.equal(original[k], again[k]) for k in original)


def test_an_unsupported_activation_is_refused(tiny_gpt2_hf_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "relu"
    shutil.copytree(tiny_gpt2_hf_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation_function 'relu' is not supported"):
        export_gpt2(folder, tmp_path / "out")


def test_int8_weights_load_and_stay_close_to_the_float_graph(tiny_gpt2_hf_dir: Path,
                                                             tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "int8"
    config = export_gpt2(tiny_gpt2_hf_dir, out, int8=True)
    assert config["weights"] == "float16" and config["parity"]["greedy_identical"]
    figures = config["int8"]
    assert figures["file"] == INT8_MODEL_FILE
    assert 0 < figures["logits_max_abs_diff_vs_float"] < 0.1 * figures["reference_logits_max_abs"]
    assert 0 <= figures["greedy_tokens_before_first_difference"] <= figures["greedy_tokens"] == 32
    ops = {node.op_type for node in onnx.load(str(out / INT8_MODEL_FILE)).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    float_ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MatMulInteger" not in float_ops  # the float graph is kept as it was
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.onnx", INT8_MODEL_FILE, "tokenizer.json", "encore_gpt2.json", "hf_config.json"])
    runner = GPT2Lyricist.load(out)  # auto: the int8 graph
    float_runner = GPT2Lyricist.load(out, weights="float")
    assert (runner.weights, float_runner.weights) == ("int8", "float")
    ids = np.asarray([runner.context_ids("about: moon\nthe night is long")])
    quantized = runner.new_cache(1, ids.shape[1]).run(ids)
    reference = float_runner.new_cache(1, ids.shape[1]).run(ids)
    assert 0 < np.abs(quantized - reference).max() < 0.1 * np.abs(reference).max()
    assert len(runner.generate_lines("about: moon\n", 3, np.random.default_rng(0))) == 3


def test_int8_is_written_by_default_only_for_big_models(tiny_gpt2_hf_dir: Path,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import export.gpt2_onnx as gpt2_onnx

    small = export_gpt2(tiny_gpt2_hf_dir, tmp_path / "small")
    assert "int8" not in small and not (tmp_path / "small" / INT8_MODEL_FILE).exists()
    # the same tiny model counted as big: the threshold decides, nothing else
    monkeypatch.setattr(gpt2_onnx, "INT8_AUTO_PARAMETERS", 1)
    big = export_gpt2(tiny_gpt2_hf_dir, tmp_path / "big")
    assert big["int8"]["file"] == INT8_MODEL_FILE
    assert (tmp_path / "big" / INT8_MODEL_FILE).is_file()
    assert not export_gpt2(tiny_gpt2_hf_dir, tmp_path / "never", int8=False).get("int8")


def test_an_int8_file_already_there_is_never_replaced(tiny_gpt2_hf_dir: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / INT8_MODEL_FILE).write_bytes(b"mine")
    with pytest.raises(OutputExistsError):
        export_gpt2(tiny_gpt2_hf_dir, out, int8=True)
    assert (out / INT8_MODEL_FILE).read_bytes() == b"mine"
    assert sorted(p.name for p in out.iterdir()) == [INT8_MODEL_FILE]
