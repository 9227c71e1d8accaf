"""Train the GPT-2 lyricist from scratch on public-domain verse, or fine-tune any local
Hugging Face GPT-2 folder (ours included) on a lyrics text file, the way run_clm does:
the text is tokenized, concatenated and cut into fixed blocks; the loss is next-token
cross-entropy; AdamW with linear warm-up and cosine decay.

    python -m export.train_lyrics scratch --out runs/lyrics_gpt2 --steps 6000
    python -m export.train_lyrics finetune --from runs/lyrics_gpt2/hf --text my_lyrics.txt \
        --out runs/my_lyrics

Each run writes a Hugging Face folder (``<out>/hf``: config, safetensors weights, tokenizer)
and a JSON-lines log (``<out>/log.jsonl``) with the training and held-out losses.
``--onnx DIR`` also exports the result for the engine (see export/gpt2_onnx.py).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.output_files import claim
from export.distributed import Run, add_arguments, check_arguments, running
from export.gpt2_lyrics import EOS, LyricsModelConfig, build_model, format_corpus, train_tokenizer


@dataclass
class TrainSettings:
    steps: int = 6000
    batch: int = 16
    block: int = 128
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    eval_every: int = 250
    save_every: int = 500
    max_minutes: float | None = None
    seed: int = 0
    threads: int | None = None  # per rank; None: the cores shared by the ranks on this node


def _blocks(ids: np.ndarray, block: int) -> np.ndarray:
    n = len(ids) // block
    if n == 0:
        raise ValueError(
            f"the text has {len(ids)} tokens, fewer than one block of {block}: "
            "give more text or a smaller --block"
        )
    return ids[: n * block].reshape(n, block)


def _encode_documents(tokenizer, documents: list[str]) -> np.ndarray:
    ids: list[int] = []
    batch = 4096
    for start in range(0, len(documents), batch):
        for enc in tokenizer(documents[start : start + batch])["input_ids"]:
            ids.extend(enc)
    return np.asarray(ids, dtype=np.int64)


def _held_out_loss(model, blocks: np.ndarray, batch: int, run: Run | None = None) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch):
            x = torch.from_numpy(blocks[start : start + batch])
            if run is not None:
                x, = run.to(x)
            out = model(input_ids=x, labels=x)
            total += float(out.loss) * len(x)
            count += len(x)
    model.train()
    return total / max(count, 1)


def _optimizer(model, settings: TrainSettings):
    """AdamW, no weight decay on biases and norms (1-d parameters)."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr, betas=(0.9, 0.95),
    )


STATE_FILE = "train_state.pt"  # beside hf/: optimiser, step and seed, for --resume


