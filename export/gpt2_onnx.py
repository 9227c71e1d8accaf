"""Export a Hugging Face GPT-2 folder to one ONNX graph with an explicit key/value cache.

    export_gpt2(Path("runs/lyrics_gpt2/hf"), Path("models_onnx/lyrics_gpt2"))
    encore convert gpt2 runs/lyrics_gpt2/hf models_onnx/lyrics_gpt2      # the same

Any local GPT-2 folder works: ours (``export/train_lyrics.py``), or a downloaded ``gpt2`` /
``distilgpt2`` that carries only ``vocab.json`` + ``merges.txt`` (the tokenizer is loaded
with transformers and saved in the ``tokenizers`` library's single-file form).

The output folder holds:

- ``model.onnx``, the I/O contract the engine relies on (``engine/lyrics/gpt2_runner.py``),
  written node by node by ``export/gpt2_graph.py`` (format version 2)::

      input_ids          int64   [batch, seq]
      total_length       int32   []      cached positions + seq
      logits_start       int64   []      seq - 1: the next token's logits only; 0: all
      past_key.{i}       float32 [batch, n_head, capacity, head_dim]   per layer i
      past_value.{i}     float32 [batch, n_head, capacity, head_dim]
      logits             float32 [batch, seq - logits_start, vocab]
      present_key.{i}, present_value.{i}   the cache after this run

  The caller preallocates the cache buffers and binds each as both the past input and the
  present output of its layer (ONNX Runtime I/O binding): the attention operator
  (``GroupQueryAttention``) writes the new keys and values in place. The position of
  ``input_ids[:, j]`` is ``total_length - seq + j``.
- ``tokenizer.json``, readable by ``tokenizers.Tokenizer.from_file``;
- ``encore_gpt2.json``: the sizes, the end-of-text and newline token ids, where the model
  came from, and the parity figures measured at export.

Why the graph is written out rather than traced from ``GPT2LMHeadModel``: the model's cache
is a transformers ``Cache`` object whose classes change between releases, the traced
attention concatenates the cache into a new tensor at every step, and the LM head would run
at every prompt position. The written graph uses the model's own weights under their
transformers names and ONNX Runtime's fused operators; parity with the transformers forward
and ``generate()`` is checked on every export (:func:`check_parity`).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from engine.lyrics.gpt2_cache import KVCache
from engine.output_files import staged
from engine.untrusted import excerpt
from export.gpt2_graph import HALF_MIN_ELEMENTS, HALF_SUFFIX, OPSET, build_graph, check_supported
from export.hf_folder import (  # noqa: F401 (check_hf_folder: read before torch loads)
    HF_CONFIG_FILE,
    HF_SIZES,
    MAX_CONFIG_BYTES,
    MAX_SAFETENSORS_HEADER,
    check_hf_folder,
)

FORMAT = "encore-gpt2"
FORMAT_VERSION = 2
MODEL_FILE = "model.onnx"
INT8_MODEL_FILE = "model_int8.onnx"
INT8_AUTO_PARAMETERS = 50_000_000
"""Models of at least this many parameters get ``model_int8.onnx`` beside the float graph by
default (distilgpt2 has 82 M, gpt2 124 M; the shipped lyricist 5 M): 8 candidate lines of
float32 took 0.7 s (distilgpt2) and 1.0-1.2 s (gpt2) of one core's CPU time, against the
1.07 s of half a bar at 112 BPM, int8 2.3-2.5x less (benchmarks/bench_lyrics_gpt2.py)."""
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "encore_gpt2.json"
PARITY_TOLERANCE = 1e-5
"""Default largest logit difference between ONNX Runtime and transformers, relative to the
largest |logit| of the reference (at least 1): float32 rounding grows with the logits, so a
pretrained GPT-2 whose logits reach ~100 is allowed ~1e-3 and our small models ~2e-4. Seen
here: 1e-6 relative or less (``export_gpt2(tolerance=...)``, ``encore convert gpt2
--tolerance``)."""
GREEDY_TOKENS = 32
PARITY_TEXT = "about: night\nthe moon is shining on the"


# ---- loading the Hugging Face folder ------------------------------------------------------
def load_hf(hf_dir: Path):
    """(model in eval mode, fast tokenizer) of a local GPT-2 folder, or a clear error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = Path(hf_dir)
    check_hf_folder(hf_dir)
    tokenizer_files = ("tokenizer.json", "vocab.json")
    if not any((hf_dir / name).is_file() for name in tokenizer_files):
        raise FileNotFoundError(f"{hf_dir} has no tokenizer (tokenizer.json, or vocab.json and "
                                "merges.txt): copy the tokenizer files of the model into it")
    try:
        tokenizer = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    except Exception as err:  # transformers raises many types here
        raise ValueError(f"{hf_dir}: transformers cannot load its tokenizer ({err}); it needs "
                         "tokenizer.json or vocab.json + merges.txt") from err
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise ValueError(f"{hf_dir}: the tokenizer has no fast (tokenizers) form to save; "
                         "add a tokenizer.json to the folder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # weights from safetensors only: a pickle (pytorch_model.bin) can run code
            model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True,
                                                         use_safetensors=True)
        except Exception as err:  # transformers raises many types here  # noqa: BLE001
            raise ValueError(f"{hf_dir}: transformers cannot load the model "
                             f"({type(err).__name__}: {excerpt(str(err), 200)}); it needs "
                             "config.json and model.safetensors as save_pretrained writes "
                             "them") from None
    if getattr(model.config, "add_cross_attention", False):
        raise ValueError(f"{hf_dir}: GPT-2 with cross-attention (an encoder-decoder part) "
                         "cannot be exported as a lyricist")
    return model.eval(), tokenizer


