"""Train Encore's own voice: teacher data, acoustic model, vocoder, export, evaluation.

    python -m export.train_voice data --phrases 1200 --workers 2 --max-minutes 10
    python -m export.train_voice acoustic --max-minutes 30      # runs/encore_voice/acoustic.pt
    python -m export.train_voice vocoder --max-minutes 30       # runs/encore_voice/vocoder.pt
    python -m export.train_voice export --out runs/encore_voice/bank
    python -m export.train_voice depths                         # choose max_depth
    python -m export.train_voice evaluate --bank runs/encore_voice/bank

``acoustic`` and ``vocoder`` can run at the same time (one thread each on two cores), and
each under ``torchrun`` on several ranks (``--device``, ``--precision``: see
export/distributed.py). Both
keep a wall-clock limit, log to ``<run>/<name>.log`` and write their checkpoint every few
minutes and at the end, so a run cut short still leaves a usable model. The held-out
phrases (``export/cache/voice/heldout``, seed 999) never enter training.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch

from export import voice_data as vd
from export.distributed import (
    Run,
    ShardedSampler,
    add_arguments,
    check_arguments,
    record_windows,
    running,
    save_atomic,
)
from export.voice_acoustic import AcousticConfig, AcousticModel, normalize
from export.voice_vocoder import HOP, Vocoder, VocoderConfig, stft_loss

RUN = Path("runs/encore_voice")
HELDOUT_SEED = 999


class Log:
    """Prints and appends to a log file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8")

    def __call__(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


# ---- data ---------------------------------------------------------------------------------

def _generate(args: tuple[int, int, str, float | None]) -> int:
    n, seed, out, max_seconds = args
    return vd.generate(n, seed, Path(out), max_seconds=max_seconds)


def cmd_data(a: argparse.Namespace) -> None:
    out = Path(a.cache)
    t = time.perf_counter()
    if not (out / "heldout").exists() or a.heldout:
        vd.generate(20, HELDOUT_SEED, out / "heldout", shard_size=20)
    per = -(-a.phrases // a.workers)
    max_s = a.max_minutes * 60 if a.max_minutes else None
    jobs = [(per, a.seed + w, str(out), max_s) for w in range(a.workers)]
    if a.workers == 1:
        done = [_generate(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            done = pool.map(_generate, jobs)
    items = vd.load_corpus(out)
    lags = np.array([it.lag for it in items])
    secs = sum(len(it.audio) for it in items) / vd.SAMPLE_RATE
    summary = {
        "phrases": len(items), "written_now": int(sum(done)), "audio_minutes": secs / 60,
        "wall_minutes": (time.perf_counter() - t) / 60,
        "lag_frames": {"median": float(np.median(lags)), "mean": float(lags.mean()),
                       "hist": {int(k): int(v) for k, v in zip(*np.unique(lags,
                                                                          return_counts=True),
                                                               strict=True)}}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


# ---- acoustic -----------------------------------------------------------------------------

def _acoustic_batch(items: list[vd.Item]) -> tuple[torch.Tensor, ...]:
    nt = max(len(it.tokens) for it in items)
    nf = max(len(it.f0) for it in items)
    b = len(items)
    tokens = np.zeros((b, nt), np.int64)
    durs = np.zeros((b, nt), np.int64)
    f0 = np.full((b, nf), 200.0, np.float32)
    mel = np.full((b, nf, vd.N_MELS), -11.5, np.float32)
    mask = np.zeros((b, nf), np.float32)
    for i, it in enumerate(items):
        tokens[i, :len(it.tokens)] = it.tokens
        durs[i, :len(it.tokens)] = it.durations
        f0[i, :len(it.f0)] = it.f0_sung
        mel[i, :len(it.f0)] = it.mel
        mask[i, :len(it.f0)] = 1.0
    return tuple(torch.from_numpy(x) for x in (tokens, durs, f0, mel, mask))


def load_acoustic(path: Path) -> AcousticModel:
    ck = torch.load(path, map_location="cpu", weights_only=True)  # data, never code
    model = AcousticModel(AcousticConfig(**ck["config"]))
    model.load_state_dict(ck["model"])
    return model.eval()


def load_vocoder(path: Path) -> Vocoder:
    ck = torch.load(path, map_location="cpu", weights_only=True)  # data, never code
    voc = Vocoder(VocoderConfig(**ck["config"]))
    voc.load_state_dict(ck["model"])
    return voc.eval()


def _resume_state(a: argparse.Namespace, path: Path) -> dict | None:
    if not a.resume:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nothing to resume; leave out --resume to start afresh")
    return torch.load(path, map_location="cpu", weights_only=True)  # data, never code


def _shared_start(a: argparse.Namespace, run: Run, name: str, log: Log | None,
                  state: dict | None) -> tuple[float, int]:
    """(start time, first step) of a fresh or resumed run; prints the set-up line."""
    step = int(state["step"]) if state else 0
    t0 = time.perf_counter() - (60 * float(state["minutes"]) if state else 0.0)
    if log is not None:
        log(run.describe(a.batch, a.lr) + (f"; resuming {name} at step {step}" if state else ""))
    return t0, step


def cmd_acoustic(a: argparse.Namespace) -> None:
    with running(a.device, a.precision, threads=a.threads) as run:
        _train_acoustic(a, run)


def _train_acoustic(a: argparse.Namespace, run: Run) -> None:
    run_dir = Path(a.run)
    log = Log(run_dir / "acoustic.log") if run.is_main else None
    items = vd.load_corpus(Path(a.cache))
    held = list(vd.read_shard(next((Path(a.cache) / "heldout").glob("*.npz"))))
    state = _resume_state(a, run_dir / "acoustic.pt")
    cfg = (AcousticConfig(**state["config"]) if state else
           AcousticConfig(hidden=a.hidden, flow_hidden=a.flow_hidden, enc_layers=a.enc_layers,
                          dec_layers=a.dec_layers, flow_layers=a.flow_layers))
    torch.manual_seed(a.seed)
    model = AcousticModel(cfg)
    if state:
        model.load_state_dict(state["model"])
    n_params = sum(p.numel() for p in model.parameters())
    if log is not None:
        log(f"acoustic: {len(items)} phrases, {n_params / 1e6:.2f} M params, {cfg}")
    net = run.wrap(model, "loss")
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    if state and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        run.scaler.load_state_dict(state.get("scaler", {}))
    items.sort(key=lambda it: len(it.f0))
    batches = [items[i:i + a.batch] for i in range(0, len(items), a.batch)]
    sampler = ShardedSampler.for_run(len(batches), 1, run, a.seed)
    t0, step = _shared_start(a, run, "acoustic", log, state)
    last_save = time.perf_counter()
    hist: list[list[float]] = []
    seen: list[tuple[int, int, list[int]]] = []

    def save(final: bool = False) -> None:
        if not run.is_main:
            return
        model.eval()
        with torch.no_grad():
            tok, dur, f0, mel, mask = run.to(*_acoustic_batch(held))
            coarse, _ = model.encode(tok, dur, f0)
            m = mask.unsqueeze(-1)
            l1n = float(((coarse - normalize(mel)).abs() * m).sum() / (m.sum() * vd.N_MELS))
        model.train()
        save_atomic({"config": cfg.to_dict(), "model": _cpu(model.state_dict()), "step": step,
                     "minutes": (time.perf_counter() - t0) / 60, "params": n_params,
                     "phrases": len(items), "heldout_coarse_l1_norm": l1n,
                     "optimizer": opt.state_dict(), "scaler": run.scaler.state_dict(),
                     "ranks": run.world_size, "batch": a.batch},
                    run_dir / "acoustic.pt")
        log(f"saved step {step} ({'final' if final else 'checkpoint'}); held-out coarse L1 "
            f"(normalized) {l1n:.4f} = {l1n * 7.5:.3f} log-mel")

    model.train()
    while True:
        progress = run.agree_max((time.perf_counter() - t0) / (a.max_minutes * 60))
        if progress >= 1.0 or step >= a.steps:
            break
        lr = a.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + np.cos(
            np.pi * min(1.0, progress))))
        for g in opt.param_groups:
            g["lr"] = float(lr)  # a numpy float would not load weights-only
        k = int(sampler.batch(step)[0])
        if a.record_windows:
            seen.append((step, sampler.epoch_of(step), list(range(k * a.batch,
                                                                 k * a.batch + len(batches[k])))))
        run.step_rng(a.seed, step)  # the flow's time and noise
        tok, dur, f0, mel, mask = run.to(*_acoustic_batch(batches[k]))
        with run.autocast():
            losses = net(tok, dur, f0, mel, mask)
        loss = losses["l1"].float() + losses["flow"].float()
        run.backward_step(loss, model, opt, 1.0)
        hist.append([losses["l1"].item(), losses["flow"].item()])
        step += 1
        if step % a.log_every == 0:
            m = run.mean(np.mean(hist[-a.log_every:], axis=0))
            if log is not None:
                log(f"step {step} l1 {m[0]:.4f} flow {m[1]:.4f} lr {lr:.2e} "
                    f"{(time.perf_counter() - t0) / step:.2f} s/step")
        if time.perf_counter() - last_save > a.save_minutes * 60:
            save()
            last_save = time.perf_counter()
    if a.record_windows:
        record_windows(run, seen, run_dir / "acoustic.windows.json")
    save(final=True)


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


# ---- vocoder ------------------------------------------------------------------------------

def cmd_vocoder(a: argparse.Namespace) -> None:
    with running(a.device, a.precision, threads=a.threads) as run:
        _train_vocoder(a, run)


def _train_vocoder(a: argparse.Namespace, run: Run) -> None:
    run_dir = Path(a.run)
    log = Log(run_dir / "vocoder.log") if run.is_main else None
    items = [it for it in vd.load_corpus(Path(a.cache)) if len(it.f0) > a.segment + 8]
    state = _resume_state(a, run_dir / "vocoder.pt")
    cfg = (VocoderConfig(**state["config"]) if state else
           VocoderConfig(hidden=a.hidden, harmonics=a.harmonics, bands=a.bands))
    torch.manual_seed(a.seed)
    voc = Vocoder(cfg)
    if state:
        voc.load_state_dict(state["model"])
    n_params = sum(p.numel() for p in voc.parameters())
    if log is not None:
        log(f"vocoder: {len(items)} phrases, {n_params / 1e6:.3f} M params, {cfg}")
    net = run.wrap(voc)
    opt = torch.optim.AdamW(voc.parameters(), lr=a.lr, weight_decay=0.0)
    if state and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        run.scaler.load_state_dict(state.get("scaler", {}))
    sampler = ShardedSampler.for_run(len(items), a.batch, run, a.seed)
    ctx, seg = 4, a.segment
    t0, step = _shared_start(a, run, "vocoder", log, state)
    last_save = time.perf_counter()
    hist: list[float] = []
    seen: list[tuple[int, int, list[int]]] = []

    def save(final: bool = False) -> None:
        if not run.is_main:
            return
        save_atomic({"config": cfg.to_dict(), "model": _cpu(voc.state_dict()), "step": step,
                     "minutes": (time.perf_counter() - t0) / 60, "params": n_params,
                     "optimizer": opt.state_dict(), "scaler": run.scaler.state_dict(),
                     "ranks": run.world_size, "batch": a.batch},
                    run_dir / "vocoder.pt")
        log(f"saved step {step} ({'final' if final else 'checkpoint'})")

    while True:
        progress = run.agree_max((time.perf_counter() - t0) / (a.max_minutes * 60))
        if progress >= 1.0 or step >= a.steps:
            break
        lr = a.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress))))
        for g in opt.param_groups:
            g["lr"] = float(lr)  # a numpy float would not load weights-only
        index = sampler.batch(step)
        if a.record_windows:
            seen.append((step, sampler.epoch_of(step), index.tolist()))
        rng = run.step_rng(a.seed, step)
        mels, f0s, wavs = [], [], []
        for k in index:
            it = items[k]
            i = int(rng.integers(0, len(it.f0) - seg - 2 * ctx + 1))
            mels.append(it.mel[i:i + seg + 2 * ctx])
            f0s.append(it.f0_sung[i:i + seg + 2 * ctx])
            wavs.append(it.audio[(i + ctx) * HOP:(i + ctx + seg) * HOP])
        mel, f0, wav = run.to(*(torch.from_numpy(np.stack(x)) for x in (mels, f0s, wavs)))
        phase0, = run.to(torch.from_numpy(rng.random(len(index), np.float32) * 2 * np.pi))
        with run.autocast():
            out = net(mel, f0, noise_offset=int(rng.integers(1 << 15)), phase0=phase0)
        loss = stft_loss(out[:, ctx * HOP:(ctx + seg) * HOP].float(), wav)
        run.backward_step(loss, voc, opt, 1.0)
        hist.append(loss.item())
        step += 1
        if step % a.log_every == 0:
            m = run.mean([np.mean(hist[-a.log_every:])])
            if log is not None:
                log(f"step {step} stft {m[0]:.4f} lr {lr:.2e} "
                    f"{(time.perf_counter() - t0) / step:.2f} s/step")
        if time.perf_counter() - last_save > a.save_minutes * 60:
            save()
            last_save = time.perf_counter()
    if a.record_windows:
        record_windows(run, seen, run_dir / "vocoder.windows.json")
    save(final=True)


