"""Pictures of a set from its event log: a piano roll and the latent trajectory.

    from engine.song.plot import plot_log
    plot_log("out/song.jsonl")          # -> Plots(pianoroll=out/pianoroll.png, latent=...)

``pianoroll.png`` shows the whole set on one wide strip: melody, bass and chords on a
shared pitch axis (chords pale, underneath), the drums in their own strip with a row per
drum sound, the sections shaded and named along the top, bar numbers (counted from 1, as
``/encore/status/bar`` counts them) underneath, and the lyric lines written under the bars
where they are sung. The figure is 0.35 in per bar (capped, so a long set is squeezed
rather than made enormous); lyric lines are wrapped to the bars they span and, where the
bars are too narrow for them, staggered onto a second or third row or, as a last resort,
left out (the figure says how many).

``latent.png`` shows the latent vector ``z`` of every bar projected onto its first two
principal components (:func:`pca_2d`: plain SVD), joined in time order, coloured by
section, with the start and the end marked: a chorus that comes back lands near its
previous pass, and the drift of the set shows as a slow slide.

matplotlib (Agg backend, no display needed) is imported on first use only, so the rest of
the engine does not pay for it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.music.notes import STEPS_PER_BAR, STEPS_PER_QUARTER
from engine.output_files import free_names, staged
from engine.song.event_log import read_bars, read_log

__all__ = ["Plots", "pca_2d", "plot_latent", "plot_log", "plot_pianoroll"]

BEATS_PER_BAR = STEPS_PER_BAR // STEPS_PER_QUARTER
INCHES_PER_BAR = 0.35
MAX_WIDTH_IN = 48.0       # past ~137 bars the bars get narrower instead
MIN_WIDTH_IN = 8.0
DPI = 110
LYRIC_FONT_PT = 7.5
LYRIC_ROWS = 3            # staggered rows of lyric lines before lines are left out
MIN_LYRIC_CHARS = 8       # a lyric box narrower than this many characters is widened

PITCHED = ("chords", "bass", "melody")  # drawing order: chords underneath
PART_COLOURS = {"melody": "#1f5fbf", "bass": "#2e8b3e", "chords": "#f0a040",
                "drums": "#b03060"}
PART_ALPHA = {"melody": 0.95, "bass": 0.9, "chords": 0.45, "drums": 0.9}
SECTION_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860",
                   "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
DRUM_NAMES = {35: "kick", 36: "kick", 37: "stick", 38: "snare", 39: "clap", 40: "snare",
              41: "low tom", 42: "hat", 43: "low tom", 44: "pedal hat", 45: "mid tom",
              46: "open hat", 47: "mid tom", 48: "high tom", 49: "crash", 50: "high tom",
              51: "ride", 52: "china", 53: "ride bell", 54: "tambourine", 55: "splash",
              56: "cowbell", 57: "crash", 59: "ride"}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass(frozen=True)
class Plots:
    """The files :func:`plot_log` wrote."""

    pianoroll: Path
    latent: Path


# ---- PCA ------------------------------------------------------------------------------
def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``points`` (n, d) projected onto their first two principal components.

    Returns ``(coords, explained)``: ``coords`` is (n, 2), centred, the first column along
    the direction of greatest variance; ``explained`` is the fraction of the total variance
    each of the two components carries (0 where there is none: a single point, points all
    equal, or points on a line give a zero second column). Computed with an SVD of the
    centred points; each component's sign is fixed so that its largest loading is
    positive, so the same log always gives the same picture.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"pca_2d takes an (n, d) array of n >= 1 points, got shape {x.shape}")
    centred = x - x.mean(axis=0)
    coords = np.zeros((x.shape[0], 2))
    explained = np.zeros(2)
    total = float((centred ** 2).sum())
    if total <= 0.0:
        return coords, explained
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, len(s))
    for i in range(k):
        direction = vt[i]
        if direction[np.argmax(np.abs(direction))] < 0:
            direction = -direction
        coords[:, i] = centred @ direction
        explained[i] = s[i] ** 2 / total
    return coords, explained


# ---- reading the log ------------------------------------------------------------------
@dataclass(frozen=True)
class _Set:
    header: dict[str, Any]
    bars: list[dict[str, Any]]
    lyrics: list[dict[str, Any]]


def _read_set(log: str | Path) -> _Set:
    header, bars = read_bars(log)
    if not bars:
        raise ValueError(f"{log}: the log has no bar records, so there is nothing to plot; "
                         "plot the song.jsonl of a render or a set that played at least one "
                         "bar (encore render -o DIR writes DIR/song.jsonl)")
    bars = sorted(bars, key=lambda b: b["bar"])
    lyrics = sorted((r for r in read_log(log) if r.get("type") == "lyric"),
                    key=lambda r: r["bar"])
    return _Set(header, bars, lyrics)


def _section_runs(bars: Sequence[dict[str, Any]]) -> list[tuple[str, int, int, int]]:
    """(section, pass, first bar, end bar) for each run of bars in one section pass."""
    runs: list[tuple[str, int, int, int]] = []
    for b in bars:
        key = (b["section"], b.get("pass", 0))
        if runs and (runs[-1][0], runs[-1][1]) == key and runs[-1][3] == b["bar"]:
            runs[-1] = (*key, runs[-1][2], b["bar"] + 1)
        else:
            runs.append((*key, b["bar"], b["bar"] + 1))
    return runs


def _section_colours(bars: Sequence[dict[str, Any]]) -> dict[str, str]:
    colours: dict[str, str] = {}
    for b in bars:
        if b["section"] not in colours:
            colours[b["section"]] = SECTION_PALETTE[len(colours) % len(SECTION_PALETTE)]
    return colours


def _lyric_span(record: dict[str, Any]) -> tuple[float, float]:
    """(start, end) of a sung line, in bars, from its syllables' notes."""
    notes = [n for s in record.get("syllables", ()) for n in s.get("notes", ())]
    if not notes:
        return float(record["bar"]), float(record["bar"]) + 1.0
    start = min(n[1] for n in notes) / BEATS_PER_BAR
    end = max(n[1] + n[2] for n in notes) / BEATS_PER_BAR
    return start, max(end, start + 0.25)


