"""What the audience hears: Encore's renders against Bach chorales and real band music.

    python benchmarks/bench_music_eval.py                      # 2 patches x 6 seeds x 64 bars
    python benchmarks/bench_music_eval.py --seeds 1 2 --chorales 20 --renders /tmp/r
    python benchmarks/bench_music_eval.py --seeds 1 --bars 8 --chorales 2 --folk 2 \
        --drum-windows 10 --band 3                            # a quick check that it runs

The protocol is Yang & Lerch 2018 (mgeval), implemented in ``export/music_eval.py``: every
song is cut into whole 4-bar segments (silent ones left out); per segment the melody and
bass note counts, the melody's mean inter-onset interval (beats) and its note-length
histogram; per feature the overlapped area (OA) of the band set's intra-set distance
density and the density of distances between the set under test and the band set.
Per song: the share of distinct melodic-interval 3-grams, the share of melody notes on
the scale's third (Encore: the patch's key; the others: a Krumhansl-Schmuckler key
finder, which is also checked against the patch's key) and, for drums, the share of bars
identical to a bar of the groove library (``export/data/drum_grooves.toml``) and of 4-bar
segments whose bars' nearest library grooves name more than one style (fills left out).

Sets:
- Encore: ``encore render --no-audio`` of each patch and seed (kept in ``--renders`` when
  given, so a second run reuses them);
- Bach: the four-part chorales in 4/4 of music21's corpus (soprano = melody, bass voice =
  bass; no drums); folk: tunes in 2/4 and 4/4 of O'Neill's and Ryan's collections (melody);
- band: the Freedoom soundtrack (BSD-3-Clause) read from Debian's ``freedoom`` package
  by ``export/freedoom_corpus.py``; every piece is read as 4/4 from its first beat. Without
  the package the band column is skipped and OA is taken against Bach instead;
- training windows (drum rows only): 4-bar windows of ``export/drum_corpus.py``.

Goals (issue 18): OA >= 0.8 against the band set for melody and bass note count,
inter-onset interval and note-length histogram; distinct melodic 3-grams <= 0.8; < 10 % of
drum bars identical to a library bar; < 10 % of 4-bar drum segments mixing styles.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export import music_eval as me  # noqa: E402
from export.music_eval import Hit, LibraryBar, Song, Tone  # noqa: E402

PITCH_CLASSES = {"C": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "F": 5,
                 "F#": 6, "Gb": 6, "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10,
                 "B": 11}
SEGMENT_FEATURES = ("melody_notes", "melody_ioi", "bass_notes", "melody_lengths")
OA_GOAL = 0.8
TRIGRAM_GOAL = 0.8
DRUM_GOAL = 0.10


# ------------------------------------------------------------------ loading


def render(patch: str, seed: int, bars: int, folder: Path) -> Path:
    """``encore render --no-audio`` into ``folder`` unless its MIDI file is there."""
    if not (folder / "song.mid").is_file():
        subprocess.run([sys.executable, "-m", "engine.cli", "render", "--patch", patch,
                        "--bars", str(bars), "--seed", str(seed), "--no-audio",
                        "-o", str(folder)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    return folder


def _track_tones(track, tpb: int) -> tuple[list[Tone], list[Hit]]:
    tick, sounding, tones, hits = 0, {}, [], []
    for msg in track:
        tick += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            sounding[msg.note] = tick
            hits.append(Hit(tick / tpb, msg.note))
        elif msg.type in ("note_on", "note_off") and msg.note in sounding:
            start = sounding.pop(msg.note)
            if tick > start:
                tones.append(Tone(start / tpb, tick / tpb, msg.note))
    return tones, hits


def encore_song(folder: Path, name: str) -> Song:
    """A render's melody, bass and drums tracks, with the patch's key."""
    import mido

    midi = mido.MidiFile(folder / "song.mid")
    parts: dict[str, tuple[list[Tone], list[Hit]]] = {}
    for track in midi.tracks:
        parts[track.name] = _track_tones(track, midi.ticks_per_beat)
    with open(folder / "song.jsonl") as log:
        song = json.loads(log.readline())["patch"]["song"]
    return Song(name, me.monophonic(parts["melody"][0]),
                me.monophonic(parts["bass"][0], keep="low"), tuple(parts["drums"][1]),
                PITCH_CLASSES[song["key"]], song["mode"])


def _score_song(score, name: str, signatures: set[str], want_bass: bool) -> Song | None:
    """Top (and bottom) part of a score in one of ``signatures``, from its first full bar."""
    found = {ts.ratioString for ts in score.recurse().getElementsByClass("TimeSignature")}
    parts = list(score.parts) or [score]
    if not found or not found <= signatures or (want_bass and len(parts) < 4):
        return None
    first = parts[0].measure(1)
    shift = float(first.offset) if first is not None else 0.0
    lines = []
    for part in (parts[0], parts[-1]) if want_bass else (parts[0],):
        lines.append(tuple(
            Tone(float(n.offset) - shift, float(n.offset + n.quarterLength) - shift,
                 max(p.midi for p in n.pitches))
            for n in part.flatten().notes
            if n.quarterLength > 0 and not n.duration.isGrace and float(n.offset) >= shift))
    if not all(lines):
        return None
    return Song(name, me.monophonic(lines[0]),
                me.monophonic(lines[1], keep="low") if want_bass else ())


def corpus_songs(folders: Sequence[str], limit: int, signatures: set[str],
                 want_bass: bool) -> list[Song]:
    """Up to ``limit`` songs from music21's corpus folders (a tune book is an opus)."""
    from music21 import corpus, stream

    paths = sorted(str(p) for p in corpus.getCorePaths()
                   if any(f"/{folder}/" in str(p) for folder in folders))
    songs: list[Song] = []
    for path in paths:
        try:
            parsed = corpus.parse(path)
            scores = parsed.scores if isinstance(parsed, stream.Opus) else [parsed]
            for index, score in enumerate(scores):
                song = _score_song(score, f"{Path(path).stem}#{index}", signatures, want_bass)
                if song is not None:
                    songs.append(song)
                if len(songs) >= limit:
                    return songs
        except Exception:  # noqa: BLE001 - a corpus file music21 cannot read is skipped
            continue
    return songs


