"""A Hugging Face GPT-2 folder checked before transformers (or torch) is loaded.

``encore convert gpt2 HF_DIR OUT`` calls :func:`check_hf_folder` first, so a damaged or
lying folder (config.json a list, ``n_layer`` 100,000, a safetensors header that claims
more than the file holds) is refused in milliseconds, before seconds of imports; the
export (export/gpt2_onnx.py) calls it again when it loads the folder. No torch here.
"""

from __future__ import annotations

import math
from pathlib import Path

from engine.untrusted import (
    MiB,
    MissingFileError,
    UntrustedFileError,
    check_file,
    excerpt,
    open_file,
    parse_json,
    read_text,
)

HF_CONFIG_FILE = "hf_config.json"
"""The Hugging Face config, kept beside the exported graph."""
HF_SIZES = {"n_layer": 96, "n_head": 128, "n_embd": 12_288, "n_positions": 65_536,
            "vocab_size": 1_000_000}
"""The largest value of each size a GPT-2 config may give (GPT-3's widest is 12,288)."""
MAX_CONFIG_BYTES = MiB
MAX_SAFETENSORS_HEADER = 100 * MiB


def check_hf_folder(hf_dir: Path) -> None:
    """Refuse a folder whose config.json or model.safetensors is damaged or lies, before
    transformers reads them: config.json a JSON object of a GPT-2 with sizes in range, the
    safetensors header readable and large enough for the weights the config declares (so
    a config claiming 100,000 layers is refused, not allocated)."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"{hf_dir}: no such folder; give a Hugging Face GPT-2 folder "
                                "(config.json, model.safetensors, tokenizer files)")
    if not (hf_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{hf_dir} is not a Hugging Face model folder (no config.json): give a folder "
            "saved with save_pretrained, e.g. a downloaded gpt2 or distilgpt2, or "
            "runs/<name>/hf from `encore train lyrics`")
    path = hf_dir / "config.json"
    fix = "a GPT-2 folder as save_pretrained writes it (a downloaded gpt2 or distilgpt2)"
    cfg = parse_json(read_text(path, MAX_CONFIG_BYTES, fix), path, fix)
    if not isinstance(cfg, dict):
        raise UntrustedFileError(path, f"expected a JSON object, got {type(cfg).__name__}", fix)
    if cfg.get("model_type") != "gpt2":
        raise UntrustedFileError(path, f"holds a {excerpt(cfg.get('model_type'))} model; only "
                                       "GPT-2 (model_type 'gpt2') can be converted",
                                 "give a gpt2 or distilgpt2 folder")
    sizes = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024,
             "vocab_size": 50257}
    for key, largest in HF_SIZES.items():
        value = cfg.get(key, sizes[key])
        if type(value) is not int or not 1 <= value <= largest:
            raise UntrustedFileError(path, f"{key} = {excerpt(value)}; it must be a whole number "
                                           f"1..{largest}", fix)
        sizes[key] = value
    if sizes["n_embd"] % sizes["n_head"]:
        raise UntrustedFileError(path, f"n_embd {sizes['n_embd']} is not a multiple of n_head "
                                       f"{sizes['n_head']}", fix)
    weights = hf_dir / "model.safetensors"
    if not weights.exists():
        raise MissingFileError(weights, "no such file", "the weights in safetensors form are "
                               "needed (a pickled pytorch_model.bin is not loaded: it can run "
                               "code); save the model with save_pretrained")
    stored = _safetensors_elements(weights)
    n, e = sizes["n_layer"], sizes["n_embd"]
    inner = cfg.get("n_inner") or 4 * e  # the MLP's width (None: 4 x n_embd)
    if type(inner) is not int or not 1 <= inner <= 8 * HF_SIZES["n_embd"]:
        raise UntrustedFileError(path, f"n_inner = {excerpt(inner)}; a whole number", fix)
    declared = n * (4 * e * e + 2 * e * inner) + (sizes["vocab_size"] + sizes["n_positions"]) * e
    if stored < 0.9 * declared:
        raise UntrustedFileError(path, f"declares about {declared:,} weights ({n} layers of "
                                       f"{e}), but {weights.name} holds {stored:,}", fix)


def _safetensors_elements(path: Path) -> int:
    """How many numbers a safetensors file holds, from its checked header."""
    fix = "copy or download the model again, whole"
    info = check_file(path, fix)
    with open_file(path, fix) as f:
        head = f.read(8)
        if len(head) < 8:
            raise UntrustedFileError(path, "truncated (no safetensors header)", fix)
        length = int.from_bytes(head, "little")
        if length > min(MAX_SAFETENSORS_HEADER, info.st_size - 8):
            raise UntrustedFileError(path, f"its header claims {length:,} bytes, more than the "
                                           "file holds", fix)
        header = parse_json(f.read(length), path, fix)
    if not isinstance(header, dict):
        raise UntrustedFileError(path, "a damaged safetensors header (not an object)", fix)
    total = 0
    data_bytes = info.st_size - 8 - length
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        shape = tensor.get("shape") if isinstance(tensor, dict) else None
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) \
                or not isinstance(offsets, list) or len(offsets) != 2 or \
                not all(type(o) is int for o in offsets) or \
                not 0 <= offsets[0] <= offsets[1] <= data_bytes:
            raise UntrustedFileError(path, f"a damaged safetensors header at tensor "
                                           f"{excerpt(name)}", fix)
        total += math.prod(shape)
    return total
