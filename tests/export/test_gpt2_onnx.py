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
from export.gpt2_onnx import PARITY_TOLERANCE, export_gpt2  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::Warning:torch"),
              pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def hf_model(hf_dir: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()


def session(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def test_parity_figures_are_within_tolerance(tiny_gpt2_onnx_dir: Path) -> None:
    parity = json.loads((tiny_gpt2_onnx_dir / "encore_gpt2.json").read_text())["parity"]
    assert parity["full_logits_max_abs_diff"] <= PARITY_TOLERANCE <= 1e-4
    assert parity["cached_logits_max_abs_diff"] <= PARITY_TOLERANCE
    assert parity["greedy_tokens"] == 32 and parity["greedy_identical"] is True
    assert parity["tolerance"] == PARITY_TOLERANCE and parity["reference_logits_max_abs"] > 1


def test_graph_keeps_the_io_contract(tiny_gpt2_onnx_dir: Path) -> None:
    sess = session(tiny_gpt2_onnx_dir)
    config = json.loads((tiny_gpt2_onnx_dir / "encore_gpt2.json").read_text())
    assert (config["n_layer"], config["n_head"], config["head_dim"]) == (2, 2, 32)
    io = {t.name: (t.type, t.shape) for t in sess.get_inputs() + sess.get_outputs()}
    assert [t.name for t in sess.get_inputs()] == ["input_ids", "past"]
    assert [t.name for t in sess.get_outputs()] == ["logits", "present"]
    assert io["input_ids"][0] == "tensor(int64)" and io["past"][0] == "tensor(float)"
    # dynamic axes are named (strings), fixed ones are the model's sizes
    assert all(isinstance(d, str) for d in io["input_ids"][1])
    assert io["past"][1][:2] == [2, 2] and io["past"][1][3] == 2 and io["past"][1][5] == 32
    assert all(isinstance(io["past"][1][i], str) for i in (2, 4))
    assert io["logits"][1][2] == config["vocab_size"]
    assert all(isinstance(io["present"][1][i], str) for i in (2, 4))


def test_config_names_the_stop_tokens(tiny_gpt2_onnx_dir: Path) -> None:
    config = json.loads((tiny_gpt2_onnx_dir / "encore_gpt2.json").read_text())
    lyricist = GPT2Lyricist.load(tiny_gpt2_onnx_dir)
    assert config["newline_token_ids"]
    assert all("\n" in lyricist.tokenizer.decode([i]) for i in config["newline_token_ids"])
    assert lyricist.tokenizer.token_to_id("<|endoftext|>") == config["eos_token_id"]
    assert config["source"].endswith("/hf") and config["format"] == "encore-gpt2"


def test_batched_cache_matches_transformers(tiny_gpt2_hf_dir: Path,
                                            tiny_gpt2_onnx_dir: Path) -> None:
    """Batch 3: 5 tokens, then 4 more through the cache, against one transformers forward."""
    model, sess = hf_model(tiny_gpt2_hf_dir), session(tiny_gpt2_onnx_dir)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, (3, 9))
    with torch.no_grad():
        reference = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    past = np.zeros((2, 2, 3, 2, 0, 32), np.float32)
    first, past = sess.run(None, {"input_ids": ids[:, :5], "past": past})
    second, present = sess.run(None, {"input_ids": ids[:, 5:], "past": past})
    assert present.shape == (2, 2, 3, 2, 9, 32)
    assert np.abs(np.concatenate([first, second], axis=1) - reference).max() <= 1e-4


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
    assert max(parity["full_logits_max_abs_diff"], parity["cached_logits_max_abs_diff"]) \
        <= PARITY_TOLERANCE
    assert 0 < parity["half_rounding_max_abs_diff"] < 0.05
    runner = GPT2Lyricist.load(tmp_path / "half")
    assert runner.greedy("the night", 8) == GPT2Lyricist.load(tiny_gpt2_onnx_dir).greedy(
        "the night", 8)
    rebuilt = hf_from_export(tmp_path / "half", tmp_path / "hf")  # still fine-tunable
    assert (rebuilt / "model.safetensors").is_file()