# ---- matplotlib -----------------------------------------------------------------------
def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    try:
        import matplotlib
    except ModuleNotFoundError as err:
        raise OSError(f"plotting needs matplotlib ({err}); install it with "
                      "`.venv/bin/pip install matplotlib` (or `pip install -e .`)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _note_name(pitch: int) -> str:
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _rects(notes: Sequence[tuple[float, float, float, float]], height: float):
    """Polygon vertices for note boxes (x0, x1, y, alpha) -> list of 4-corner arrays."""
    half = height / 2
    return [((x0, y - half), (x1, y - half), (x1, y + half), (x0, y + half))
            for x0, x1, y, _ in notes]


def _draw_notes(ax, notes, colour: str, alpha: float, height: float = 0.8) -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba

    if not notes:
        return
    faces = [to_rgba(colour, alpha * (0.45 + 0.55 * a)) for *_, a in notes]
    ax.add_collection(PolyCollection(_rects(notes, height), facecolors=faces,
                                     edgecolors="none"))


def _part_notes(bars: Sequence[dict[str, Any]], part: str,
                y_of=None) -> list[tuple[float, float, float, float]]:
    out = []
    for b in bars:
        for pitch, velocity, start, end in b.get("notes", {}).get(part, ()):
            y = pitch if y_of is None else y_of[pitch]
            out.append((b["bar"] + start / STEPS_PER_BAR, b["bar"] + end / STEPS_PER_BAR,
                        y, velocity / 127))
    return out


def _drum_labels(pitches: Sequence[int]) -> list[str]:
    """Drum names for the strip's rows; a name two pitches share gets its pitch added."""
    names = [DRUM_NAMES.get(p, str(p)) for p in pitches]
    return [f"{n} {p}" if names.count(n) > 1 else n for n, p in zip(names, pitches, strict=True)]


def plot_pianoroll(log: str | Path, out: str | Path) -> Path:
    """Write the piano roll of a log's set to ``out`` (a PNG); returns the path."""
    return _pianoroll(_read_set(log), Path(out))


def _pianoroll(song: _Set, out: Path) -> Path:
    plt = _pyplot()
    bars = song.bars
    first, last = bars[0]["bar"], bars[-1]["bar"] + 1
    n_bars = last - first
    width = min(MAX_WIDTH_IN, max(MIN_WIDTH_IN, n_bars * INCHES_PER_BAR + 1.6))
    in_per_bar = (width - 1.6) / n_bars
    lyric_boxes, left_out = _place_lyrics(song.lyrics, in_per_bar, end_bar=last)
    lyric_lines = max((len(b[3]) for b in lyric_boxes), default=0)
    rows_used = max((b[2] for b in lyric_boxes), default=-1) + 1
    lyric_h = 0.25 + rows_used * lyric_lines * LYRIC_FONT_PT * 1.25 / 72 if lyric_boxes else 0

    drum_pitches = sorted({n[0] for b in bars for n in b.get("notes", {}).get("drums", ())})
    pitch_h, drum_h, top_h, bottom_h = 4.2, 0.25 + 0.16 * max(len(drum_pitches), 1), 0.8, 0.5
    heights = [pitch_h, drum_h] + ([lyric_h] if lyric_boxes else [])
    fig_h = sum(heights) + top_h + bottom_h
    fig, axes = plt.subplots(len(heights), 1, sharex=True, figsize=(width, fig_h),
                             gridspec_kw={"height_ratios": heights, "hspace": 0.06})
    fig.subplots_adjust(left=1.1 / width, right=1 - 0.5 / width, top=1 - top_h / fig_h,
                        bottom=bottom_h / fig_h)
    ax_pitch, ax_drums = axes[0], axes[1]
    colours = _section_colours(bars)

    # sections: shaded bands through every strip, names along the top
    for i, (section, npass, start, end) in enumerate(_section_runs(bars)):
        for ax in axes:
            ax.axvspan(start, end, color=colours[section], alpha=0.13 if i % 2 else 0.2,
                       linewidth=0)
        fits = max(1, int((end - start) * in_per_bar * 72 / (8.5 * 0.62)))
        label = f"{section}, pass {npass + 1}" if npass else section
        label = label if len(label) <= fits else section[:fits]
        ax_pitch.text(start + 0.1, 1.01, label,
                      transform=ax_pitch.get_xaxis_transform(), ha="left", va="bottom",
                      fontsize=8.5, color=colours[section], fontweight="bold", clip_on=False)
        for ax in axes:
            ax.axvline(start, color="#555555", linewidth=0.6, alpha=0.6)

    # pitched parts on one pitch axis
    pitches = []
    for part in PITCHED:
        notes = _part_notes(bars, part)
        pitches += [n[2] for n in notes]
        _draw_notes(ax_pitch, notes, PART_COLOURS[part], PART_ALPHA[part])
    low, high = (min(pitches) - 2, max(pitches) + 2) if pitches else (48, 72)
    ax_pitch.set_ylim(low, high)
    c_pitches = [p for p in range(int(low), int(high) + 1) if p % 12 == 0]
    ax_pitch.set_yticks(c_pitches, [_note_name(p) for p in c_pitches], fontsize=8)
    ax_pitch.grid(axis="y", color="#999999", linewidth=0.4, alpha=0.5)
    ax_pitch.set_ylabel("pitch", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=PART_COLOURS[p], alpha=PART_ALPHA[p])
               for p in (*PITCHED[::-1], "drums")]
    fig.legend(handles, [*PITCHED[::-1], "drums"], loc="upper right", fontsize=7.5,
               ncols=4, frameon=False, bbox_to_anchor=(1 - 0.45 / width, 1 - 0.3 / fig_h))

    # drums: a row per drum sound
    row = {p: i for i, p in enumerate(drum_pitches)}
    _draw_notes(ax_drums, _part_notes(bars, "drums", row), PART_COLOURS["drums"],
                PART_ALPHA["drums"], height=0.7)
    ax_drums.set_ylim(-0.6, max(len(drum_pitches), 1) - 0.4)
    ax_drums.set_yticks(range(len(drum_pitches)), _drum_labels(drum_pitches), fontsize=6.5)
    ax_drums.set_ylabel("drums", fontsize=9)

    # lyrics under the bars where they are sung
    if lyric_boxes:
        ax_lyr = axes[2]
        _draw_lyrics(ax_lyr, lyric_boxes, rows_used, lyric_lines)
        if left_out:
            ax_lyr.text(1.0, -0.02, f"{left_out} lyric line(s) not shown: the bars are "
                        "too narrow", transform=ax_lyr.transAxes, ha="right", va="top",
                        fontsize=7, color="#884444")

    # bar numbers (from 1) under the last strip
    step = 1 if n_bars <= 16 else 2 if n_bars <= 32 else 4 if n_bars <= 96 else 8
    ticks = [b for b in range(first, last) if b % step == 0]
    axes[-1].set_xticks(ticks, [str(b + 1) for b in ticks], fontsize=7.5)
    axes[-1].set_xticks(range(first, last + 1), minor=True)
    axes[-1].set_xlabel("bar", fontsize=9)
    ax_pitch.set_xlim(first, last)
    for ax in axes:
        ax.tick_params(axis="x", which="minor", length=2)
        ax.grid(axis="x", which="major", color="#777777", linewidth=0.3, alpha=0.4)
    title = song.header.get("patch", {}).get("song", {}).get("title", "")
    lyricist = song.header.get("lyricist", "off")
    fig.suptitle(f"{title or 'Encore'}: {n_bars} bars at {song.header.get('bpm', 0):g} BPM, "
                 f"model {song.header.get('model', '?')}, seed {song.header.get('seed', '?')}"
                 f", lyrics: {lyricist}", x=1.1 / width, ha="left", y=1 - 0.08 / fig_h,
                 va="top", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def _place_lyrics(lyrics: Sequence[dict[str, Any]], in_per_bar: float,
                  end_bar: float = math.inf
                  ) -> tuple[list[tuple[float, float, int, list[str]]], int]:
    """Boxes (start, end, row, wrapped lines) for the lyric lines, and how many were left
    out. A line's box spans its sung bars, widened to at least MIN_LYRIC_CHARS characters;
    it goes on the first row where it does not overlap the previous box. Its text may run
    on over free space in its row (never past ``end_bar``, the end of the picture)."""
    char_in = LYRIC_FONT_PT * 0.52 / 72
    min_bars = MIN_LYRIC_CHARS * char_in / in_per_bar
    row_end = [-math.inf] * LYRIC_ROWS
    placed: list[tuple[float, float, int, str]] = []
    left_out = 0
    for record in lyrics:
        text = str(record.get("text", "")).strip()
        if not text:
            continue
        start, end = _lyric_span(record)
        end = max(end, start + min_bars)
        row = next((r for r in range(LYRIC_ROWS) if row_end[r] <= start + 1e-9), None)
        if row is None:
            left_out += 1
            continue
        row_end[row] = end + 0.15 * min_bars
        placed.append((start, end, row, text))
    boxes = []
    for k, (start, end, row, text) in enumerate(placed):
        # the text may run on over the free space before the next line in its row
        room = next((s for s, _, r, _ in placed[k + 1:] if r == row), end_bar) - start
        width = min(max(end - start, room - 0.15 * min_bars), 2.5 * (end - start))
        chars = max(MIN_LYRIC_CHARS, int(width * in_per_bar / char_in * 0.95))
        boxes.append((start, end, row, textwrap.wrap(text, chars) or [text]))
    return boxes, left_out


def _draw_lyrics(ax, boxes, rows: int, lines_per_row: int) -> None:
    line = 1.0 / (rows * lines_per_row + 0.6)
    for start, end, row, wrapped in boxes:
        top = 1.0 - row * lines_per_row * line - 0.15 * line
        ax.plot([start, end], [top, top], color="#333333", linewidth=1.0, alpha=0.7)
        ax.text(start, top - 0.1 * line, "\n".join(wrapped), ha="left", va="top",
                fontsize=LYRIC_FONT_PT, linespacing=1.05, color="#111111")
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("lyrics", fontsize=9)


def plot_latent(log: str | Path, out: str | Path) -> Path:
    """Write the latent trajectory of a log's set to ``out`` (a PNG); returns the path."""
    return _latent(_read_set(log), Path(out))


def _latent(song: _Set, out: Path) -> Path:
    plt = _pyplot()
    bars = [b for b in song.bars if b.get("z")]
    if not bars:
        raise ValueError("the log's bar records carry no latent vectors (z); re-render the "
                         "set with this version of Encore")
    coords, explained = pca_2d(np.array([b["z"] for b in bars]))
    colours = _section_colours(bars)
    fig, ax = plt.subplots(figsize=(7.5, 6.2))
    ax.plot(coords[:, 0], coords[:, 1], color="#999999", linewidth=0.8, zorder=1)
    sections = [b["section"] for b in bars]
    for section, colour in colours.items():
        mask = np.array([s == section for s in sections])
        ax.scatter(coords[mask, 0], coords[mask, 1], s=28, color=colour, label=section,
                   zorder=2, edgecolors="white", linewidths=0.5)
    ax.scatter(*coords[0], s=220, marker="o", facecolors="none", edgecolors="#119911",
               linewidths=2.2, zorder=3, label="start")
    ax.scatter(*coords[-1], s=220, marker="s", facecolors="none", edgecolors="#dd2222",
               linewidths=2.2, zorder=3, label="end")
    middle = float(coords[:, 0].min() + coords[:, 0].max()) / 2
    for (x, y), numbers in _run_labels(bars, coords):
        right = x > middle  # write towards the middle, so labels stay inside the axes
        ax.annotate(", ".join(numbers), (x, y), textcoords="offset points",
                    xytext=(-7 if right else 7, 6), ha="right" if right else "left",
                    fontsize=7.5, color="#222222", zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.75})
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%} of the variance)")
    ax.set_title(f"Latent walk: {len(bars)} bars, z ({len(bars[0]['z'])} dims) projected "
                 "by PCA\n(labels: the bars of each section pass, counted from 1)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    ax.grid(color="#dddddd", linewidth=0.5)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def _run_labels(bars: Sequence[dict[str, Any]], coords: np.ndarray
                ) -> list[tuple[tuple[float, float], list[str]]]:
    """The bars (from 1) of each section pass, written at the pass's middle bar (where
    the walk has settled near the section's anchor: its first bars glide in from the last
    section), merged where those points nearly coincide (a chorus coming back), so labels
    do not pile up."""
    span = float(np.ptp(coords, axis=0).max()) or 1.0
    index = {b["bar"]: i for i, b in enumerate(bars)}
    labels: list[tuple[tuple[float, float], list[str]]] = []
    for _, _, start, end in _section_runs(bars):
        point = coords[index[start + (end - start) // 2]]
        text = f"{start + 1}-{end}" if end - start > 1 else str(start + 1)
        for anchor, numbers in labels:
            if math.dist(anchor, point) < 0.04 * span:
                numbers.append(text)
                break
        else:
            labels.append(((float(point[0]), float(point[1])), [text]))
    return [(point, numbers if len(numbers) <= 3 else
             [*numbers[:2], f"... +{len(numbers) - 2} more"]) for point, numbers in labels]


def plot_log(log: str | Path, out_dir: str | Path | None = None) -> Plots:
    """Write ``pianoroll.png`` and ``latent.png`` for an event log (``song.jsonl``) into
    ``out_dir`` (default: the log's folder, with ``_2``, ... in the names when an earlier
    plot is there; a folder given that holds them is refused: nothing is overwritten). A
    log with no bars is refused with a ValueError that says so."""
    log = Path(log)
    song = _read_set(log)
    folder = Path(out_dir) if out_dir is not None else log.parent
    names = ["pianoroll.png", "latent.png"]
    if out_dir is None:  # beside the log: pianoroll_2.png, ... when an earlier plot is there
        names = list(free_names(folder, names).values())
    with staged(folder, names, fix="a plot is there; give another folder (-o DIR)") as stage:
        _pianoroll(song, stage / names[0])
        _latent(song, stage / names[1])
    return Plots(pianoroll=folder / names[0], latent=folder / names[1])