# ---- export and evaluation ----------------------------------------------------------------

def cmd_export(a: argparse.Namespace) -> None:
    from export.voice_export import write_bank

    run = Path(a.run)
    folder = write_bank(load_acoustic(run / "acoustic.pt"), load_vocoder(run / "vocoder.pt"),
                        Path(a.out), max_depth=a.max_depth)
    print(f"wrote {folder}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from export.voice_export import evaluate

    result = evaluate(Path(a.bank), Path(a.cache) / "heldout", steps=a.steps,
                      pictures=Path(a.run) / "pictures", threads=a.threads)
    (Path(a.run) / "metrics.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "phrases"}, indent=1))


def cmd_depths(a: argparse.Namespace) -> None:
    """Held-out mel L1 (log-mel units) of the PyTorch acoustic model over depths and steps,
    with the spread of the mel over time (mean |frame-to-frame difference|; the teacher's is
    the reference: an over-smoothed mel has less) to choose max_depth."""
    torch.set_num_threads(a.threads or 1)
    model = load_acoustic(Path(a.run) / "acoustic.pt")
    held = list(vd.read_shard(next((Path(a.cache) / "heldout").glob("*.npz"))))
    ref = np.mean([np.abs(np.diff(it.mel, axis=0)).mean() for it in held])
    print(f"teacher frame-to-frame |diff| {ref:.3f}")
    for depth in a.depths:
        for steps in a.steps_list:
            l1, tv = [], []
            for it in held:
                mel = model.sample(torch.from_numpy(it.tokens)[None],
                                   torch.from_numpy(it.durations)[None],
                                   torch.from_numpy(it.f0)[None], steps, depth)[0].numpy()
                l1.append(np.abs(mel - it.mel).mean())
                tv.append(np.abs(np.diff(mel, axis=0)).mean())
            print(f"depth {depth:.2f} steps {steps:2d}: L1 {np.mean(l1):.3f}, "
                  f"frame-to-frame |diff| {np.mean(tv):.3f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(vd.CACHE))
    ap.add_argument("--run", default=str(RUN))
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="sing the teacher corpus")
    d.add_argument("--phrases", type=int, default=1200)
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--max-minutes", type=float, default=None)
    d.add_argument("--heldout", action="store_true", help="rewrite the held-out shard")
    for name, hidden in (("acoustic", 160), ("vocoder", 128)):
        p = sub.add_parser(name, help=f"train the {name} model")
        p.add_argument("--max-minutes", "--minutes", dest="max_minutes", type=float,
                       default=30.0)
        p.add_argument("--steps", type=int, default=10 ** 9)
        p.add_argument("--threads", type=int, default=1,
                       help="CPU threads a rank (1: acoustic and vocoder can train at once)")
        p.add_argument("--out", dest="run_dir", default=None,
                       help="the run folder (same as --run before the command)")
        p.add_argument("--data", dest="data_dir", default=None,
                       help="the teacher data (same as --cache before the command)")
        p.add_argument("--resume", action="store_true",
                       help=f"continue from the run folder's {name}.pt")
        p.add_argument("--record-windows", action="store_true",
                       help=f"write the phrases each rank trained on to {name}.windows.json")
        add_arguments(p)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--hidden", type=int, default=hidden)
        p.add_argument("--save-minutes", type=float, default=4.0)
        p.add_argument("--log-every", type=int, default=25)
    ac = sub.choices["acoustic"]
    ac.add_argument("--batch", type=int, default=8)
    ac.add_argument("--lr", type=float, default=1.5e-3)
    ac.add_argument("--flow-hidden", type=int, default=128)
    ac.add_argument("--enc-layers", type=int, default=3)
    ac.add_argument("--dec-layers", type=int, default=4)
    ac.add_argument("--flow-layers", type=int, default=4)
    vc = sub.choices["vocoder"]
    vc.add_argument("--batch", type=int, default=8)
    vc.add_argument("--segment", type=int, default=24)
    vc.add_argument("--lr", type=float, default=2e-3)
    vc.add_argument("--harmonics", type=int, default=64)
    vc.add_argument("--bands", type=int, default=24)
    e = sub.add_parser("export", help="write the voicebank folder")
    e.add_argument("--out", default=str(RUN / "bank"))
    e.add_argument("--max-depth", type=float, default=0.5)
    v = sub.add_parser("evaluate", help="card metrics on the held-out phrases")
    v.add_argument("--bank", default=str(RUN / "bank"))
    v.add_argument("--steps", type=int, default=10)
    v.add_argument("--threads", type=int, default=None)
    dp = sub.add_parser("depths", help="held-out L1 over depth and steps (PyTorch)")
    dp.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 1.0])
    dp.add_argument("--steps-list", type=int, nargs="+", default=[4, 10, 20])
    dp.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if getattr(a, "run_dir", None):
        a.run = a.run_dir
    if getattr(a, "data_dir", None):
        a.cache = a.data_dir
    if hasattr(a, "precision"):
        check_arguments(a)
    {"data": cmd_data, "acoustic": cmd_acoustic, "vocoder": cmd_vocoder, "export": cmd_export,
     "evaluate": cmd_evaluate, "depths": cmd_depths}[a.cmd](a)


if __name__ == "__main__":
    main()