def _eos_id(model, tokenizer) -> int:
    for candidate in (model.config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, list):
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return int(candidate)
    raise ValueError("the model has no end-of-text token (config eos_token_id); set "
                     "eos_token_id in config.json")


def newline_token_ids(tokenizer, vocab_size: int) -> list[int]:
    """Ids of every token whose decoded text contains a newline (each ends a lyric line)."""
    backend = tokenizer.backend_tokenizer
    size = min(vocab_size, backend.get_vocab_size(with_added_tokens=True))
    texts = backend.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    return [i for i, text in enumerate(texts) if "\n" in text]


# ---- export -------------------------------------------------------------------------------
def _session(path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def _cache(session, cfg, capacity: int, batch: int = 1) -> KVCache:
    return KVCache.empty(session, n_layer=cfg.n_layer, n_head=cfg.n_head,
                         head_dim=cfg.n_embd // cfg.n_head, batch=batch, capacity=capacity)


def ort_greedy(session, cfg, prompt: list[int], n_tokens: int) -> list[int]:
    """Greedy continuation with the cache: exactly ``n_tokens`` new ids (end-of-text too)."""
    if n_tokens < 1:
        return []
    cache = _cache(session, cfg, len(prompt) + n_tokens)
    out = [int(np.argmax(cache.run(np.asarray([prompt]))[0]))]
    while len(out) < n_tokens:
        out.append(int(np.argmax(cache.run(np.asarray([[out[-1]]]))[0])))
    return out


def hf_greedy(model, prompt: list[int], n_tokens: int, pad_id: int = 0) -> list[int]:
    """``model.generate(do_sample=False)``: exactly ``n_tokens`` new ids after ``prompt``.

    ``eos_token_id=[]`` keeps generate from stopping at end-of-text (``None`` would be
    replaced by the model's own generation config), so both sides produce the same count.
    """
    from transformers import GenerationConfig

    ids = torch.tensor([prompt], dtype=torch.int64)
    generation = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=n_tokens,
                                  min_new_tokens=0, eos_token_id=[], pad_token_id=pad_id)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generated = model.generate(ids, attention_mask=torch.ones_like(ids),
                                   generation_config=generation)
    return [int(t) for t in generated[0, len(prompt):]]


def check_parity(model, tokenizer, session, prompt: list[int],
                 n_greedy: int = GREEDY_TOKENS) -> dict:
    """ONNX Runtime against the transformers model on ``prompt`` (a list of ids).

    Returns ``full_logits_max_abs_diff`` (the whole prompt in one run, every position's
    logits), ``cached_logits_max_abs_diff`` (the same prompt fed one token at a time through
    the cache, every step compared with the full forward), ``max_relative_diff`` (the larger
    of the two over the reference's largest |logit|, at least 1), and whether the greedy
    continuation of ``n_greedy`` tokens equals ``model.generate(do_sample=False)``'s.
    """
    cfg = model.config
    eos = _eos_id(model, tokenizer)
    if len(prompt) + n_greedy > cfg.n_positions:
        raise ValueError(f"parity prompt of {len(prompt)} tokens + {n_greedy} new ones is "
                         f"longer than the model's {cfg.n_positions} positions")
    ids = np.asarray([prompt], np.int64)
    with torch.no_grad():
        reference = model(input_ids=torch.from_numpy(ids)).logits.numpy()
    full = _cache(session, cfg, len(prompt)).run(ids, all_logits=True)
    cache = _cache(session, cfg, len(prompt))
    cached = np.stack([cache.run(np.asarray([[token]], np.int64))[0] for token in prompt])
    reference_greedy = hf_greedy(model, prompt, n_greedy, eos)
    onnx_greedy = ort_greedy(session, cfg, prompt, n_greedy)
    full_diff = float(np.abs(full - reference).max())
    cached_diff = float(np.abs(cached - reference[0]).max())
    scale = max(1.0, float(np.abs(reference).max()))
    return {
        "prompt_tokens": len(prompt),
        "full_logits_max_abs_diff": full_diff,
        "cached_logits_max_abs_diff": cached_diff,
        "greedy_tokens": len(reference_greedy),
        "greedy_identical": reference_greedy == onnx_greedy,
        "reference_logits_max_abs": float(np.abs(reference).max()),
        "max_relative_diff": max(full_diff, cached_diff) / scale,
    }


def parity_prompt(model, tokenizer) -> list[int]:
    """The parity check's prompt: end-of-text (a document start), then a themed line."""
    ids = [_eos_id(model, tokenizer)] + tokenizer.encode(PARITY_TEXT, add_special_tokens=False)
    return ids[: model.config.n_positions - GREEDY_TOKENS]


def _source_name(hf_dir: Path) -> str:
    """The folder's name, with its parent's when it is a training run's ``hf`` folder."""
    path = hf_dir.resolve()
    return f"{path.parent.name}/{path.name}" if path.name == "hf" else path.name


def export_gpt2(hf_dir: Path, out_dir: Path, opset: int = OPSET, *,
                tolerance: float = PARITY_TOLERANCE, half_weights: bool = True,
                int8: bool | None = None) -> dict:
    """Export the GPT-2 folder ``hf_dir`` into ``out_dir`` and check it; returns the config.

    Writes ``model.onnx``, ``tokenizer.json`` and ``encore_gpt2.json`` (the returned dict,
    parity figures under ``"parity"``). Raises ValueError when ONNX Runtime's logits differ
    from transformers' by more than ``tolerance`` times the largest |logit| (at least 1;
    default :data:`PARITY_TOLERANCE`) or the greedy continuations differ. The files are written
    into a private folder inside ``out_dir`` and moved into place only when all is well: a
    failed export leaves ``out_dir`` as it was, and a model already there is never replaced
    (refused first).

    ``half_weights`` stores the weight matrices as float16, each behind a Cast that ONNX
    Runtime folds into a float32 constant when the session opens (half the file, the same
    speed). The model is first rounded to those weights, so the parity check compares
    like with like; what the rounding itself moves the logits is recorded as
    ``half_rounding_max_abs_diff``.

    ``int8`` also writes ``model_int8.onnx``: the checked graph with int8 weight matrices
    (ONNX Runtime's dynamic quantization: int8 weights with a scale per output column,
    activations quantized per run),
    2-4x faster a step for a 768-wide model, with a cost in accuracy recorded under
    ``"int8"`` (logit deviation and greedy agreement with the float graph; the shipped
    model's perplexity cost is in its model card). ``None`` (default): only for models of
    :data:`INT8_AUTO_PARAMETERS` parameters or more. The float graph is always written.
    """
    import onnx

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    with staged(out_dir, (MODEL_FILE, INT8_MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE,
                          HF_CONFIG_FILE),
                fix="convert into a new folder, or move the old model away first") as stage:
        model, tokenizer = load_hf(hf_dir)
        cfg = model.config
        try:
            check_supported(cfg)
        except ValueError as err:
            raise ValueError(f"{hf_dir}: {err}") from err
        prompt = parity_prompt(model, tokenizer)
        if int8 is None:
            int8 = sum(p.numel() for p in model.parameters()) >= INT8_AUTO_PARAMETERS
        rounding = _round_weights_to_half(model, prompt) if half_weights else 0.0
        model_path = stage / MODEL_FILE
        onnx.save(build_graph(model, half_weights=half_weights, opset=opset), str(model_path))
        tokenizer.backend_tokenizer.save(str(stage / TOKENIZER_FILE))
        session = _session(model_path)
        parity = check_parity(model, tokenizer, session, prompt)
        if half_weights:
            parity["half_rounding_max_abs_diff"] = rounding
        parity["tolerance"] = tolerance
        worst = parity["max_relative_diff"]
        if not parity["greedy_identical"] or not math.isfinite(worst):
            raise ValueError(
                f"{out_dir / MODEL_FILE}: ONNX Runtime does not match transformers ({parity}); the "
                "export "
                "is not usable. Check that the folder is a plain GPT-2 (GPT2LMHeadModel) and "
                "that torch, transformers and onnxruntime are the versions in pyproject.toml")
        if worst > tolerance:
            raise ValueError(
                f"{out_dir / MODEL_FILE}: ONNX Runtime's logits differ from transformers' by "
                f"{worst:.2e} "
                f"of the largest logit ({parity['reference_logits_max_abs']:.1f}), more than the "
                f"tolerance {tolerance:g} ({parity}). Float32 rounding stays near 1e-6; if the "
                "greedy continuations agree and you accept the difference, convert again with "
                "a larger --tolerance")
        eos = _eos_id(model, tokenizer)
        int8_figures = None
        if int8:  # quantized from a float32 graph: behind a Cast a weight is not quantized
            float32_path = stage / ("float32_" + MODEL_FILE)
            onnx.save(build_graph(model, half_weights=False, opset=opset), str(float32_path))
            try:
                int8_figures = _quantize_int8(float32_path, stage / INT8_MODEL_FILE, session,
                                              cfg, prompt)
            finally:
                float32_path.unlink()
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n_layer": int(cfg.n_layer),
            "n_head": int(cfg.n_head),
            "head_dim": int(cfg.n_embd // cfg.n_head),
            "n_embd": int(cfg.n_embd),
            "n_positions": int(cfg.n_positions),
            "vocab_size": int(cfg.vocab_size),
            "eos_token_id": eos,
            "newline_token_ids": newline_token_ids(tokenizer, cfg.vocab_size),
            "opset": opset,
            "source": _source_name(hf_dir),
            "parity": parity,
            "weights": "float16" if half_weights else "float32",
        }
        if int8_figures:
            config["int8"] = {"file": INT8_MODEL_FILE, **int8_figures}
        (stage / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        # The Hugging Face config, so the folder can be fine-tuned again (hf_from_export).
        (stage / HF_CONFIG_FILE).write_text(model.config.to_json_string(), encoding="utf-8")
    return config


def _quantize_int8(float32_path: Path, out_path: Path, float_session, cfg,
                   prompt: list[int]) -> dict:
    """Write ``out_path``, the int8 form of the float32 graph ``float32_path``; returns how
    far it is from the float graph on ``prompt`` (logits max abs diff over the largest
    |logit|, greedy tokens in common)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a scale per output column: 3 % slower a gpt2 step than one scale per matrix, and
        # safer for real models whose columns differ in range (shipped model's perplexity
        # cost +0.03 % instead of +0.05 %)
        quantize_dynamic(str(float32_path), str(out_path), weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=["MatMul", "Gemm"],
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    quantized = _session(out_path)
    ids = np.asarray([prompt], np.int64)
    reference = _cache(float_session, cfg, len(prompt)).run(ids, all_logits=True)
    logits = _cache(quantized, cfg, len(prompt)).run(ids, all_logits=True)
    tokens = ort_greedy(float_session, cfg, prompt, GREEDY_TOKENS)
    ours = ort_greedy(quantized, cfg, prompt, GREEDY_TOKENS)
    agree = next((i for i, (a, b) in enumerate(zip(tokens, ours, strict=True)) if a != b),
                 len(tokens))
    return {"logits_max_abs_diff_vs_float": float(np.abs(logits - reference).max()),
            "reference_logits_max_abs": float(np.abs(reference).max()),
            "greedy_tokens_before_first_difference": agree, "greedy_tokens": len(tokens)}


def _round_weights_to_half(model, prompt_ids) -> float:
    """Round the big weight tensors to float16 values (kept as float32) in place; returns
    how far that moved the prompt's logits (max abs)."""
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        before = model(ids).logits
        for param in model.parameters():
            if param.numel() >= HALF_MIN_ELEMENTS:
                param.copy_(param.half().float())
        return float((model(ids).logits - before).abs().max())


def hf_from_export(onnx_dir: Path, out_dir: Path) -> Path:
    """A Hugging Face GPT-2 folder rebuilt from an exported one (``model.onnx`` holds every
    weight under its transformers name; ``hf_config.json`` the model's config), so that the
    shipped lyricist can be fine-tuned without shipping its weights twice."""
    import onnx
    import torch
    from onnx import numpy_helper
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    if not (onnx_dir / HF_CONFIG_FILE).exists():
        raise FileNotFoundError(
            f"{onnx_dir} has no {HF_CONFIG_FILE}: it was exported by an older Encore; "
            "fine-tune the Hugging Face folder it came from instead")
    config = GPT2Config.from_json_file(str(onnx_dir / HF_CONFIG_FILE))
    model = GPT2LMHeadModel(config)
    graph = onnx.load(str(onnx_dir / "model.onnx"))
    weights = {t.name.removesuffix(HALF_SUFFIX):
               torch.from_numpy(numpy_helper.to_array(t).astype(np.float32))
               for t in graph.graph.initializer}
    # Equal initializers merged by an exporter (format version 1 graphs, e.g. the ones and
    # zeros of an untrained model) survive as Identity nodes from the kept one to each name.
    for node in graph.graph.node:
        if node.op_type == "Identity" and node.input[0] in weights:
            weights.setdefault(node.output[0], weights[node.input[0]])
    state = model.state_dict()
    missing = [name for name in state if name not in weights and name != "lm_head.weight"]
    if missing:
        raise ValueError(f"{onnx_dir}/model.onnx lacks weights {missing[:4]}...: re-export it "
                         "with encore convert gpt2")
    model.load_state_dict({name: weights.get(name, weights["transformer.wte.weight"])
                           for name in state}, strict=True)
    eos = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(onnx_dir / TOKENIZER_FILE),
                                        bos_token=eos, eos_token=eos, unk_token=eos)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
