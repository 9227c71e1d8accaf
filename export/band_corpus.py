"""Trio training windows from band music (Freedoom) plus Bach chorales and folk tunes.

The shipped trio learned from Palestrina and Bach (slow vocal lines) and from the groove
library alone for its drums. This corpus gives it band music: the Freedoom soundtrack
(BSD-3-Clause, read from Debian's ``freedoom`` package by :mod:`export.freedoom_corpus`,
never copied) with its melody, bass and General MIDI drum tracks, plus the four-part Bach
chorales (soprano and bass) and O'Neill's folk tunes (melody only), both public domain
and read from music21's corpus.

Each window is ``(3, bars * 16)`` int64 on the 16th grid: melody and bass in the 90-class
melody encoding and drums in the 512-class encoding. A line the source does not have is
``UNKNOWN`` (-1) on every step: the folk tunes have no bass (the loss leaves it out, see
``MusicVAE.loss``), the chorales and folk tunes have no drums (training fills them with a
real drum window from the band pieces or a groove-library window, see
:func:`export.musicvae_data.make_batch`). Band windows are kept where melody and bass both
sound for at least half the window, hop one bar; transposition happens at training time.

    python -m export.band_corpus --out export/cache       # ~3-10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from engine.music.encoding import PITCH_TO_DRUM, encode_melody
from engine.music.notes import STEPS_PER_BAR, STEPS_PER_QUARTER, Note
from export.corpus_music21 import silent_share
from export.music_eval import Hit, Song, Tone

UNKNOWN = -1
CACHE_NAME = "band_trio_4bar.npz"
FOLK_COLLECTIONS = ("oneills1850",)  # Ryan's 1,059 one-tune files parse too slowly here
MAX_SILENT_SHARE = 0.5


def _notes(tones: Sequence[Tone]) -> list[Note]:
    notes = []
    for tone in tones:
        start = round(tone.start * STEPS_PER_QUARTER)
        end = max(start + 1, round(tone.end * STEPS_PER_QUARTER))
        notes.append(Note(start, tone.pitch, end, 90))
    return notes


def _window_line(notes: Sequence[Note], start: int, length: int) -> np.ndarray:
    inside = [Note(max(n.start - start, 0), n.pitch, n.end - start, n.velocity)
              for n in notes if n.end > start and n.start < start + length]
    return encode_melody(inside, length)


def _drum_steps(hits: Sequence[Hit], n_steps: int) -> np.ndarray:
    steps = np.zeros(n_steps, dtype=np.int64)
    for hit in hits:
        step = round(hit.beat * STEPS_PER_QUARTER)
        drum = PITCH_TO_DRUM.get(hit.pitch)
        if drum is not None and 0 <= step < n_steps:
            steps[step] |= 1 << drum
    return steps


def song_windows(song: Song, bars: int = 4) -> Iterator[np.ndarray]:
    """``(3, bars*16)`` windows of a band piece, one per bar where melody and bass play.
    A window without a drum stroke gets ``UNKNOWN`` drums (filled at training time)."""
    length = bars * STEPS_PER_BAR
    melody, bass = _notes(song.melody), _notes(song.bass)
    n_steps = round(song.length_beats * STEPS_PER_QUARTER)
    drums = _drum_steps(song.drums, n_steps + length)
    for start in range(0, n_steps - length + 1, STEPS_PER_BAR):
        lines = [_window_line(melody, start, length), _window_line(bass, start, length)]
        if any(silent_share(line) > MAX_SILENT_SHARE for line in lines):
            continue
        drum = drums[start:start + length]
        lines.append(drum.copy() if drum.any() else np.full(length, UNKNOWN, dtype=np.int64))
        yield np.stack(lines)


def _music21_windows(jobs: list[tuple[str, bool]], bars: int, processes: int
                     ) -> tuple[list[np.ndarray], list[str]]:
    from export.corpus_music21 import _parse_file, windows

    if not jobs:
        return [], []
    if processes <= 1:
        results = [_parse_file(job) for job in jobs]
    else:
        with Pool(processes) as pool:
            results = pool.map(_parse_file, jobs, chunksize=4)
    events, sources = [], []
    length = bars * STEPS_PER_BAR
    unknown = np.full((1, length), UNKNOWN, dtype=np.int64)
    for piece in (p for r in results for p in r):
        for w in windows(piece, bars):
            w = w.astype(np.int64)
            if len(w) == 1:  # a folk tune: no bass
                w = np.concatenate([w, unknown])
            events.append(np.concatenate([w, unknown]))
            sources.append(piece.source)
    return events, sources


def build(out_dir: Path, *, bars: int = 4, chorales: int | None = None,
          folk: int | None = None, band_pieces: int | None = None,
          processes: int = 2) -> dict[str, int]:
    """Extract the windows and write ``out_dir/band_trio_4bar.npz`` (events, source,
    corpus). ``chorales``/``folk``/``band_pieces`` limit the files read (None: all)."""
    from export.corpus_music21 import _corpus_paths
    from export.freedoom_corpus import load_songs

    started = time.time()
    events: list[np.ndarray] = []
    sources: list[str] = []
    corpus: list[str] = []
    songs = load_songs(limit=band_pieces)
    for song in songs:
        for w in song_windows(song, bars):
            events.append(w)
            sources.append(f"freedoom/{song.name}")
            corpus.append("band")
    bach = [p for p in _corpus_paths("bach") if Path(p).name.startswith("bwv")][:chorales]
    folk_paths = [p for c in FOLK_COLLECTIONS for p in _corpus_paths(c)][:folk]
    for name, jobs in (("chorale", [(p, True) for p in bach]),
                       ("folk", [(p, False) for p in folk_paths])):
        found, found_sources = _music21_windows(jobs, bars, processes)
        events += found
        sources += found_sources
        corpus += [name] * len(found)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / CACHE_NAME, events=np.array(events, dtype=np.int16),
                        source=np.array(sources), corpus=np.array(corpus))
    counts = {name: corpus.count(name) for name in ("band", "chorale", "folk")}
    drums = sum(1 for e, c in zip(events, corpus, strict=True) if c == "band" and e[2, 0] >= 0)
    return {"band_pieces": len(songs), **{f"{k}_windows": v for k, v in counts.items()},
            "band_windows_with_drums": drums, "seconds": round(time.time() - started)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("export/cache"))
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    print(build(args.out, processes=args.processes))


if __name__ == "__main__":
    main()
