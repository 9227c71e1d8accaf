"""GPT-2 lyricist speed: our ONNX Runtime runner against transformers, CTranslate2 and optimum.

    python benchmarks/bench_lyrics_gpt2.py                       # all shapes, 1 and 2 threads
    python benchmarks/bench_lyrics_gpt2.py --shapes gpt2 --threads 1 --runs 3
    python benchmarks/bench_lyrics_gpt2.py --shapes shipped --runs 1 --quick   # a smoke run
    python benchmarks/bench_lyrics_gpt2.py --perplexity          # the shipped model's int8 cost
    python benchmarks/bench_lyrics_gpt2.py --shapes distilgpt2 gpt2 --threads 1 \
        --optimum-python /tmp/optimum-venv/bin/python             # with optimum (see below)

Shapes: ``shipped`` (models_onnx/lyrics_gpt2, 4x256, 8k vocabulary; its Hugging Face form is
rebuilt from the exported weights), ``distilgpt2`` (6 layers x 768, 50,257 tokens) and
``gpt2`` (12 x 768): random weights from transformers' GPT2Config (no download is possible
here), seed 0, the shipped tokenizer padded with placeholder tokens to 50,257 so that every
engine sees the same vocabulary. Every engine runs the same weights:

- ``ours``: ``GPT2Lyricist`` on ``export_gpt2(..., half_weights=False)`` (float32);
- ``ours-int8``: the ``model_int8.onnx`` that ``export_gpt2(..., int8=True)`` writes beside
  the float graph (int8 weight matrices, ONNX Runtime dynamic quantization);
- ``transformers``: ``model.generate()`` (PyTorch eager, its own cache);
- ``ct2`` / ``ct2-int8``: CTranslate2 ``Generator`` on the converted folder, compute type
  float32 / int8 (the ``bench`` extra: ``pip install ctranslate2``); ``end_token=[]`` so
  that it, too, goes on past end-of-text.

- ``optimum`` / ``optimum-int8`` (only with ``--optimum-python``): optimum's
  ``ORTModelForCausalLM`` and its ``generate()``, on the ONNX graph optimum exports itself from
  the same Hugging Face folder (``export=True``, kept in WORK/SHAPE/optimum), and on that graph
  quantized by optimum's ``ORTQuantizer`` (dynamic int8, per tensor, its AVX-512 VNNI
  configuration; WORK/SHAPE/optimum/int8), one ONNX Runtime intra-op thread set through its
  session options. optimum-onnx 0.1.0 pins transformers < 4.58, older than the project's, so
  it runs in a separate interpreter: ``benchmarks/optimum_peer.py`` in a subprocess, timing
  each call itself (wall and that process's CPU time), alternating with the others as usual.
  That interpreter is a side virtual environment that has its own optimum, transformers,
  tokenizers and huggingface-hub and borrows torch, onnxruntime, numpy and the rest from the
  project's environment through a ``.pth`` file read after its own site-packages, e.g.::

      python -m venv /tmp/optimum-venv      # the base Python of the project's .venv
      /tmp/optimum-venv/bin/pip install --no-deps optimum-onnx==0.1.0 optimum==2.1.0 \
          transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.2
      .venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
          > /tmp/optimum-venv/lib/python3.11/site-packages/zz_project_venv.pth

  (``--no-deps`` so that pip never touches the project's packages.)

Figures, per shape and thread count (torch, ONNX Runtime and CTranslate2 intra-op threads):

- ``tok/s``: greedy, batch 1, 64 new tokens after a 32-token prompt (prefill included),
  end-of-text not stopping anyone;
- ``ttft@P``: time to the first token (prefill + argmax) after P prompt tokens, P = 32,
  128, 512 (not past the model's positions);
- ``8x25``: 8 candidate lines of 25 tokens sampled in one batch (top-k 40, top-p 0.95,
  temperature 0.9, repetition penalty 1.2), every line forced to 25 tokens.

Each table is printed by wall time and, at 1 thread, by process CPU time (the work itself:
on a shared machine another process holding the core inflates wall time, not CPU time).
Under them: this core's streaming read bandwidth (numpy over 1 GiB, with 2 MiB and with
4 KiB pages), the bytes of weights a batch-1 decode step must read, hence the "bandwidth
floor ms/step" of float32 and int8 weights, and each engine's measured step against it
(greedy time minus ttft@32, over the 63 steps): the floor bounds how much faster than
transformers any float32 engine can decode at batch 1.

The engines alternate inside every repetition (the order rotates), so a load change on the
shared machine hits all of them alike; each cell is the median of --runs repetitions with
its spread (min-max) after one warm-up. Greedy tokens are checked against transformers':
ours must be identical (exit 1 otherwise); CTranslate2's and int8's agreement is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.lyrics.gpt2_runner import GPT2Lyricist  # noqa: E402
from export.gpt2_onnx import export_gpt2, hf_from_export, hf_greedy, load_hf  # noqa: E402

SHIPPED = REPO / "models_onnx" / "lyrics_gpt2"
SHAPES = {"distilgpt2": 6, "gpt2": 12}  # layers; 768 wide, 12 heads, 50,257 tokens
VOCAB = 50257
PROMPT = ("about: night\nthe moon is rising over silver water\nand the river runs along "
          "the dark and quiet town\n")
GREEDY_PROMPT, GREEDY_NEW = 32, 64
TTFT_PROMPTS = (32, 128, 512)
LINES, LINE_TOKENS = 8, 25
SAMPLING = {"temperature": 0.9, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.2}


# ---- the models ------------------------------------------------------------------------------
def random_hf(name: str, out: Path) -> Path:
    """A random-weight GPT-2 folder of ``name``'s shape with a 50,257-token tokenizer."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    config = GPT2Config(n_layer=SHAPES[name], n_embd=768, n_head=12, vocab_size=VOCAB,
                        n_positions=1024, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).eval().save_pretrained(out)
    tokenizer = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
    missing = VOCAB - tokenizer.get_vocab_size(with_added_tokens=True)
    tokenizer.add_tokens([AddedToken(f"<|unused{i}|>", special=True) for i in range(missing)])
    eos = "<|endoftext|>"
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=eos, eos_token=eos,
                            unk_token=eos).save_pretrained(out)
    return out


