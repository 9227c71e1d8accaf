"""Where a training run runs: the device, the precision and the ranks of a torchrun job.

Every trainer (MusicVAE, the GPT-2 lyricist, the voice's acoustic model and vocoder) sets
itself up through this one module, so the same command line works on a laptop, on a GPU and
on many GPUs or machines under ``torchrun``:

    add_arguments(parser)                         # --device auto|cpu|cuda, --precision ...
    run = start(args.device, args.precision, threads=args.threads)
    net = run.wrap(model, "loss")                 # DDP under torchrun; calls model.loss
    sampler = ShardedSampler(len(windows), batch, run, seed)
    for step in ...:
        index = sampler.batch(step)               # this rank's windows, a pure function of step
        rng = run.step_rng(seed, step)            # per-rank, per-step randomness
        with run.autocast():
            loss = net(...)
        run.backward_step(loss, model, optimizer, clip=1.0)
        if run.stop_agreed(out_of_time): break    # every rank stops at the same step
    if run.is_main: save(...)                     # rank 0 alone writes
    run.close()

Ranks: ``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address; this
module joins the process group with NCCL on GPUs and gloo on CPUs. Data parallel is
PyTorch's DistributedDataParallel: gradients are averaged over the ranks, so a step on
``world_size`` ranks of ``batch`` windows each is a step on one batch of
``world_size * batch`` windows (the learning rate is not scaled: it is printed, pass
``--lr`` to change it).

Randomness: every rank draws from ``(seed, rank, step)``, so ranks differ, a run repeats
exactly with the same seed and rank count, and a resumed run continues as the unbroken run
would have (the batch and the noise of step k depend on nothing else).

Precision: ``auto`` is fp32 on the CPU, bf16 on a GPU that supports it, fp16 with a
gradient scaler on other GPUs. Losses are computed in fp32 (autocast does that for the
losses PyTorch knows; trainers cast their own outputs with ``.float()``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TIMEOUT = datetime.timedelta(minutes=30)  # a rank evaluating or saving keeps the others waiting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every trainer shares: where it runs and in which precision."""
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when this PyTorch sees a GPU, else the CPU")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: fp32 on the CPU; bf16 on a GPU that has it, else fp16 "
                             "with a gradient scaler")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse an impossible --device/--precision before any data is loaded."""
    resolve_precision(args.precision, resolve_device(args.device))


def resolve_device(choice: str) -> str:
    """``auto`` | ``cpu`` | ``cuda`` -> ``cpu`` or ``cuda``; refuses CUDA when there is none."""
    if choice not in DEVICES:
        raise ValueError(f"--device {choice!r}: expected one of {', '.join(DEVICES)}")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this PyTorch sees no CUDA device (a CPU-only build, "
                         "or no driver); install PyTorch's CUDA build for your driver, or "
                         "use --device cpu")
    return choice


def resolve_precision(choice: str, device: str) -> str:
    """``auto`` | ``fp32`` | ``bf16`` | ``fp16`` on ``device`` -> the precision to train in."""
    if choice not in PRECISIONS:
        raise ValueError(f"--precision {choice!r}: expected one of {', '.join(PRECISIONS)}")
    if device == "cpu":
        if choice == "fp16":
            raise ValueError("--precision fp16 needs a GPU; on the CPU use fp32 or bf16")
        return "fp32" if choice == "auto" else choice
    if choice == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if choice == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("--precision bf16: this GPU has no bf16; use fp16 (with a gradient "
                         "scaler) or fp32")
    return choice


class _Method(nn.Module):
    """Calls one method of a model as its forward, so DDP sees the call (DDP synchronises
    gradients only for work done through its own forward)."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.model, self.method)(*args, **kwargs)


