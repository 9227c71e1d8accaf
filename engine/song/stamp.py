"""Humanize and stamp a bar: where a bar's grid notes get their human feel and their times.

One function for the live show, ``encore render`` and ``encore replay``, so the three play
the same notes at the same moments:

- :func:`played` is what each part plays of the composed bar: nothing in a section the
  part rests in, each note at the part's gate (the bar itself, logged and sung, keeps the
  written notes);
- :func:`humanize_bar` draws the patch's timing and velocity feel for one bar, seeded by
  ``[humanize.seed, bar]``, part by part in the composer's order (a muted part draws
  nothing, so muting one part never moves another's notes);
- :func:`synth_events` times them in seconds on an offline tempo map
  (:meth:`engine.clock.Clock.offline`) for the FluidSynth render of a render or replay;
- :func:`stamp_bar` times them in ``time.monotonic_ns`` on the live clock, and in beats for
  the set's recording.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.audio.fluid_render import SynthEvent, note_events
from engine.clock import BEATS_PER_BAR, NS_PER_S, STEPS_PER_BEAT, Clock
from engine.music.arrangement import humanize
from engine.music.notes import Note
from engine.patch import Patch
from engine.song.conductor import PARTS, ArrangedBar

MIN_NOTE_NS = 1_000_000  # a live note lasts at least 1 ms (the sender needs on before off)
LIVE_STEPS = 4 * BEATS_PER_BAR * STEPS_PER_BEAT  # a live note may ring 3 bars past its own


@dataclass(frozen=True, slots=True)
class HumanPart:
    """One part of a bar, humanized: ``(note, timing offset in seconds)`` pairs, the notes
    in steps from the bar's start, on ``channel`` (0-based)."""

    part: str
    channel: int
    notes: list[tuple[Note, float]]


@dataclass(frozen=True, slots=True)
class StampedNote:
    """A live note: when it sounds (monotonic ns) and where it goes in the recording
    (beats from the song's start)."""

    part: str
    channel: int
    pitch: int
    velocity: int
    start_ns: int
    end_ns: int
    start_beat: float
    end_beat: float


def played(bar: ArrangedBar, patch: Patch) -> dict[str, tuple[Note, ...]]:
    """Each part's notes as played: none in a section of the part's ``rest_in``; else each
    note cut to the part's ``gate`` of its written length (at least one step)."""
    out = {}
    for part, notes in bar.parts.items():
        settings = getattr(patch.parts, part)
        if bar.section in settings.rest_in:
            out[part] = ()
        elif settings.gate < 1.0:
            out[part] = tuple(Note(n.start, n.pitch,
                                   n.start + max(1, round(n.duration * settings.gate)),
                                   n.velocity) for n in notes)
        else:
            out[part] = notes
    return out


def humanize_bar(bar: ArrangedBar, patch: Patch, bpm: float,
                 muted: Mapping[str, bool]) -> list[HumanPart]:
    """The bar's unmuted parts with the patch's human feel at ``bpm``."""
    rng = np.random.default_rng([patch.humanize.seed, bar.index])
    out = []
    sounding = played(bar, patch)
    for part in PARTS:
        notes = sounding.get(part, ())
        if not notes or muted.get(part, False):
            continue
        human = humanize(notes, patch.humanize.timing_ms, patch.humanize.velocity, bpm, rng)
        out.append(HumanPart(part, getattr(patch.parts, part).channel - 1, human))
    return out


def synth_events(bar: ArrangedBar, patch: Patch, tempo: Clock,
                 muted: Mapping[str, bool]) -> list[SynthEvent]:
    """The bar's note events in seconds from beat 0 of an offline tempo map."""
    bpm = tempo.bpm_at(bar.index * BEATS_PER_BAR)
    start_s = tempo.seconds_at_bar(bar.index)
    events: list[SynthEvent] = []
    for human in humanize_bar(bar, patch, bpm, muted):
        events += note_events(human.notes, bpm, human.channel, start_s=start_s)
    return events


def stamp_bar(bar: ArrangedBar, patch: Patch, clock: Clock,
              muted: Mapping[str, bool]) -> list[StampedNote]:
    """The bar's notes on the live clock: the grid steps where the clock puts them (tempo
    changes included), moved by the human offset; each note at least :data:`MIN_NOTE_NS`."""
    bpm = clock.bpm_at(bar.index * BEATS_PER_BAR)
    step_ns = [clock.step_to_ns(bar.index, s) for s in range(LIVE_STEPS + 1)]
    first_beat = bar.index * BEATS_PER_BAR
    beats_per_s = bpm / 60.0
    out = []
    for human in humanize_bar(bar, patch, bpm, muted):
        for note, offset_s in human.notes:
            offset_ns = int(offset_s * NS_PER_S)
            start = step_ns[min(note.start, LIVE_STEPS)] + offset_ns
            end_step = min(note.end, LIVE_STEPS)
            end = max(step_ns[end_step] + offset_ns, start + MIN_NOTE_NS)
            shift = offset_s * beats_per_s
            out.append(StampedNote(human.part, human.channel, note.pitch, note.velocity,
                                   start, end, first_beat + note.start / STEPS_PER_BEAT + shift,
                                   first_beat + end_step / STEPS_PER_BEAT + shift))
    return out