def prepare(shape: str, work: Path, want_ct2: bool) -> dict[str, Path]:
    """Folders of one shape: hf, ours, ours-int8 and (if wanted) ct2."""
    import contextlib
    import io

    folder = work / shape
    paths = {"hf": folder / "hf", "ours": folder / "ours", "ours-int8": folder / "ours_int8"}
    if shape == "shipped":
        paths["ours"] = SHIPPED
        if not (paths["hf"] / "config.json").is_file():
            hf_from_export(SHIPPED, paths["hf"])
    else:
        random_hf(shape, paths["hf"])
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if not (paths["ours"] / "encore_gpt2.json").is_file():
            export_gpt2(paths["hf"], paths["ours"], half_weights=False, int8=False)
        if not (paths["ours-int8"] / "encore_gpt2.json").is_file():
            export_gpt2(paths["hf"], paths["ours-int8"], int8=True)
    if want_ct2:
        from ctranslate2.converters import TransformersConverter

        paths["ct2"] = folder / "ct2"
        if not (paths["ct2"] / "model.bin").is_file():
            TransformersConverter(str(paths["hf"])).convert(str(paths["ct2"]), force=True)
    return paths


# ---- the engines -----------------------------------------------------------------------------
class Ours:
    def __init__(self, folder: Path, threads: int, weights: str):
        self.lyricist = GPT2Lyricist.load(folder, threads=threads, weights=weights,
                                          providers=["CPUExecutionProvider"])

    def first_token(self, ids: list[int]) -> int:
        return int(np.argmax(self.lyricist.new_cache(1, len(ids)).run(np.asarray([ids]))[0]))

    def greedy(self, ids: list[int], n: int) -> list[int]:
        cache = self.lyricist.new_cache(1, len(ids) + n)
        out = [int(np.argmax(cache.run(np.asarray([ids]))[0]))]
        while len(out) < n:
            out.append(int(np.argmax(cache.run(np.asarray([[out[-1]]]))[0])))
        return out

    def lines(self, ids: list[int], rng: np.random.Generator) -> None:
        text = self.lyricist.decode(ids)
        self.lyricist.generate_ids(text, LINES, rng, max_tokens=LINE_TOKENS,
                                   min_tokens=LINE_TOKENS, **SAMPLING)


