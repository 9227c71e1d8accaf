"""One training step of the GPT-2 lyricist on each rank of a torchrun job (gloo, CPU),
through the trainers' own set-up (export/distributed.py) and optimiser; rank 0 saves the
parameters after the step. Run by tests/export/test_distributed.py:

    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_step_worker.py OUT

Rank r trains on rows [r*B, (r+1)*B) of the batch that ``equivalence_case`` builds, so the
ranks together see exactly the concatenated batch the single-process step sees.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from export.distributed import running

ROWS_PER_RANK = 4


def equivalence_case(optimizer: str):
    """(model, optimiser, batch of 2 * ROWS_PER_RANK blocks): the same on every call."""
    from export.gpt2_lyrics import LyricsModelConfig, build_model, train_tokenizer
    from export.train_lyrics import TrainSettings, _optimizer

    lines = ["hold the light tonight", "the road is long and the night is wide",
             "we sing of the sea", "morning comes over the hills"] * 8
    tokenizer = train_tokenizer(lines, vocab_size=280)
    torch.manual_seed(0)
    model = build_model(LyricsModelConfig(n_layer=2, n_head=2, n_embd=32, n_positions=32,
                                          vocab_size=280, dropout=0.0), tokenizer)
    if optimizer == "adamw":
        optim = _optimizer(model, TrainSettings(lr=1e-3))
    else:
        optim = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = torch.randint(0, len(tokenizer), (2 * ROWS_PER_RANK, 16),
                          generator=torch.Generator().manual_seed(1))
    return model, optim, batch


def step(run, model, optim, rows: torch.Tensor) -> None:
    net = run.wrap(model)
    model.train()
    loss = net(input_ids=rows, labels=rows).loss
    run.backward_step(loss, model, optim, clip=1.0)


def main(out: Path) -> None:
    with running("cpu", "fp32", threads=1) as run:
        assert run.world_size * ROWS_PER_RANK == 2 * ROWS_PER_RANK, "start 2 ranks"
        result = {}
        for name in ("adamw", "sgd"):
            model, optim, batch = equivalence_case(name)
            mine = batch[run.rank * ROWS_PER_RANK:(run.rank + 1) * ROWS_PER_RANK]
            step(run, model, optim, mine)
            result[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if run.is_main:
            torch.save({"backend": torch.distributed.get_backend(), "params": result}, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