def bach_songs(limit: int) -> list[Song]:
    """Soprano and bass of music21's Bach chorales in 4/4."""
    return corpus_songs(["bach"], limit, {"4/4"}, want_bass=True)


def folk_songs(limit: int) -> list[Song]:
    """Tunes in 2/4 or 4/4 from O'Neill's (1850) and Ryan's (1883) collections (melody)."""
    return corpus_songs(["oneills1850", "ryansMammoth"], limit, {"2/4", "4/4"},
                        want_bass=False)


def library() -> list[LibraryBar]:
    from export.drum_corpus import load_grooves

    return [LibraryBar(tuple(int(v) for v in g.steps), g.style, g.is_fill)
            for g in load_grooves()]


def training_drum_bars(windows: int, seed: int) -> list[list[me.DrumBar]]:
    """4-bar drum training windows as songs of drum bars."""
    from export.drum_corpus import generate_drum_windows

    rows = generate_drum_windows(windows, me.SEGMENT_BARS, np.random.default_rng(seed))
    return [[tuple(int(v) for v in row[b * 16:(b + 1) * 16]) for b in range(me.SEGMENT_BARS)]
            for row in rows]


# ------------------------------------------------------------------ measuring


def with_key(song: Song) -> tuple[int, str]:
    if song.tonic is not None and song.mode is not None:
        return song.tonic, song.mode
    return me.find_key(song.melody + song.bass)


