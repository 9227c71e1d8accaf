"""MusicVAE decode latency: PyTorch eager vs ONNX Runtime, and unrolled vs one-step graphs.

    python benchmarks/bench_musicvae.py                     # the models in models_onnx/
    python benchmarks/bench_musicvae.py --ckpt runs/trio_4bar/last.pt
    python benchmarks/bench_musicvae.py --random            # presets, random weights

Everything runs at batch 1 on ONE thread (torch.set_num_threads(1), ORT intra-op 1), as a
worker process decodes one segment at a time. Each figure is the median of --runs calls
after --warmup calls, at temperature 0.5 with the same pre-drawn noise for both engines.

Table 1 times ``MusicVAE.decode`` (PyTorch eager) against the exported whole-segment
decoder graph (``<name>.decoder.onnx``, the loop unrolled into the graph). Table 2 times,
for flat (one-part) models, that unrolled graph against the one-step graph
(``export_step_decoder``) driven by a Python loop that samples in numpy: the measurement
behind the graph shape ``export/musicvae_onnx.py`` ships.

A shipped ONNX file has no PyTorch checkpoint beside it, so unless --ckpt is given the
eager baseline (and the step graph) use random weights of the same config, read from the
file's ``encore.config``: decode time does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.music.musicvae_runner import MusicVAERunner, make_session  # noqa: E402
from export.musicvae import MusicVAE, MusicVAEConfig, load_checkpoint  # noqa: E402
from export.musicvae_onnx import export_decoder, export_step_decoder  # noqa: E402

CPU = ["CPUExecutionProvider"]
TEMPERATURE = 0.5


@dataclass
class Case:
    """One model to time: the torch model, its unrolled decoder file, where both came from."""

    label: str
    model: MusicVAE
    decoder: Path
    weights: str  # "checkpoint" or "random"


def median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def random_model(cfg: MusicVAEConfig, seed: int = 0) -> MusicVAE:
    torch.manual_seed(seed)
    return MusicVAE(cfg).eval()


def shipped_cases(models_dir: Path) -> list[Case]:
    cases = []
    for decoder in sorted(models_dir.glob("*.decoder.onnx")):
        meta = ort.InferenceSession(str(decoder), providers=CPU).get_modelmeta()
        config = meta.custom_metadata_map.get("encore.config")
        if config is None:
            print(f"skipping {decoder}: no encore.config metadata")
            continue
        cfg = MusicVAEConfig.from_json(config)
        cases.append(Case(cfg.name, random_model(cfg), decoder, "random"))
    return cases


def checkpoint_case(path: Path, tmp: Path) -> Case:
    model, _ = load_checkpoint(path)
    model.eval()
    decoder = export_decoder(model, tmp / f"{model.cfg.name}.ckpt.decoder.onnx")
    return Case(f"{model.cfg.name} ({path})", model, decoder, "checkpoint")


def random_cases(tmp: Path) -> list[Case]:
    from export.train_musicvae import PRESETS

    cases = []
    for name, cfg in PRESETS.items():
        model = random_model(cfg)
        with torch.no_grad():
            decoder = export_decoder(model, tmp / f"{name}.random.decoder.onnx")
        cases.append(Case(f"{name} (preset)", model, decoder, "random"))
    return cases


def time_eager_vs_ort(case: Case, runs: int, warmup: int) -> tuple[float, float]:
    cfg = case.model.cfg
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, cfg.z_size)).astype(np.float32)
    uniform = rng.random((1, cfg.steps, sum(cfg.depths)), dtype=np.float32)
    z_t, uniform_t, temperature_t = torch.from_numpy(z), torch.from_numpy(uniform), \
        torch.tensor(TEMPERATURE)

    def eager():
        with torch.inference_mode():
            case.model.decode(z_t, temperature_t, uniform_t)

    runner = MusicVAERunner(case.decoder, providers=CPU, threads=1)
    eager_ms = median_ms(eager, runs, warmup)
    ort_ms = median_ms(lambda: runner.run_decoder(z, TEMPERATURE, uniform), runs, warmup)
    return eager_ms, ort_ms


def time_step_loop(model: MusicVAE, tmp: Path, runs: int, warmup: int) -> float:
    """The one-step graph driven from Python, Gumbel-max sampling in numpy."""
    cfg = model.cfg
    with torch.no_grad():
        path = export_step_decoder(model, tmp / f"{cfg.name}.step.onnx")
    session = make_session(path, CPU, threads=1)
    depth = cfg.depths[0]
    eye = np.eye(depth, dtype=np.float32)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, cfg.z_size)).astype(np.float32)
    uniform = rng.random((cfg.steps, depth), dtype=np.float32)

    def loop():
        # The initial state would come from z through one Dense; zeros cost the same here.
        h = np.zeros((cfg.dec_layers, 1, cfg.dec_size), dtype=np.float32)
        c = np.zeros_like(h)
        prev = np.zeros((1, depth), dtype=np.float32)
        events = np.empty(cfg.steps, dtype=np.int64)
        for t in range(cfg.steps):
            logits, h, c = session.run(None, {"z": z, "prev": prev, "h": h, "c": c})
            gumbel = -np.log(-np.log(np.clip(uniform[t], 1e-10, 1.0 - 1e-7)))
            events[t] = np.argmax(logits[0] + TEMPERATURE * gumbel)
            prev = eye[events[t]][None]
        return events

    return median_ms(loop, runs, warmup)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def print_environment() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"cpu: {cpu_name()}, {cores} cores available, load average {load}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}"
          f", onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})")
    print(f"batch 1, one thread each (torch {torch.get_num_threads()}, ORT intra-op 1), "
          f"temperature {TEMPERATURE}")


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "models_onnx")
    parser.add_argument("--ckpt", type=Path, action="append", default=[],
                        help="a training checkpoint (.pt), e.g. runs/trio_4bar/last.pt")
    parser.add_argument("--random", action="store_true",
                        help="time the training presets with random weights")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    warnings.filterwarnings("ignore", module=r"torch\.")  # the ONNX exporter's tracer notes

    print_environment()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cases = [checkpoint_case(p, tmp) for p in args.ckpt]
        if args.random:
            cases += random_cases(tmp)
        elif not args.ckpt:
            cases += shipped_cases(args.models_dir)
            if not cases:
                print(f"no models in {args.models_dir}; timing the presets with random weights")
                cases += random_cases(tmp)
        if any(c.weights == "random" for c in cases):
            print("random weights where no checkpoint was given: timing does not depend on "
                  "the weight values")

        rows, shape_rows = [], []
        for case in cases:
            cfg = case.model.cfg
            eager_ms, ort_ms = time_eager_vs_ort(case, args.runs, args.warmup)
            rows.append([case.label, "+".join(cfg.parts), str(cfg.bars), case.weights,
                         f"{eager_ms:.2f}", f"{ort_ms:.2f}", f"{eager_ms / ort_ms:.2f}x",
                         f"{ort_ms / cfg.bars:.2f}"])
            if not cfg.hierarchical:
                step_ms = time_step_loop(case.model, tmp, args.runs, args.warmup)
                shape_rows.append([case.label, str(cfg.steps), f"{ort_ms:.2f}",
                                   f"{step_ms:.2f}", f"{step_ms / ort_ms:.2f}x"])

    print(f"\nDecode one segment, median of {args.runs} (ms)")
    print_table(["model", "parts", "bars", "weights", "torch eager", "ORT unrolled",
                 "ORT speed-up", "ORT ms/bar"], rows)
    if shape_rows:
        print("\nGraph shape, flat models, ORT (ms)")
        print_table(["model", "steps", "unrolled graph", "step graph + Python loop",
                     "loop / unrolled"], shape_rows)


if __name__ == "__main__":
    main()
