"""Drum training windows from the project's own groove library plus seeded variation.

No drum corpus ships with the project, so the trio model's drums are trained on
``export/data/drum_grooves.toml``: 1-bar grooves and fills written for this project
(Apache-2.0, common idioms, no transcriptions). :func:`generate_drum_windows` strings
them into multi-bar windows the way a drummer plays: one groove per window, with small
per-bar variations (kicks moved, open hats, ghost snares, hats moved to the ride,
simplified bars), sometimes a crash on the first downbeat and sometimes a fill in the
last bar. Classes use Magenta's 9-drum encoding (see ``engine.music.encoding``).

Run ``python -m export.drum_corpus`` to print the corpus summary for the model card.
"""

from __future__ import annotations

import functools
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.music.encoding import DRUM_NAMES
from engine.music.notes import STEPS_PER_BAR

DEFAULT_PATH = Path(__file__).parent / "data" / "drum_grooves.toml"

HIT_CHARS = frozenset("xXg")  # 'g' = ghost (soft) hit; velocity is not encoded
REST_CHARS = frozenset(".-")

BIT = {name: 1 << i for i, name in enumerate(DRUM_NAMES)}
KICK, SNARE, CLOSED_HAT, OPEN_HAT = BIT["kick"], BIT["snare"], BIT["closed_hat"], BIT["open_hat"]
CRASH, RIDE = BIT["crash"], BIT["ride"]
HATS = CLOSED_HAT | OPEN_HAT
CYMBALS = HATS | RIDE

DOWNBEATS = (0, 4, 8, 12)
OFFBEATS = tuple(s for s in range(STEPS_PER_BAR) if s not in DOWNBEATS)
EIGHTH_OFFBEATS = (2, 6, 10, 14)
ODD_STEPS = tuple(range(1, STEPS_PER_BAR, 2))

# Variation probabilities (per bar unless noted).
FILL_PROB = 0.25  # fill in the last bar of a window (bars >= 2)
PHRASE_FILL_PROB = 0.1  # fill at the end of an inner 4-bar phrase (bars >= 8)
CRASH_START_PROB = 0.3  # crash on the window's first downbeat
CRASH_AFTER_FILL_PROB = 0.8  # crash on the downbeat after an inner fill
HALF_FILL_PROB = 0.35  # a fill keeps the groove's first half
ALT_GROOVE_PROB = 0.1  # play another groove of the same style for a bar
RIDE_WINDOW_PROB = 0.12  # hats on the ride for the whole window
RIDE_BAR_PROB = 0.04
SIMPLIFY_PROB = 0.08
DROP_KICK_PROB = 0.2
ADD_KICK_PROB = 0.2
OPEN_HAT_PROB = 0.15
GHOST_SNARE_PROB = 0.15


@dataclass(frozen=True, eq=False)
class Groove:
    """One bar of drums: ``steps`` holds 16 int64 classes (0..511)."""

    name: str
    style: str
    steps: np.ndarray
    is_fill: bool = False


def load_grooves(path: str | Path | None = None) -> list[Groove]:
    """Read and validate the groove library (grooves first, then fills)."""
    return list(_read(Path(path) if path is not None else DEFAULT_PATH)[1])


def corpus_summary(path: str | Path | None = None) -> dict[str, object]:
    """Counts, styles and generator settings of the drum corpus, for the model card."""
    source = Path(path) if path is not None else DEFAULT_PATH
    meta, grooves = _read(source)
    beats = [g for g in grooves if not g.is_fill]
    fills = [g for g in grooves if g.is_fill]
    styles = sorted({g.style for g in beats})
    return {
        "source": source.name,
        "name": meta.get("name", ""),
        "licence": meta.get("licence", ""),
        "description": meta.get("description", ""),
        "grooves": len(beats),
        "fills": len(fills),
        "styles": len(styles),
        "style_names": styles,
        "fill_kinds": sorted({g.style for g in fills}),
        "steps_per_bar": STEPS_PER_BAR,
        "fill_prob": FILL_PROB,
        "variations": [
            "alternate groove of the same style", "drop/add an offbeat kick",
            "closed hat -> open hat on an offbeat", "ghost snares", "hats -> ride",
            "simplified bar", "crash on the first downbeat", "fill in the last bar",
            "fill + crash at inner 4-bar phrase ends (windows of 8+ bars)",
        ],
    }