def song_drum_bars(song: Song) -> list[me.DrumBar]:
    bars = int(song.length_beats // me.BEATS_PER_BAR)
    return me.drum_bars(song.drums, bars - bars % me.SEGMENT_BARS)


def measure(songs: Sequence[Song], grooves: list[LibraryBar],
            drum_songs: Sequence[Sequence[me.DrumBar]] | None = None) -> dict[str, object]:
    """Segment features (lists, for OA) and per-set summaries of one set."""
    feats: dict[str, list[object]] = {name: [] for name in SEGMENT_FEATURES}
    bar_counts: list[int] = []
    all_lengths = np.zeros(len(me.NOTE_LENGTHS))
    trigrams, segment_trigrams, thirds, keys_agree = [], [], [], []
    for song in songs:
        for start in me.segment_starts(song):
            for name, value in me.segment_features(song, start).items():
                feats[name].append(value)
            window = start + me.SEGMENT_BARS * me.BEATS_PER_BAR
            segment_trigrams.append(me.interval_trigram_distinct_share(
                [t for t in song.melody if start <= t.start < window]))
        n_bars = int(song.length_beats // me.BEATS_PER_BAR)
        onsets = [{t.start for t in song.melody if b * 4 <= t.start < b * 4 + 4}
                  for b in range(n_bars)]
        bar_counts += [len(o) for o in onsets]
        for tone in song.melody:
            all_lengths[me.note_length_class(tone.end - tone.start)] += 1
        trigrams.append(me.interval_trigram_distinct_share(song.melody))
        tonic, mode = with_key(song)
        thirds.append(me.third_share(song.melody, tonic, mode))
        if song.tonic is not None and song.melody:
            keys_agree.append(me.find_key(song.melody + song.bass) == (song.tonic, song.mode))
    if not any(song.bass for song in songs):
        feats["bass_notes"] = []  # a set without bass (folk) has no bass figures
    if drum_songs is None:
        drum_songs = [song_drum_bars(s) for s in songs if s.drums]
    pooled = [bar for bars in drum_songs for bar in bars]
    order = np.argsort(all_lengths)[::-1]
    return {
        "songs": len(songs),
        "segments": len(feats["melody_notes"]),
        "features": feats,
        "empty_bars": float(np.mean([c == 0 for c in bar_counts])) if bar_counts else math.nan,
        "single_bars": float(np.mean([c == 1 for c in bar_counts])) if bar_counts else math.nan,
        "lengths": [me.NOTE_LENGTHS[i][0] for i in order[:3] if all_lengths[i] > 0],
        "length_shares": all_lengths / max(1.0, all_lengths.sum()),
        "trigram": float(np.nanmean(trigrams)) if songs else math.nan,
        "segment_trigram": mean_of(segment_trigrams),
        "third": float(np.nanmean(thirds)) if songs else math.nan,
        "third_range": (float(np.nanmin(thirds)), float(np.nanmax(thirds))) if songs else None,
        "key_agree": (sum(keys_agree), len(keys_agree)),
        "library": me.library_share(pooled, grooves) if pooled else math.nan,
        "mixing": me.style_mixing_share(pooled, grooves) if pooled else math.nan,
    }


def mean_of(values: Sequence[object]) -> float:
    numbers = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(numbers)) if numbers else math.nan


def fmt(value: float, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.0f} %" if percent else f"{value:.2f}"


def print_table(columns: dict[str, dict[str, object]]) -> None:
    rows: list[tuple[str, Callable[[dict[str, object]], str]]] = [
        ("songs / 4-bar segments", lambda m: f"{m['songs']} / {m['segments']}"),
        ("melody notes", lambda m: fmt(mean_of(m["features"]["melody_notes"]))),
        ("melody mean inter-onset (beats)", lambda m: fmt(mean_of(m["features"]["melody_ioi"]))),
        ("bass notes", lambda m: fmt(mean_of(m["features"]["bass_notes"]))),
        ("commonest note lengths (melody)", lambda m: ", ".join(m["lengths"]) or "-"),
        ("melody bars empty / one note", lambda m: f"{fmt(m['empty_bars'], True)} / "
                                                   f"{fmt(m['single_bars'], True)}"),
        ("distinct melodic 3-grams (song)", lambda m: fmt(m["trigram"], True)),
        ("distinct melodic 3-grams (4 bars)", lambda m: fmt(m["segment_trigram"], True)),
        ("melody notes on the third", lambda m: fmt(m["third"], True) + (
            f" ({fmt(m['third_range'][0], True)}-{fmt(m['third_range'][1], True)})"
            if m["third_range"] and m["key_agree"][1] else "")),
        ("key finder agrees with the patch", lambda m: (
            f"{m['key_agree'][0]} of {m['key_agree'][1]}" if m["key_agree"][1] else "-")),
        ("drum bars = a library bar", lambda m: fmt(m["library"], True)),
        ("4-bar drum segments mixing styles", lambda m: fmt(m["mixing"], True)),
    ]
    names = list(columns)
    print("| per 4 bars | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, cell in rows:
        print(f"| {label} | " + " | ".join(cell(columns[n]) for n in names) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--patches", nargs="+", default=["default", "night_drive"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--bars", type=int, default=64)
    parser.add_argument("--renders", type=Path, default=None,
                        help="keep renders here and reuse them (default: a temporary folder)")
    parser.add_argument("--chorales", type=int, default=60, help="Bach chorales to read")
    parser.add_argument("--folk", type=int, default=60, help="folk tunes to read (0: none)")
    parser.add_argument("--drum-windows", type=int, default=300)
    parser.add_argument("--band", type=int, default=None,
                        help="Freedoom pieces to read (default: all of them)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    grooves = library()
    with tempfile.TemporaryDirectory(prefix="encore-eval-") as tmp:
        base = args.renders or Path(tmp)
        encore: dict[str, list[Song]] = {}
        for patch in args.patches:
            label = Path(patch).stem  # a shipped patch's name, or a patch file's
            encore[label] = [encore_song(render(patch, seed, args.bars,
                                                base / f"{label}_s{seed}"), f"{label}/{seed}")
                             for seed in args.seeds]
    print(f"rendered/read {sum(map(len, encore.values()))} Encore songs "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    bach = bach_songs(args.chorales)
    from export.freedoom_corpus import LICENCE, WadError, load_songs

    try:
        band = load_songs(limit=args.band)
    except WadError as exc:
        print(f"band set skipped: {exc}", file=sys.stderr)
        band = []
    all_encore = [s for songs in encore.values() for s in songs]
    columns = {"Encore": measure(all_encore, grooves)}
    if len(encore) > 1:
        columns.update({p: measure(s, grooves) for p, s in encore.items()})
    columns["Bach"] = measure(bach, grooves)
    folk = folk_songs(args.folk) if args.folk else []
    if folk:
        columns["folk"] = measure(folk, grooves)
    if band:
        columns["Freedoom (band)"] = measure(band, grooves)
    columns["drum training windows"] = measure(
        [], grooves, training_drum_bars(args.drum_windows, 0))

    print(f"\nsets: Encore = {', '.join(args.patches)} x seeds {args.seeds} x {args.bars} bars;"
          f" Bach = {len(bach)} chorales, folk = {len(folk)} tunes (music21); "
          + (f"band = {len(band)} Freedoom pieces ({LICENCE})" if band else "band: none"))
    print_table(columns)

    reference_name = "Freedoom (band)" if band else "Bach"
    reference = columns[reference_name]["features"]
    print(f"\nOverlapped area against {reference_name} (intra-set of {reference_name} vs "
          "inter-set; 1 = as close as its own pieces are to each other):")
    tested = [n for n in columns if n not in (reference_name, "drum training windows")]
    print("| feature | " + " | ".join(tested) + " |")
    print("|---|" + "---|" * len(tested))
    oa: dict[str, dict[str, float]] = {}
    for feature in SEGMENT_FEATURES:
        oa[feature] = {n: me.feature_oa(columns[n]["features"][feature], reference[feature],
                                        np.random.default_rng(0)) for n in tested}
        print(f"| {feature} | " + " | ".join(fmt(oa[feature][n]) for n in tested) + " |")

    encore_m = columns["Encore"]
    goals = [(f"OA {f} >= {OA_GOAL} vs {reference_name}", oa[f]["Encore"],
              oa[f]["Encore"] >= OA_GOAL) for f in SEGMENT_FEATURES]
    goals += [
        (f"distinct melodic 3-grams <= {TRIGRAM_GOAL:.0%}", encore_m["trigram"],
         encore_m["trigram"] <= TRIGRAM_GOAL),
        (f"drum bars = a library bar < {DRUM_GOAL:.0%}", encore_m["library"],
         encore_m["library"] < DRUM_GOAL),
        (f"4-bar drum segments mixing styles < {DRUM_GOAL:.0%}", encore_m["mixing"],
         encore_m["mixing"] < DRUM_GOAL),
    ]
    print(f"\nGoals (Encore, {' + '.join(args.patches)}):")
    for label, value, ok in goals:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}: {fmt(value, '%' in label)}")
    print("  (not measured here: held-out reconstruction accuracy of a new trio; whether the "
          "patches sound like their names)")
    print(f"\n{time.perf_counter() - t0:.0f} s in all", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