@dataclass
class Run:
    """One process of a training run: its device, precision and place among the ranks."""

    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    threads: int = 1
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that prints, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # ---- models -----------------------------------------------------------------------
    def wrap(self, model: nn.Module, method: str = "forward") -> nn.Module:
        """Move ``model`` to the device; return what to call for training: ``model.method``,
        inside DistributedDataParallel when there are several ranks (rank 0's weights are
        broadcast to the others as it starts)."""
        model.to(self.device)
        net = model if method == "forward" else _Method(model, method)
        if not self.distributed:
            return net
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def backward_step(self, loss: torch.Tensor, model: nn.Module,
                      optimizer: torch.optim.Optimizer, clip: float | None = None) -> float:
        """Backward (gradients averaged over the ranks by DDP), global-norm clipping,
        optimiser step; fp16 goes through the gradient scaler. Returns the gradient norm
        before clipping (inf or nan when fp16 overflowed and the step was skipped)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), clip) if clip is not None
                else torch.tensor(0.0))
        self.scaler.step(optimizer)
        self.scaler.update()
        return float(norm)

    def to(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Tensors onto this rank's device."""
        return tuple(t.to(self.device, non_blocking=True) for t in tensors)

    # ---- randomness ---------------------------------------------------------------------
    def step_seed(self, seed: int, step: int) -> int:
        """A 63-bit seed of (seed, rank, step): different on every rank and step, the same
        in every repeat of the run."""
        state = np.random.SeedSequence([seed, self.rank, step]).generate_state(2, np.uint32)
        return (int(state[0]) << 31) ^ int(state[1])

    def step_rng(self, seed: int, step: int) -> np.random.Generator:
        """NumPy randomness for one step; also seeds torch's global generator (dropout)."""
        value = self.step_seed(seed, step)
        torch.manual_seed(value)
        return np.random.default_rng(value)

    def step_generator(self, seed: int, step: int) -> torch.Generator:
        """A torch generator on this rank's device for one step's noise."""
        return torch.Generator(self.device).manual_seed(self.step_seed(seed + 1, step))

    # ---- agreement between ranks ----------------------------------------------------------
    def stop_agreed(self, stop: bool) -> bool:
        """True on every rank when any rank wants to stop (a wall-clock limit is reached at
        slightly different times on each), so all ranks leave the loop at the same step."""
        if not self.distributed:
            return stop
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def agree_max(self, value: float) -> float:
        """The largest of every rank's ``value`` (e.g. the share of the time limit spent, so
        a time-driven schedule gives every rank the same learning rate)."""
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())

    def mean(self, values: list[float] | np.ndarray) -> np.ndarray:
        """Every rank's ``values`` averaged (for logging losses over the whole batch)."""
        t = torch.tensor(np.asarray(values, dtype=np.float64), device=self.device)
        if self.distributed:
            torch.distributed.all_reduce(t)
            t /= self.world_size
        return t.cpu().numpy()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order; on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    # ---- output -----------------------------------------------------------------------
    def print(self, *args: Any, **kwargs: Any) -> None:
        """print() on rank 0 only."""
        if self.is_main:
            print(*args, **kwargs, flush=True)

    def describe(self, batch: int, lr: float) -> str:
        """The line every trainer prints first: device, precision, ranks, effective batch
        and learning rate."""
        where = (f"{self.device.type}" + (f" ({torch.cuda.get_device_name(self.device)})"
                                          if self.device.type == "cuda" else
                                          f", {self.threads} thread(s) a rank"))
        return (f"training on {where}, {self.precision}, {self.world_size} rank(s): "
                f"batch {batch} a rank, effective batch {batch * self.world_size}; "
                f"learning rate {lr:g} (not scaled with the ranks)")

    def close(self) -> None:
        """Leave the process group (every rank, at the end)."""
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def torchrun_env(environ: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's variables; (0, 0, 1) without them."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ValueError(f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK are not whole numbers: {err}"
                         ) from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK {rank} and WORLD_SIZE {world} do not fit: start the ranks "
                         "with torchrun")
    return rank, local, world


def start(device: str = "auto", precision: str = "auto", *, threads: int | None = None) -> Run:
    """Set up this process: pick the device and precision, join torchrun's process group
    when there are several ranks (NCCL on GPUs, gloo on CPUs), set the CPU threads (by
    default the machine's cores shared among the ranks on this node)."""
    rank, local, world = torchrun_env()
    kind = resolve_device(device)
    if kind == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but this node has "
                             f"{torch.cuda.device_count()} GPU(s): start at most that many "
                             "processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(local)
        where = torch.device("cuda", local)
    else:
        where = torch.device("cpu")
    if threads is None:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        threads = max(1, (os.cpu_count() or 1) // max(1, local_world))
    torch.set_num_threads(threads)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if kind == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=TIMEOUT,
                                             device_id=where if kind == "cuda" else None)
    return Run(device=where, precision=resolve_precision(precision, kind), rank=rank,
               local_rank=local, world_size=world, threads=threads)


class ShardedSampler:
    """Which windows a rank trains on at each step, as a DistributedSampler would deal them.

    Each epoch is a permutation of all ``n`` windows drawn from ``seed`` and the epoch (the
    same on every rank); rank ``r`` takes every ``world_size``-th window from position
    ``r``, so within an epoch the ranks' windows are disjoint and together cover the data
    (up to ``world_size - 1`` left over). A rank's batches walk through its share; a
    share smaller than a batch wraps around. ``batch(step)`` is a pure function of the step,
    so a resumed run draws what the unbroken run would have.
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0) -> None:
        if n < world_size:
            raise ValueError(f"{n} training windows for {world_size} ranks: each rank needs "
                             "at least one; give more data or start fewer ranks")
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: must be at least 1")
        self.n, self.batch_size, self.rank, self.world_size, self.seed = (
            n, batch_size, rank, world_size, seed)
        self.share = n // world_size
        self.steps_per_epoch = max(1, self.share // batch_size)
        self._epoch, self._order = -1, np.zeros(0, np.int64)

    @classmethod
    def for_run(cls, n: int, batch_size: int, run: Run, seed: int) -> ShardedSampler:
        return cls(n, batch_size, run.rank, run.world_size, seed)

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def shard(self, epoch: int) -> np.ndarray:
        """This rank's windows in ``epoch``, in the order it trains on them."""
        if epoch != self._epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch, self._order = epoch, order[self.rank::self.world_size][:self.share]
        return self._order

    def batch(self, step: int) -> np.ndarray:
        """The window indices of this rank's batch at ``step`` (0-based)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        shard = self.shard(epoch)
        return shard[(k * self.batch_size + np.arange(self.batch_size)) % len(shard)]


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename: a run killed while
    saving never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def record_windows(run: Run, seen: list[tuple[int, int, list[int]]], path: Path) -> None:
    """Gather every rank's (step, epoch, window indices) on rank 0 and write them to
    ``path`` as JSON: ``{"world_size": N, "ranks": [[[step, epoch, [i, ...]], ...], ...]}``.
    Debug evidence that the ranks trained on different windows; every rank must call it."""
    import json

    everyone = run.gather(seen)
    if run.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"world_size": run.world_size, "ranks": everyone}) + "\n")


@contextlib.contextmanager
def running(device: str = "auto", precision: str = "auto", *, threads: int | None = None
            ) -> Iterator[Run]:
    """``start`` ... ``close`` as a context manager (close also on an error, so torchrun's
    other ranks are not left waiting on this one)."""
    run = start(device, precision, threads=threads)
    try:
        yield run
    except BaseException:
        if run.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    else:
        run.close()
