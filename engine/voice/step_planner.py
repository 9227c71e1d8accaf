"""How many diffusion steps a phrase can afford, from the time left before it must play.

    planner = StepPlanner.fit([(1, 0.9), (4, 1.6)], frames=400, cap=10)
    steps = planner.choose(frames=520, budget_s=4.2)   # the most steps that fit, at least 1
    planner.observe(steps, frames=520, seconds=2.9)    # learn how busy the machine is now

The cost of a render is modelled per frame as ``fixed + per_step * steps`` (the vocoder,
the encoder and the variance models are the fixed part; the acoustic model's sampling loop
the per-step part), fitted from renders timed at start-up, then scaled by ``load``: the
ratio of the latest renders' times to the model's, which rises at once when the machine
gets busier and falls back slowly (a fifth of the way a render). A phrase gets the most
steps (from ``choices``, at most ``cap``) whose predicted time, with ``margin``, fits its
budget; with no budget left it gets the fewest, and may still be late (the show drops
it then, never plays it late).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CHOICES = (20, 10, 6, 4, 2, 1)


@dataclass
class StepPlanner:
    """Per-frame cost model and the machine's current load (see the module notes)."""

    fixed: float
    """Seconds per frame that do not depend on steps."""
    per_step: float
    """Seconds per frame per step."""
    cap: int
    choices: Sequence[int] = CHOICES
    margin: float = 1.3
    load: float = 1.0

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise ValueError(f"cap must be >= 1, got {self.cap}")
        self.fixed = max(self.fixed, 0.0)
        self.per_step = max(self.per_step, 1e-9)

    @classmethod
    def fit(cls, timed: Sequence[tuple[int, float]], frames: int, cap: int,
            choices: Sequence[int] = CHOICES) -> StepPlanner:
        """From ``(steps, seconds)`` renders of one ``frames``-long phrase (two step counts
        at least: the least and the most steps give the line)."""
        if frames < 1 or len({s for s, _ in timed}) < 2:
            raise ValueError("fit needs renders at two step counts or more")
        low = min(timed)
        high = max(timed)
        per_step = (high[1] - low[1]) / (high[0] - low[0]) / frames
        fixed = low[1] / frames - per_step * low[0]
        if fixed < 0:  # noise: put it all in the steps
            fixed, per_step = 0.0, high[1] / frames / high[0]
        return cls(fixed, per_step, cap, tuple(choices))

    def predict(self, steps: int, frames: int) -> float:
        """Seconds a render of ``frames`` at ``steps`` should take now."""
        return frames * (self.fixed + self.per_step * steps) * self.load

    def choose(self, frames: int, budget_s: float) -> int:
        """The most steps (at most ``cap``) whose render fits ``budget_s``; else the
        fewest."""
        allowed = sorted((s for s in self.choices if s <= self.cap), reverse=True) or [1]
        for steps in allowed:
            if self.predict(steps, frames) * self.margin <= budget_s:
                return steps
        return allowed[-1]

    def observe(self, steps: int, frames: int, seconds: float) -> None:
        """A render took ``seconds``: update ``load``."""
        if frames < 1 or seconds <= 0:
            return
        ratio = seconds / (frames * (self.fixed + self.per_step * steps))
        self.load = ratio if ratio > self.load else 0.8 * self.load + 0.2 * ratio