class Transformers:
    def __init__(self, model, threads: int):
        self.model, self.threads = model, threads

    def first_token(self, ids: list[int]) -> int:
        torch.set_num_threads(self.threads)
        return hf_greedy(self.model, ids, 1)[0]

    def greedy(self, ids: list[int], n: int) -> list[int]:
        torch.set_num_threads(self.threads)
        return hf_greedy(self.model, ids, n)

    def lines(self, ids: list[int], rng: np.random.Generator) -> None:
        from transformers import GenerationConfig

        torch.set_num_threads(self.threads)
        torch.manual_seed(int(rng.integers(1 << 31)))
        x = torch.tensor([ids] * LINES)
        generation = GenerationConfig(
            do_sample=True, min_new_tokens=LINE_TOKENS, max_new_tokens=LINE_TOKENS,
            eos_token_id=[], pad_token_id=0, **SAMPLING)
        with torch.no_grad():
            self.model.generate(x, attention_mask=torch.ones_like(x), generation_config=generation)


class CTranslate2:
    def __init__(self, folder: Path, threads: int, compute_type: str, tokens: list[str]):
        import ctranslate2

        self.generator = ctranslate2.Generator(str(folder), device="cpu",
                                               compute_type=compute_type,
                                               intra_threads=threads, inter_threads=1)
        self.tokens = tokens  # id -> token string (the generator's vocabulary)

    def first_token(self, ids: list[int]) -> int:
        return self.greedy(ids, 1)[0]

    def greedy(self, ids: list[int], n: int) -> list[int]:
        result = self.generator.generate_batch(
            [[self.tokens[i] for i in ids]], max_length=n, sampling_topk=1, end_token=[],
            include_prompt_in_result=False)
        return list(result[0].sequences_ids[0])

    def lines(self, ids: list[int], rng: np.random.Generator) -> None:
        self.generator.generate_batch(
            [[self.tokens[i] for i in ids]] * LINES, max_length=LINE_TOKENS, end_token=[],
            sampling_topk=SAMPLING["top_k"],
            sampling_topp=SAMPLING["top_p"], sampling_temperature=SAMPLING["temperature"],
            repetition_penalty=SAMPLING["repetition_penalty"], include_prompt_in_result=False)