def generate_drum_windows(n: int, bars: int, rng: np.random.Generator, *,
                          fill_prob: float = FILL_PROB,
                          grooves: Sequence[Groove] | None = None) -> np.ndarray:
    """``(n, bars * 16)`` int64 drum classes 0..511; no bar is silent."""
    return generate_drum_windows_with_fills(n, bars, rng, fill_prob=fill_prob,
                                            grooves=grooves)[0]


def generate_drum_windows_with_fills(
    n: int, bars: int, rng: np.random.Generator, *, fill_prob: float = FILL_PROB,
    grooves: Sequence[Groove] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`generate_drum_windows`, plus an ``(n, bars)`` bool mask of fill bars."""
    if n < 0 or bars < 1:
        raise ValueError(f"need n >= 0 and bars >= 1, got n={n} bars={bars}")
    if not 0.0 <= fill_prob <= 1.0:
        raise ValueError(f"fill_prob must be in [0, 1], got {fill_prob}")
    pool = _default_pool() if grooves is None else _Pool.of(grooves)
    out = np.zeros((n, bars * STEPS_PER_BAR), dtype=np.int64)
    fills = np.zeros((n, bars), dtype=bool)
    for i in range(n):
        out[i], fills[i] = _window(pool, bars, rng, fill_prob)
    return out, fills


# ------------------------------------------------------------------ parsing


def _read(path: Path) -> tuple[dict[str, str], tuple[Groove, ...]]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - {"corpus", "groove", "fill"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    meta = data.get("corpus", {})
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: [corpus] must be a table")
    grooves: list[Groove] = []
    for kind, is_fill in (("groove", False), ("fill", True)):
        tables = data.get(kind, [])
        if not isinstance(tables, list):
            raise ValueError(f"{path}: '{kind}' must be an array of tables ([[{kind}]])")
        grooves.extend(_parse(table, kind, index, is_fill) for index, table in enumerate(tables))
    names = [g.name for g in grooves]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate groove names {duplicates}")
    if not any(not g.is_fill for g in grooves):
        raise ValueError(f"{path}: no [[groove]] tables")
    return {k: str(v) for k, v in meta.items()}, tuple(grooves)


def _parse(table: object, kind: str, index: int, is_fill: bool) -> Groove:
    if not isinstance(table, dict):
        raise ValueError(f"{kind} #{index + 1}: must be a table")
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} #{index + 1}: missing or empty 'name'")
    style = table.get("style")
    if not isinstance(style, str) or not style:
        raise ValueError(f"{kind} {name!r}: missing or empty 'style'")
    steps = np.zeros(STEPS_PER_BAR, dtype=np.int64)
    for key, row in table.items():
        if key in ("name", "style"):
            continue
        if key not in BIT:
            raise ValueError(f"{kind} {name!r}: unknown drum {key!r}; "
                             f"expected one of {', '.join(DRUM_NAMES)}")
        if not isinstance(row, str):
            raise ValueError(f"{kind} {name!r}, {key!r}: pattern must be a string")
        if len(row) != STEPS_PER_BAR:
            raise ValueError(f"{kind} {name!r}, {key!r}: pattern must have {STEPS_PER_BAR} "
                             f"steps, got {len(row)} ({row!r})")
        bad = sorted(set(row) - HIT_CHARS - REST_CHARS)
        if bad:
            raise ValueError(f"{kind} {name!r}, {key!r}: bad characters {bad}; "
                             "use x/X/g for hits and ./- for rests")
        for step, char in enumerate(row):
            if char in HIT_CHARS:
                steps[step] |= BIT[key]
    if not steps.any():
        raise ValueError(f"{kind} {name!r}: pattern has no hits")
    steps.setflags(write=False)
    return Groove(name, style, steps, is_fill)


# ------------------------------------------------------------------ generation


@dataclass(frozen=True)
class _Pool:
    grooves: tuple[Groove, ...]
    fills: tuple[Groove, ...]
    by_style: dict[str, tuple[Groove, ...]]

    @classmethod
    def of(cls, grooves: Sequence[Groove]) -> _Pool:
        beats = tuple(g for g in grooves if not g.is_fill)
        if not beats:
            raise ValueError("need at least one groove that is not a fill")
        by_style: dict[str, tuple[Groove, ...]] = {}
        for g in beats:
            by_style[g.style] = (*by_style.get(g.style, ()), g)
        return cls(beats, tuple(g for g in grooves if g.is_fill), by_style)


@functools.cache
def _default_pool() -> _Pool:
    return _Pool.of(_read(DEFAULT_PATH)[1])


def _window(pool: _Pool, bars: int, rng: np.random.Generator,
            fill_prob: float) -> tuple[np.ndarray, np.ndarray]:
    base = pool.grooves[rng.integers(len(pool.grooves))]
    siblings = [g for g in pool.by_style[base.style] if g is not base]
    use_ride = not (base.steps & RIDE).any() and rng.random() < RIDE_WINDOW_PROB
    is_fill = np.zeros(bars, dtype=bool)
    if pool.fills:
        if bars >= 2:
            is_fill[-1] = rng.random() < fill_prob
        if bars >= 8:
            for i in range(3, bars - 1, 4):
                is_fill[i] = rng.random() < PHRASE_FILL_PROB
    out = np.zeros((bars, STEPS_PER_BAR), dtype=np.int64)
    for i in range(bars):
        groove = base
        if siblings and rng.random() < ALT_GROOVE_PROB:
            groove = siblings[rng.integers(len(siblings))]
        if is_fill[i]:
            bar = _fill_bar(pool, groove, rng)
        else:
            bar = _vary(groove.steps.copy(), rng, use_ride)
        if (i == 0 and rng.random() < CRASH_START_PROB) or (
                i > 0 and is_fill[i - 1] and rng.random() < CRASH_AFTER_FILL_PROB):
            bar[0] = (bar[0] & ~CYMBALS) | CRASH | KICK
        if not bar.any():
            bar = groove.steps.copy()
        out[i] = bar
    return out.reshape(-1), is_fill


def _fill_bar(pool: _Pool, groove: Groove, rng: np.random.Generator) -> np.ndarray:
    bar = pool.fills[rng.integers(len(pool.fills))].steps.copy()
    half = STEPS_PER_BAR // 2
    if bar[half:].any() and rng.random() < HALF_FILL_PROB:
        bar[:half] = groove.steps[:half]
    return bar


def _vary(bar: np.ndarray, rng: np.random.Generator, use_ride: bool) -> np.ndarray:
    has_ride = bool((bar & RIDE).any())
    if not has_ride and (use_ride or rng.random() < RIDE_BAR_PROB):
        hats = (bar & HATS) != 0
        bar[hats] = (bar[hats] & ~HATS) | RIDE
    if rng.random() < SIMPLIFY_PROB:
        odd = np.array(ODD_STEPS)
        bar[odd] &= ~(CYMBALS | SNARE)
    if rng.random() < DROP_KICK_PROB:
        _toggle(bar, rng, [s for s in OFFBEATS if bar[s] & KICK], KICK, 0)
    if rng.random() < ADD_KICK_PROB:
        _toggle(bar, rng, [s for s in OFFBEATS if not bar[s] & (KICK | SNARE)], 0, KICK)
    if rng.random() < OPEN_HAT_PROB:
        candidates = [s for s in EIGHTH_OFFBEATS if bar[s] & CLOSED_HAT]
        candidates = candidates or [s for s in ODD_STEPS if bar[s] & CLOSED_HAT]
        _toggle(bar, rng, candidates, CLOSED_HAT, OPEN_HAT)
    if rng.random() < GHOST_SNARE_PROB:
        for _ in range(1 + int(rng.random() < 0.4)):
            _toggle(bar, rng, [s for s in ODD_STEPS if not bar[s] & SNARE], 0, SNARE)
    return bar


def _toggle(bar: np.ndarray, rng: np.random.Generator, candidates: list[int],
            clear: int, add: int) -> None:
    """At one random candidate step, clear the ``clear`` bits and set the ``add`` bits."""
    if candidates:
        step = candidates[rng.integers(len(candidates))]
        bar[step] = (bar[step] & ~clear) | add


def main() -> None:
    print(json.dumps(corpus_summary(), indent=2))


if __name__ == "__main__":
    main()
