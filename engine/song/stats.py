"""Musical figures of a render, read from its event log (``encore stats song.jsonl``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.music.arrangement import in_key_ratio
from engine.music.notes import STEPS_PER_BAR, Note
from engine.song.conductor import KEY_NAMES, PARTS, ArrangedBar
from engine.song.event_log import read_bars


def _bars(records: list[dict[str, Any]]) -> list[ArrangedBar]:
    return [ArrangedBar.from_dict(r["bar"], r["section"], r) for r in records]


def longest_silence(bars: list[ArrangedBar], part: str) -> float:
    """Longest stretch, in bars, where ``part`` sounds no note."""
    sounding = np.zeros(len(bars) * STEPS_PER_BAR, dtype=bool)
    for bar in bars:
        offset = bar.index * STEPS_PER_BAR
        for n in bar.parts.get(part, ()):
            end = n.start + 1 if part == "drums" else n.end
            sounding[offset + n.start:offset + end] = True
    longest = run = 0
    for value in sounding:
        run = 0 if value else run + 1
        longest = max(longest, run)
    return longest / STEPS_PER_BAR


def chorus_similarity(bars: list[ArrangedBar], section: str = "chorus",
                      parts: tuple[str, ...] = ("melody", "bass", "drums")) -> float | None:
    """How recognisably a section comes back: the mean, over consecutive passes of
    ``section``, of the share of notes in common (same pitch, same bar-in-section, same
    start step): 2 * |common| / (|a| + |b|). None when it is played fewer than twice."""
    starts = []
    previous = None
    for bar in bars:
        if bar.section == section and previous != section:
            starts.append(bar.index)
        previous = bar.section
    if len(starts) < 2:
        return None
    occurrences = []
    for start in starts:
        run = []
        for bar in bars[start:]:
            if bar.section != section:
                break
            run.append(bar)
        occurrences.append(run)
    scores = []
    for a, b in zip(occurrences, occurrences[1:], strict=False):
        common = total = 0
        for bar_a, bar_b in zip(a, b, strict=False):
            for part in parts:
                sa = {(n.pitch, n.start) for n in bar_a.parts.get(part, ())}
                sb = {(n.pitch, n.start) for n in bar_b.parts.get(part, ())}
                common += len(sa & sb)
                total += len(sa) + len(sb)
        if total:
            scores.append(2 * common / total)
    return float(np.mean(scores)) if scores else None


def song_stats(path: str | Path) -> dict[str, Any]:
    header, records = read_bars(path)
    bars = _bars(records)
    song = header["patch"]["song"]
    tonic, mode = KEY_NAMES[song["key"]], song["mode"]
    stats: dict[str, Any] = {"bars": len(bars), "key": f"{song['key']} {mode}",
                             "bpm": header.get("bpm")}
    for part in PARTS:
        counts = [len(b.parts.get(part, ())) for b in bars]
        stats[f"{part}_notes_per_bar"] = round(float(np.mean(counts)), 2) if counts else 0.0
        stats[f"{part}_longest_silence_bars"] = round(longest_silence(bars, part), 2)
    pitched: list[Note] = [n for b in bars for p in ("melody", "bass") for n in b.parts.get(p, ())]
    stats["in_key_ratio"] = round(in_key_ratio(pitched, tonic, mode), 4) if pitched else None
    similarity = chorus_similarity(bars)
    stats["chorus_repeat_similarity"] = None if similarity is None else round(similarity, 3)
    zs = np.array([r["z"] for r in records], dtype=np.float64)
    if len(zs) > 1:
        steps = np.linalg.norm(np.diff(zs, axis=0), axis=1) / np.sqrt(zs.shape[1])
        stats["latent_step_per_bar_mean"] = round(float(steps.mean()), 4)
        stats["latent_step_per_bar_max"] = round(float(steps.max()), 4)
    stats["sections"] = sorted({b.section for b in bars})
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    width = max(len(k) for k in stats)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in stats.items())