class Optimum:
    """optimum's ORTModelForCausalLM in its own interpreter (benchmarks/optimum_peer.py),
    which times every call itself: ``last`` is the (wall, CPU) seconds of the latest one."""

    times_itself = True

    def __init__(self, python: str, hf_dir: Path, onnx_dir: Path, threads: int, weights: str):
        import json
        import subprocess

        self.json = json
        self.log = onnx_dir.parent / f"optimum_{weights}.log"
        self.process = subprocess.Popen(
            [python, str(REPO / "benchmarks" / "optimum_peer.py"), str(hf_dir.resolve()),
             str(onnx_dir.resolve()), str(threads), weights],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True)
        ready = self._reply()
        self.versions = ready["versions"]
        self.last = (0.0, 0.0)

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            tail = self.log.read_text()[-2000:]
            raise SystemExit(f"optimum's worker stopped (its log, {self.log}):\n{tail}")
        return self.json.loads(line)

    def _ask(self, request: dict) -> list[int]:
        self.process.stdin.write(self.json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self._reply()
        self.last = (reply["wall"], reply["cpu"])
        return reply["ids"]

    def first_token(self, ids: list[int]) -> int:
        return self._ask({"op": "first", "ids": ids})[0]

    def greedy(self, ids: list[int], n: int) -> list[int]:
        return self._ask({"op": "greedy", "ids": ids, "n": n})

    def lines(self, ids: list[int], rng: np.random.Generator) -> None:
        self._ask({"op": "lines", "ids": ids, "lines": LINES, "tokens": LINE_TOKENS,
                   "seed": int(rng.integers(1 << 31)), "sampling": SAMPLING})

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


# ---- timing ----------------------------------------------------------------------------------
def alternate(engines: dict[str, object], call: Callable[[object], object],
              runs: int) -> dict[str, list[tuple[float, float]]]:
    """(wall, process CPU) seconds of ``call(engine)`` per engine: one warm-up each, then
    ``runs`` rounds, the engines' order rotating every round. CPU time counts every thread of
    this process (CTranslate2 computes in its own), and not the time another process held
    the core: at 1 thread it is the work itself, steadier than wall time on a shared
    machine."""
    names = list(engines)
    for name in names:
        call(engines[name])
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[: r % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            call(engines[name])
            elapsed = (time.perf_counter() - wall, time.process_time() - cpu)
            if getattr(engines[name], "times_itself", False):
                elapsed = engines[name].last  # another process: its own clocks
            times[name].append(elapsed)
    return times


def cell(values: list[float], scale: float = 1.0, rate: bool = False) -> str:
    """median [min-max] of ``values`` (seconds) times ``scale``, or ``scale`` over them."""
    figures = [scale / v for v in values] if rate else [v * scale for v in values]
    med = statistics.median(figures)
    return f"{med:8.1f} [{min(figures):.0f}-{max(figures):.0f}]"


def random_ids(n: int, vocab: int, seed: int) -> list[int]:
    return [0, *np.random.default_rng(seed).integers(1, vocab, n - 1).tolist()]


def bench_shape(shape: str, paths: dict[str, Path], threads: int, runs: int, quick: bool,
                optimum_python: str | None = None
                ) -> tuple[list[str], dict[str, dict[str, float]]]:
    model, tokenizer = load_hf(paths["hf"])
    engines: dict[str, object] = {"ours": Ours(paths["ours"], threads, "float"),
                                  "ours-int8": Ours(paths["ours-int8"], threads, "int8"),
                                  "transformers": Transformers(model, threads)}
    if "ct2" in paths:
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        tokens += [tokens[0]] * (model.config.vocab_size - len(tokens))
        engines["ct2"] = CTranslate2(paths["ct2"], threads, "float32", tokens)
        engines["ct2-int8"] = CTranslate2(paths["ct2"], threads, "int8", tokens)
    if optimum_python:
        onnx_dir = paths["hf"].parent / "optimum"
        engines["optimum"] = Optimum(optimum_python, paths["hf"], onnx_dir, threads, "float")
        engines["optimum-int8"] = Optimum(optimum_python, paths["hf"], onnx_dir, threads, "int8")
    ours: Ours = engines["ours"]  # type: ignore[assignment]
    huge = huge_pages_mib()
    vocab = min(len(tokenizer), model.config.vocab_size)
    n_positions = ours.lyricist.n_positions
    new = 8 if quick else GREEDY_NEW
    prompt = random_ids(GREEDY_PROMPT, vocab, 1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = engines["transformers"].greedy(prompt, new)
        agreement = {}
        for name, engine in engines.items():
            got = engine.greedy(prompt, new)
            pairs = enumerate(zip(got, reference, strict=False))
            agreement[name] = next((i for i, (a, b) in pairs if a != b), len(reference))
        if agreement["ours"] != new:
            print(f"{shape}: our greedy tokens differ from transformers' at "
                  f"{agreement['ours']}; the export is broken")
            raise SystemExit(1)
        rows = {"tok/s": alternate(engines, lambda e: e.greedy(prompt, new), runs)}
        for p in TTFT_PROMPTS[:1] if quick else TTFT_PROMPTS:
            if p <= n_positions:
                ids = random_ids(p, vocab, p)
                rows[f"ttft@{p} ms"] = alternate(engines, lambda e, ids=ids: e.first_token(ids),
                                                 runs)
        line_prompt = ours.lyricist.context_ids(PROMPT, LINE_TOKENS)
        rng = np.random.default_rng(0)
        rows[f"{LINES}x{LINE_TOKENS} ms"] = alternate(
            engines, lambda e: e.lines(line_prompt, rng), runs)

    names = list(engines)
    for engine in engines.values():
        if isinstance(engine, Optimum):
            engine.close()
    out = [f"{shape}, {threads} thread(s): greedy tokens equal to transformers' before the "
           "first difference: " + ", ".join(f"{n} {agreement[n]}/{new}" for n in names)]
    if optimum_python:
        out.append(f"optimum: {engines['optimum'].versions}")
    if huge is not None:
        out.append(f"memory in 2 MiB pages after loading every engine: {huge} MiB (ours asks "
                   "for its weights; the others' stay in 4 KiB pages)")
    clocks = ("wall", "cpu") if threads == 1 else ("wall",)
    medians: dict[str, dict[str, dict[str, float]]] = {clock: {} for clock in clocks}
    for k, clock in enumerate(clocks):
        out.append(f"{clock + ' time':14}" + "".join(f"{n:>22}" for n in names))
        for metric, times in rows.items():
            rate = metric == "tok/s"
            scale = float(new) if rate else 1000.0
            values = {n: [t[k] for t in times[n]] for n in names}
            out.append(f"{metric:14}" + "".join(f"{cell(values[n], scale, rate):>22}"
                                                for n in names))
            medians[clock][metric] = {n: statistics.median(values[n]) for n in names}
    out += decode_floor(paths["hf"], medians[clocks[-1]], new, names)
    return out, medians


# ---- the memory-bandwidth floor of batch-1 decoding ----------------------------------------
def read_bandwidth(gib: float = 1.0, runs: int = 7) -> dict[str, float]:
    """This core's streaming read speed, bytes/s (best of ``runs`` passes over ``gib`` GiB,
    by this thread's CPU time; another process's reads still share the memory bus):
    ``huge`` from numpy's own array (numpy asks Linux for 2 MiB pages for big arrays),
    ``4k`` from an anonymous mmap left at the 4 KiB pages that malloc gives ONNX Runtime,
    transformers and CTranslate2 here (Linux's transparent huge pages: "madvise" mode)."""
    import mmap

    n = int(gib * 2**30) // 8
    huge = np.ones(n, np.uint64)
    small_map = mmap.mmap(-1, n * 8)
    small = np.frombuffer(small_map, np.uint64)
    small[:] = 1
    best = {}
    for name, array in (("huge", huge), ("4k", small)):
        times = []
        for _ in range(runs):
            start = time.thread_time()  # CPU time: not the time another process held the core
            np.bitwise_or.reduce(array)
            times.append(time.thread_time() - start)
        best[name] = array.nbytes / min(times)
    del array, small, huge
    small_map.close()
    return best


def bytes_per_step(hf_dir: Path) -> dict[str, float]:
    """Bytes of weights one batch-1 decode step reads: every weight matrix once (the tied
    embedding as the LM head), biases and norms; not the position table (one row)."""
    from safetensors import safe_open

    matrices = other = 0
    with safe_open(str(hf_dir / "model.safetensors"), "np") as f:
        for key in f.keys():
            shape = f.get_slice(key).get_shape()
            size = int(np.prod(shape))
            if key.endswith("wpe.weight") or key.startswith("lm_head"):
                continue  # one row read; the LM head is the tied wte
            if len(shape) == 2:
                matrices += size
            else:
                other += size
    return {"float32": 4.0 * (matrices + other), "int8": matrices + 4.0 * other}


def huge_pages_mib() -> int | None:
    """This process's anonymous memory in 2 MiB pages (Linux), MiB; None elsewhere."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) // 1024
    return None


def last_level_cache() -> int:
    """Bytes of the largest CPU cache Linux lists (0 when it lists none)."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        if text[:-1].isdigit() and text[-1] in units:
            sizes.append(int(text[:-1]) * units[text[-1]])
    return max(sizes, default=0)


_BANDWIDTH: dict[str, float] = {}


def decode_floor(hf_dir: Path, medians: dict[str, dict[str, float]], new: int,
                 names: list[str]) -> list[str]:
    """The bandwidth floor of a batch-1 decode step (weights read / streaming speed) and each
    engine's step: (greedy - ttft@32) / (new - 1), from the medians."""
    if not _BANDWIDTH:
        _BANDWIDTH.update(read_bandwidth())
    weights = bytes_per_step(hf_dir)
    fast, slow = _BANDWIDTH["huge"], _BANDWIDTH["4k"]
    lines = [f"  read bandwidth (1 core, best of 7 over 1 GiB, CPU time): {fast / 1e9:.1f} "
             f"GB/s with 2 MiB pages, {slow / 1e9:.1f} GB/s with 4 KiB pages"]
    l3 = last_level_cache()
    if l3 and weights["float32"] < l3:
        lines.append(f"  the weights ({weights['float32'] / 1e6:.0f} MB) fit in the "
                     f"{l3 / 2**20:.0f} MiB last-level cache: a step is not bound by memory "
                     "and the floor below is no bound")
    floor = {k: 1000 * b / fast for k, b in weights.items()}
    lines.append("  bandwidth floor ms/step: " + ", ".join(
        f"{k} {floor[k]:.1f} ({weights[k] / 1e6:.0f} MB/step; {1000 * weights[k] / slow:.1f} at "
        "4 KiB pages)" for k in weights))
    if "tok/s" not in medians or f"ttft@{GREEDY_PROMPT} ms" not in medians:
        return lines
    step = {n: 1000 * (medians["tok/s"][n] - medians[f"ttft@{GREEDY_PROMPT} ms"][n])
            / (new - 1) for n in names}
    kind = {n: "int8" if n.endswith("int8") else "float32" for n in names}
    lines.append("  decode ms/step (greedy - ttft@32, medians): " + ", ".join(
        f"{n} {step[n]:.1f} ({step[n] / floor[kind[n]]:.2f}x floor)" for n in names))
    if "transformers" in step:
        goal = step["transformers"] / 3
        lines.append(f"  3x transformers at float32 needs {goal:.1f} ms/step: "
                     f"{goal / floor['float32']:.2f}x the float32 floor, "
                     f"{goal / floor['int8']:.2f}x the int8 floor")
    return lines


def ratios(medians: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Speed of ours against transformers and the fastest peer, float32 and int8, by each
    clock measured."""
    out = []
    for clock, table in medians.items():
        for metric, times in table.items():
            parts = [f"vs transformers {times['transformers'] / times['ours']:.2f}x"]
            if "ct2" in times:
                parts.append(f"vs ct2 {times['ct2'] / times['ours']:.2f}x")
                parts.append(f"int8 vs ct2-int8 {times['ct2-int8'] / times['ours-int8']:.2f}x")
            if "optimum" in times:
                parts.append(f"vs optimum {times['optimum'] / times['ours']:.2f}x")
                parts.append(f"int8 vs optimum-int8 "
                             f"{times['optimum-int8'] / times['ours-int8']:.2f}x")
            parts.append(f"int8 vs transformers "
                         f"{times['transformers'] / times['ours-int8']:.2f}x")
            out.append(f"  {clock:4} {metric:14} ours " + ", ".join(parts))
    return out


# ---- the int8 cost -------------------------------------------------------------------------
def perplexity(folder: Path, blocks: list[list[int]], weights: str = "float") -> float:
    lyricist = GPT2Lyricist.load(folder, providers=["CPUExecutionProvider"], weights=weights)
    total, count = 0.0, 0
    for ids in blocks:
        logits = lyricist.new_cache(1, len(ids)).run(np.asarray([ids]), all_logits=True)[0]
        shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
        logprobs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        total -= logprobs[np.arange(len(ids) - 1), ids[1:]].sum()
        count += len(ids) - 1
    return float(np.exp(total / count))


def int8_cost(work: Path, n_blocks: int = 64, block: int = 128) -> None:
    """Held-out perplexity of the shipped model as shipped and with int8 weights."""
    from export.lyrics_corpus import load_verse

    paths = prepare("shipped", work, want_ct2=False)
    lyricist = GPT2Lyricist.load(SHIPPED)
    text = "\n\n".join("\n".join(s) for s in load_verse().held_out[:2000])
    ids = lyricist.encode(text)
    blocks = [[lyricist.eos_id, *ids[i:i + block - 1]]
              for i in range(0, n_blocks * (block - 1), block - 1)]
    shipped, int8 = perplexity(SHIPPED, blocks), perplexity(paths["ours-int8"], blocks, "int8")
    print(f"shipped model, held-out verse ({n_blocks} blocks of {block} tokens): perplexity "
          f"{shipped:.2f} as shipped, {int8:.2f} with int8 weights ({int8 / shipped - 1:+.2%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["shipped", "distilgpt2", "gpt2"],
                        choices=["shipped", *SHAPES])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("runs") / "bench_lyrics_gpt2",
                        help="where the random models and conversions are kept and reused "
                             "(default runs/bench_lyrics_gpt2: ~2.5 GB with every shape)")
    parser.add_argument("--no-ct2", action="store_true", help="skip CTranslate2")
    parser.add_argument("--optimum-python", metavar="PYTHON",
                        help="an interpreter with optimum-onnx and its own older transformers "
                             "(see above): adds optimum and optimum-int8")
    parser.add_argument("--quick", action="store_true", help="8 greedy tokens, ttft@32 only")
    parser.add_argument("--perplexity", action="store_true",
                        help="only the int8 perplexity cost on the shipped model")
    args = parser.parse_args(argv)
    if args.perplexity:
        int8_cost(args.work)
        return 0
    want_ct2 = not args.no_ct2
    if want_ct2:
        try:
            import ctranslate2  # noqa: F401
        except ImportError:
            print("ctranslate2 is not installed (pip install -e '.[bench]'): skipping it")
            want_ct2 = False
    import transformers

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"average {load:.2f} at the start (shared machine: figures move +-30% or more)")
    versions = [f"torch {torch.__version__}", f"transformers {transformers.__version__}",
                f"onnxruntime {ort.__version__}"]
    if want_ct2:
        import ctranslate2

        versions.append(f"ctranslate2 {ctranslate2.__version__}")
    print(", ".join(versions))
    print(f"cells: median [min-max] of {args.runs} alternating runs; tok/s: greedy, batch 1, "
          f"{GREEDY_NEW} new tokens after {GREEDY_PROMPT}; ttft: prefill + first token; "
          f"{LINES}x{LINE_TOKENS}: sampled lines in one batch")
    for shape in args.shapes:
        paths = prepare(shape, args.work, want_ct2)
        for threads in args.threads:
            lines, medians = bench_shape(shape, paths, threads, args.runs, args.quick,
                                         args.optimum_python)
            print("\n".join(lines + ratios(medians)), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
