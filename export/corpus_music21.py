"""Training windows from music21's corpus (public-domain collections only), cached to npz.

Collections used (all public domain; see the model cards):
- melody: O'Neill's Music of Ireland (1850), Ryan's Mammoth Collection (1883), Aird's
  Airs (1782) and the soprano lines of Bach's chorales;
- melody + bass: Bach's four-part chorales (soprano and bass) and Palestrina's masses
  (top and bottom voice; written in 4/2 or 2/2, so note values are halved to sit on a 4/4
  grid, the usual reading of alla breve).
The Essen folksong collection is licensed for use inside music21 only and is never read.

Only duple metres are used (4/4, 2/4, 2/2, 4/2), since the grid is 16 steps a 4/4 bar.
Windows start on bar lines (measure offsets of full measures) and are stored untransposed;
transposition augmentation happens at training time.

Run: ``python -m export.corpus_music21 --out export/cache`` (about 5-10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from engine.music.encoding import NO_EVENT, NOTE_OFF, encode_melody
from engine.music.notes import STEPS_PER_BAR, STEPS_PER_QUARTER, Note

DUPLE = {"4/4", "2/4", "2/2", "4/2", "C", "C|"}
MELODY_COLLECTIONS = ("oneills1850", "ryansMammoth", "airdsAirs")
EXCLUDED = ("essenFolksong",)


@dataclass(frozen=True)
class Piece:
    """A piece as monophonic lines on the 16th grid, with bar-line steps."""

    source: str
    lines: tuple[tuple[Note, ...], ...]  # (melody,) or (melody, bass)
    bar_starts: tuple[int, ...]
    n_steps: int


def _corpus_paths(collection: str) -> list[str]:
    from music21 import corpus

    return sorted(str(p) for p in corpus.getCorePaths() if f"/{collection}/" in str(p))


def _part_notes(part, scale: float) -> list[Note]:
    notes = []
    for element in part.flatten().notes:
        if element.duration.isGrace or element.quarterLength <= 0:
            continue
        pitches = [p.midi for p in element.pitches]
        start = round(float(element.offset) * scale * STEPS_PER_QUARTER)
        end = round(float(element.offset + element.quarterLength) * scale * STEPS_PER_QUARTER)
        if end <= start:
            end = start + 1
        notes.append(Note(start, max(pitches), end, 90))
    return notes


def _score_piece(score, source: str, want_bass: bool) -> Piece | None:
    signatures = {ts.ratioString for ts in score.recurse().getElementsByClass("TimeSignature")}
    if not signatures or not signatures <= DUPLE:
        return None
    scale = 0.5 if signatures & {"4/2", "2/2"} and "palestrina" in source else 1.0
    parts = list(score.parts)
    if not parts or (want_bass and len(parts) < 3):
        return None
    lines = [_part_notes(parts[0], scale)]
    if want_bass:
        lines.append(_part_notes(parts[-1], scale))
    if not all(lines):
        return None
    bar_starts: list[int] = []
    for m in parts[0].getElementsByClass("Measure"):
        length = float(m.barDuration.quarterLength) * scale
        if m.paddingLeft > 0 or float(m.duration.quarterLength) * scale < length - 1e-6:
            continue  # a pickup or an incomplete measure
        start = round(float(m.offset) * scale * STEPS_PER_QUARTER)
        # Two 2/4 measures make one 4/4 bar: keep starts a whole bar after the first one.
        if not bar_starts or (start - bar_starts[0]) % STEPS_PER_BAR == 0:
            bar_starts.append(start)
    n_steps = max(n.end for line in lines for n in line)
    return Piece(source, tuple(tuple(line) for line in lines), tuple(bar_starts), n_steps)


def _parse_file(args: tuple[str, bool]) -> list[Piece]:
    path, want_bass = args
    from music21 import corpus, stream

    try:
        parsed = corpus.parse(path)
    except Exception:  # noqa: BLE001 - a broken corpus file is skipped, not fatal
        return []
    scores = parsed.scores if isinstance(parsed, stream.Opus) else [parsed]
    pieces = []
    for index, score in enumerate(scores):
        try:
            piece = _score_piece(score, f"{Path(path).parent.name}/{Path(path).name}#{index}",
                                 want_bass)
        except Exception:  # noqa: BLE001
            piece = None
        if piece is not None:
            pieces.append(piece)
    return pieces


def windows(piece: Piece, bars: int) -> Iterator[np.ndarray]:
    """Encoded ``(n_lines, bars*16)`` windows starting on each bar line, hop one bar."""
    length = bars * STEPS_PER_BAR
    for start in piece.bar_starts:
        if start + length > piece.n_steps + STEPS_PER_BAR // 2:
            break
        encoded = []
        for line in piece.lines:
            shifted = [n.shifted(-start) for n in line
                       if n.end > start and n.start < start + length]
            clipped = [Note(max(n.start, 0), n.pitch, n.end, n.velocity) for n in shifted
                       if n.end > 0]
            encoded.append(encode_melody(clipped, length))
        if any(silent_share(e) > 0.5 for e in encoded):
            continue
        yield np.stack(encoded)


def silent_share(events: np.ndarray) -> float:
    """Share of steps of a melody-encoded line during which no note sounds."""
    sounding = False
    silent = 0
    for e in events:
        if e == NOTE_OFF:
            sounding = False
        elif e != NO_EVENT:
            sounding = True
        silent += not sounding
    return silent / len(events)


def extract(out_dir: Path, processes: int = 2) -> dict[str, int]:
    """Parse the collections and write ``melody_2bar.npz`` and ``duet_4bar.npz``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, bool]] = []
    for collection in MELODY_COLLECTIONS:
        jobs += [(p, False) for p in _corpus_paths(collection)]
    bach = [p for p in _corpus_paths("bach") if Path(p).name.startswith("bwv")]
    jobs += [(p, True) for p in bach]
    jobs += [(p, True) for p in _corpus_paths("palestrina")]
    started = time.time()
    with Pool(processes) as pool:
        results = pool.map(_parse_file, jobs, chunksize=4)
    pieces = [p for r in results for p in r]
    melody, melody_src, duet, duet_src = [], [], [], []
    for piece in pieces:
        for w in windows(piece, 2):
            melody.append(w[0])
            melody_src.append(piece.source)
        if len(piece.lines) == 2:
            for w in windows(piece, 4):
                duet.append(w)
                duet_src.append(piece.source)
    np.savez_compressed(out_dir / "melody_2bar.npz", events=np.array(melody, dtype=np.int16),
                        source=np.array(melody_src))
    np.savez_compressed(out_dir / "duet_4bar.npz", events=np.array(duet, dtype=np.int16),
                        source=np.array(duet_src))
    summary = {"files": len(jobs), "pieces": len(pieces), "melody_2bar_windows": len(melody),
               "duet_4bar_windows": len(duet), "seconds": round(time.time() - started)}
    (out_dir / "summary.txt").write_text(repr(summary) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("export/cache"))
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    print(extract(parser.parse_args().out, parser.parse_args().processes))


if __name__ == "__main__":
    main()