def train_blocks(
    model, tokenizer, train: np.ndarray, held: np.ndarray, settings: TrainSettings, out: Path,
    run: Run | None = None, *, resume: bool = False, record_windows: bool = False,
) -> dict:
    """The training loop shared by both modes (one rank of a torchrun job, or alone).
    ``resume`` continues from ``out``'s saved state. Returns the final metrics on rank 0
    and {} on the other ranks."""
    if run is None:
        with running(threads=settings.threads) as alone:
            return train_blocks(model, tokenizer, train, held, settings, out, alone,
                                resume=resume, record_windows=record_windows)
    import torch

    from export.distributed import ShardedSampler, save_atomic
    from export.distributed import record_windows as write_windows

    torch.manual_seed(settings.seed)
    hf_dir = out / "hf"
    net = run.wrap(model)
    optim = _optimizer(model, settings)
    first = 1
    if resume:
        state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
        optim.load_state_dict(state["optimizer"])
        run.scaler.load_state_dict(state.get("scaler", {}))
        first = int(state["step"]) + 1
    sampler = ShardedSampler.for_run(len(train), settings.batch, run, settings.seed)
    run.print(run.describe(settings.batch, settings.lr)
              + (f"; resuming after step {first - 1}" if resume else ""))

    def lr_at(step: int) -> float:
        if step < settings.warmup:
            return settings.lr * (step + 1) / settings.warmup
        progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
        return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

    def save(step: int) -> None:
        if run.is_main:
            model.save_pretrained(hf_dir)
            tokenizer.save_pretrained(hf_dir)
            save_atomic({"optimizer": optim.state_dict(), "scaler": run.scaler.state_dict(),
                         "step": step, "seed": settings.seed, "ranks": run.world_size},
                        out / STATE_FILE)

    eval_blocks = held[:64]
    metrics: dict = {}
    log = None
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
        metrics["held_out_loss_start"] = _held_out_loss(model, eval_blocks, settings.batch,
                                                        run)
        log = (out / "log.jsonl").open("a", encoding="utf-8")
        log.write(json.dumps({"step": first - 1, "held_out_loss":
                              metrics["held_out_loss_start"]}) + "\n")
    began = time.monotonic()
    model.train()
    step = first - 1
    running_loss: list[float] = []
    seen: list[tuple[int, int, list[int]]] = []
    for step in range(first, settings.steps + 1):
        for group in optim.param_groups:
            group["lr"] = lr_at(step - 1)
        rows = sampler.batch(step - 1)
        if record_windows:
            seen.append((step - 1, sampler.epoch_of(step - 1), rows.tolist()))
        run.step_rng(settings.seed, step - 1)  # dropout
        x, = run.to(torch.from_numpy(train[rows]))
        with run.autocast():
            loss = net(input_ids=x, labels=x).loss
        run.backward_step(loss, model, optim, 1.0)
        running_loss.append(loss.item())
        elapsed = time.monotonic() - began
        out_of_time = run.stop_agreed(settings.max_minutes is not None
                                      and elapsed > 60 * settings.max_minutes)
        if step % settings.eval_every == 0 or step == settings.steps or out_of_time:
            train_loss = float(run.mean([np.mean(running_loss)])[0])
            running_loss = []
            if run.is_main:
                held_loss = _held_out_loss(model, eval_blocks, settings.batch, run)
                record = {
                    "step": step, "train_loss": train_loss, "held_out_loss": held_loss,
                    "lr": lr_at(step - 1), "minutes": round(elapsed / 60, 2),
                    "tokens_per_s": round((step - first + 1) * settings.batch * run.world_size
                                          * train.shape[1] / elapsed),
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                print(json.dumps(record), flush=True)
        if step % settings.save_every == 0 or out_of_time:
            save(step)
        if out_of_time:
            run.print(f"stopping at step {step}: --max-minutes {settings.max_minutes} reached")
            break
    if record_windows:
        write_windows(run, seen, out / "windows.json")
    save(step)
    if not run.is_main:
        return {}
    held_loss = _held_out_loss(model, held[:256], settings.batch, run)
    metrics.update({
        "steps": step, "minutes": round((time.monotonic() - began) / 60, 1),
        "held_out_loss": held_loss, "held_out_perplexity": math.exp(held_loss),
        "held_out_blocks": int(min(len(held), 256)), "block": int(train.shape[1]),
        "batch": settings.batch, "ranks": run.world_size,
        "effective_batch": settings.batch * run.world_size, "device": run.device.type,
        "precision": run.precision, "parameters": sum(p.numel() for p in model.parameters()),
    })
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.close()
    return metrics


def train_from_scratch(
    out: Path, settings: TrainSettings, config: LyricsModelConfig | None = None,
    limit_lines: int | None = None, run: Run | None = None, *, resume: bool = False,
    record_windows: bool = False,
) -> dict:
    if run is None:
        with running(threads=settings.threads) as alone:
            return train_from_scratch(out, settings, config, limit_lines, alone, resume=resume,
                                      record_windows=record_windows)
    from export.lyrics_corpus import load_verse

    config = config or LyricsModelConfig()
    corpus = load_verse(limit_lines=limit_lines)
    if resume:
        model, tokenizer = _load_hf(_resume_folder(out))
    else:
        sample = [line for i, line in enumerate(corpus.lines("train")) if i % 4 == 0]
        tokenizer = train_tokenizer(sample, vocab_size=config.vocab_size)
        _same_on_every_rank(run, tokenizer)
    train_docs = list(format_corpus(corpus.train, seed=settings.seed))
    held_docs = list(format_corpus(corpus.held_out, seed=settings.seed + 1))
    train = _blocks(_encode_documents(tokenizer, train_docs), settings.block)
    held = _blocks(_encode_documents(tokenizer, held_docs), settings.block)
    run.print(f"{train.size} training tokens in {len(train)} blocks, {held.size} held out")
    if not resume:
        import torch

        torch.manual_seed(settings.seed)
        model = build_model(config, tokenizer)
    metrics = train_blocks(model, tokenizer, train, held, settings, out, run, resume=resume,
                           record_windows=record_windows)
    if run.is_main:
        metrics.update({"training_tokens": int(train.size), "held_out_tokens": int(held.size),
                        "training_stanzas": len(corpus.train), "config": config.__dict__})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _resume_folder(out: Path) -> Path:
    if not (out / STATE_FILE).is_file() or not (out / "hf" / "config.json").is_file():
        raise FileNotFoundError(f"{out}: nothing to resume (no {STATE_FILE} and hf/ from an "
                                "earlier run); leave out --resume to start afresh")
    return out / "hf"


def _load_hf(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    if model.config.model_type != "gpt2":
        raise ValueError(
            f"{folder} holds a {model.config.model_type} model; only GPT-2 is supported")
    return model, tokenizer


def _same_on_every_rank(run: Run, tokenizer) -> None:
    """Each rank trains the tokenizer itself; refuse a run whose ranks disagree on it."""
    import hashlib

    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
    if len(set(run.gather(digest))) > 1:
        raise RuntimeError("the ranks trained different tokenizers; train on one rank first "
                           "and fine-tune that folder with --from")


def read_lyrics_text(path: Path) -> list[str]:
    """Documents of a plain-text lyrics file: blank lines separate songs or verses."""
    text = path.read_text(encoding="utf-8", errors="replace")
    docs = [d.strip("\n") for d in text.replace("\r\n", "\n").split("\n\n") if d.strip()]
    if not docs:
        raise ValueError(f"{path} has no text: give a UTF-8 file with one lyric line per line")
    return [d + "\n" + EOS for d in docs]


def fine_tune(source: Path, text: Path, out: Path, settings: TrainSettings,
              run: Run | None = None, *, resume: bool = False,
              record_windows: bool = False) -> dict:
    """Fine-tune the GPT-2 folder ``source`` on the lyrics in ``text`` (``resume``: go on
    from the state an earlier run left in ``out``)."""
    if run is None:
        with running(threads=settings.threads) as alone:
            return fine_tune(source, text, out, settings, alone, resume=resume,
                             record_windows=record_windows)
    if resume:
        source = _resume_folder(out)
    elif not (source / "config.json").exists() and (source / "encore_gpt2.json").exists():
        from export.gpt2_onnx import hf_from_export

        if run.is_main:
            hf_from_export(source, out / "base")  # the shipped model, as exported
        run.barrier()
        source = out / "base"
    if not (source / "config.json").exists():
        raise FileNotFoundError(
            f"{source} is not a Hugging Face model folder (no config.json): give a folder "
            "saved with save_pretrained, e.g. a downloaded gpt2 or distilgpt2"
        )
    model, tokenizer = _load_hf(source)
    docs = read_lyrics_text(text)
    block = min(settings.block, model.config.n_positions)
    ids = _encode_documents(tokenizer, docs)
    blocks = _blocks(ids, min(block, max(8, len(ids) // 2)))
    held_every = 10 if len(blocks) >= 20 else len(blocks) + 1
    held = blocks[held_every - 1 :: held_every] if held_every <= len(blocks) else blocks[:1]
    train = np.delete(blocks, np.s_[held_every - 1 :: held_every], axis=0) if held_every <= len(
        blocks) else blocks
    run.print(f"fine-tuning on {train.size} tokens ({len(train)} blocks of {blocks.shape[1]})")
    return train_blocks(model, tokenizer, train, held, settings, out, run, resume=resume,
                        record_windows=record_windows)


RUN_FILES = ("hf", "log.jsonl", "metrics.json", "base")
"""What a run writes into --out; a folder holding one of them is an earlier run, kept."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.train_lyrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    scratch = sub.add_parser("scratch", help="train the shipped lyricist on public-domain verse")
    tune = sub.add_parser("finetune", help="fine-tune a local GPT-2 folder on a lyrics file")
    tune.add_argument("--from", dest="source", type=Path, required=True,
                      help="Hugging Face GPT-2 folder (config.json, weights, tokenizer)")
    tune.add_argument("--text", type=Path, required=True, help="UTF-8 lyrics, a line per line")
    for p, steps, lr in ((scratch, 6000, 1e-3), (tune, 300, 5e-5)):
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--steps", type=int, default=steps)
        p.add_argument("--batch", type=int, default=16 if p is scratch else 8)
        p.add_argument("--block", type=int, default=128)
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--max-minutes", "--minutes", dest="max_minutes", type=float,
                       default=None, help="stop after this many minutes (saving first)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=None,
                       help="CPU threads a rank (default: the cores shared by the ranks)")
        p.add_argument("--resume", action="store_true",
                       help="continue the run that OUT holds (hf/ and train_state.pt)")
        p.add_argument("--record-windows", action="store_true",
                       help="write the blocks each rank trained on to OUT/windows.json")
        add_arguments(p)
        p.add_argument("--onnx", type=Path, default=None,
                       help="also export the trained model for the engine into this folder")
    scratch.add_argument("--limit-lines", type=int, default=None,
                         help="train on the first N corpus lines only (quick runs)")
    scratch.add_argument("--layers", type=int, default=4)
    scratch.add_argument("--width", type=int, default=256)
    args = parser.parse_args(argv)
    check_arguments(args)
    settings = TrainSettings(
        steps=args.steps, batch=args.batch, block=args.block, lr=args.lr, seed=args.seed,
        max_minutes=args.max_minutes, warmup=min(200, max(1, args.steps // 10)),
        eval_every=min(250, max(1, args.steps // 4)), threads=args.threads,
    )
    if not args.resume:  # a resumed run goes on in its own folder
        claim(args.out, RUN_FILES, named=True,
              fix="a training run is there; give a new --out, or continue it with --resume")
    if args.onnx is not None:
        from export.gpt2_onnx import CONFIG_FILE, HF_CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE

        claim(args.onnx, (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE, HF_CONFIG_FILE), named=True,
              fix="a lyricist is there; give a new folder to --onnx")
    with running(args.device, args.precision, threads=args.threads) as run:
        if not run.is_main:  # rank 0 alone shows progress
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        if args.mode == "scratch":
            config = LyricsModelConfig(n_layer=args.layers, n_embd=args.width,
                                       n_head=max(1, args.width // 64))
            metrics = train_from_scratch(args.out, settings, config, args.limit_lines, run,
                                         resume=args.resume, record_windows=args.record_windows)
        else:
            metrics = fine_tune(args.source, args.text, args.out, settings, run,
                                resume=args.resume, record_windows=args.record_windows)
        if not run.is_main:
            return 0
    print(json.dumps(metrics, indent=2))
    if args.onnx is not None:
        from export.gpt2_onnx import export_gpt2

        export_gpt2(args.out / "hf", args.onnx)
        print(f"exported to {args.onnx}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
