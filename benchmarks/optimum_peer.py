"""optimum's ``ORTModelForCausalLM`` as a peer of bench_lyrics_gpt2.py, in its own Python.

optimum-onnx pins an older transformers than the project's, so this worker runs under a
separate interpreter (``--optimum-python``) and never imports the project. It reads one JSON
request a line on stdin and answers one JSON line on stdout, timing each call itself (wall
and this process's CPU time), so the benchmark compares the work, not the pipe:

    {"op": "greedy", "ids": [...], "n": 64}  ->  {"ids": [...], "wall": s, "cpu": s}
    {"op": "first", "ids": [...]}            ->  {"ids": [id], "wall": s, "cpu": s}
    {"op": "lines", "ids": [...], "lines": 8, "tokens": 25, "seed": 1, "sampling": {...}}

    python benchmarks/optimum_peer.py HF_DIR ONNX_DIR THREADS float|int8

ONNX_DIR is made on first use: optimum exports HF_DIR itself (``export=True``) and saves the
result there; ``int8`` adds ``ONNX_DIR/int8``, quantized by optimum's ``ORTQuantizer``
(dynamic, per-tensor, the AVX-512 VNNI configuration).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path


def export(hf_dir: Path, onnx_dir: Path, weights: str) -> Path:
    """The folder of optimum's ONNX model for ``weights``, exported/quantized if missing."""
    from optimum.onnxruntime import ORTModelForCausalLM

    if not (onnx_dir / "config.json").is_file():
        ORTModelForCausalLM.from_pretrained(hf_dir, export=True, use_cache=True,
                                            provider="CPUExecutionProvider"
                                            ).save_pretrained(onnx_dir)
    if weights == "float":
        return onnx_dir
    int8_dir = onnx_dir / "int8"
    if not (int8_dir / "config.json").is_file():
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        quantizer = ORTQuantizer.from_pretrained(onnx_dir)
        config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
        quantizer.quantize(save_dir=int8_dir, quantization_config=config)
    return int8_dir


def load(folder: Path, threads: int):
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    torch.set_num_threads(threads)  # generate()'s logits processing runs in torch
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    onnx_files = sorted(p.name for p in folder.glob("*.onnx"))
    return ORTModelForCausalLM.from_pretrained(folder, session_options=options, use_cache=True,
                                               provider="CPUExecutionProvider",
                                               file_name=onnx_files[0])


def answer(model, request: dict) -> dict:
    import torch
    from transformers import GenerationConfig

    ids = torch.tensor([request["ids"]] * request.get("lines", 1), dtype=torch.int64)
    n = {"greedy": request.get("n"), "first": 1, "lines": request.get("tokens")}[request["op"]]
    if request["op"] == "lines":
        torch.manual_seed(int(request["seed"]))
        generation = GenerationConfig(do_sample=True, min_new_tokens=n, max_new_tokens=n,
                                      eos_token_id=[], pad_token_id=0, **request["sampling"])
    else:
        generation = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=n,
                                      min_new_tokens=0, eos_token_id=[], pad_token_id=0)
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids),
                             generation_config=generation)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"ids": [int(t) for t in out[0, ids.shape[1]:]], "wall": wall, "cpu": cpu}


def main(argv: list[str]) -> int:
    hf_dir, onnx_dir, threads, weights = Path(argv[0]), Path(argv[1]), int(argv[2]), argv[3]
    warnings.simplefilter("ignore")
    replies, sys.stdout = sys.stdout, sys.stderr  # what the libraries print stays off the pipe
    import onnxruntime
    import optimum.version
    import transformers

    model = load(export(hf_dir, onnx_dir, weights), threads)
    print(json.dumps({"ready": True, "versions": f"optimum {optimum.version.__version__}, "
                      f"transformers {transformers.__version__} (its own), onnxruntime "
                      f"{onnxruntime.__version__}"}), file=replies, flush=True)
    for line in sys.stdin:
        print(json.dumps(answer(model, json.loads(line))), file=replies, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
