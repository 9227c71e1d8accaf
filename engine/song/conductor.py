"""The conductor: song form and latent walk -> one plan per bar -> arranged music.

Two halves, so the live engine can run them in different places:

- :class:`Conductor` plans. It owns the form, the section anchors and the latent walker,
  and turns each bar index into a :class:`BarPlan` (section, z, motion, temperature, the
  noise seed). It is cheap and deterministic for a patch and seed; the live loop runs it.
- :class:`Composer` realises a plan into an :class:`ArrangedBar`: it decodes the plan's z
  with the MusicVAE runner (the segment's bar at the bar's place in its 4-bar phrase),
  moves the material into the patch's key (one shift per section pass, measured on the
  section's anchor), snaps stray notes to the scale, derives a chord part and sets
  velocities. It is a pure function of the plan, so it can run in a worker process, and
  offline render and live play give the same notes.

Noise seeds depend on the song seed, the section name and the bar's place in the section,
not on the pass: a chorus that comes back decodes from nearly the same z with the same
noise, so it comes back recognisably, while its anchor's slow drift lets it evolve.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.music.arrangement import (
    apply_velocity,
    derive_chords,
    detect_key,
    snap_to_scale,
    transposition_interval,
)
from engine.music.groove import choose_fill, splice_fill
from engine.music.latent_walk import LatentWalker, WalkSettings, slerp, to_typical_set
from engine.music.musicvae_runner import MusicVAERunner
from engine.music.notes import (
    BASS,
    DRUMS,
    MELODY,
    STEPS_PER_BAR,
    Bar,
    Note,
    fold_into,
    join_bars,
)
from engine.music.song_form import Anchors, FormPosition, SectionWalk, SongForm
from engine.patch import Patch

CHORDS = "chords"
PARTS = (MELODY, BASS, DRUMS, CHORDS)
KEY_NAMES = {"C": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "F": 5, "F#": 6,
             "Gb": 6, "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11}
REGISTERS = {MELODY: (60, 84), BASS: (28, 52)}
SNAP_STRENGTH = 0.5
XY_REACH = 0.6
ANCHOR_DECODES_KEPT = 64
PHRASE_BARS = 4
MOTIF_PLACE = 2
FILL_CANDIDATES = 16  # decodes of a section's last bar the fill is chosen from


@dataclass(frozen=True)
class BarPlan:
    """What bar ``index`` should be: everything the composer needs, nothing it must know."""

    index: int
    position: FormPosition
    z: np.ndarray = field(compare=False)
    anchor: np.ndarray = field(compare=False)
    motion: str
    temperature: float
    noise_seed: int
    form: str = "main"  # the form's name (the event log has it in the control records)
    phrase_bar: int = -1  # the bar of the decoded phrase it plays (-1: its place in the section)

    def to_dict(self) -> dict[str, Any]:
        return {"bar": self.index, "section": self.position.section,
                "pass": self.position.pass_number,
                "bar_in_section": self.position.bar_in_section, "motion": self.motion,
                "temperature": self.temperature, "noise_seed": self.noise_seed,
                "phrase_bar": self.phrase_bar,
                "z": [round(float(v), 6) for v in self.z],
                "anchor": [round(float(v), 6) for v in self.anchor]}


@dataclass(frozen=True)
class ArrangedBar:
    """One bar of every part, bar-relative grid notes, ready to play or write."""

    index: int
    section: str
    parts: dict[str, tuple[Note, ...]]
    key_shift: int

    def to_dict(self) -> dict[str, Any]:
        return {"key_shift": self.key_shift,
                "notes": {p: [[n.pitch, n.velocity, n.start, n.end] for n in notes]
                          for p, notes in self.parts.items()}}

    @classmethod
    def from_dict(cls, index: int, section: str, data: dict[str, Any]) -> ArrangedBar:
        parts = {p: tuple(Note(s, pitch, e, v) for pitch, v, s, e in notes)
                 for p, notes in data["notes"].items()}
        return cls(index, section, parts, int(data.get("key_shift", 0)))


def _seed(*items: object) -> int:
    return zlib.crc32(repr(items).encode()) & 0x7FFFFFFF


class Conductor:
    """Plans the song bar by bar from a patch: form, anchors, walk."""

    def __init__(self, patch: Patch, z_size: int, *, seed: int | None = None) -> None:
        self.patch = patch
        self.seed = patch.song.seed if seed is None else seed
        lengths = patch.form.lengths
        self.forms: dict[str, SongForm] = {
            name: SongForm([(section, lengths[section]) for section in sections],
                           loop_from=loop_from)
            for name, (sections, loop_from) in patch.form.named().items()}
        self.form_name = patch.form.name  # the form of the bars planned so far
        self._form_names = {id(form): name for name, form in self.forms.items()}
        self.anchors = Anchors(z_size, self.seed, drift=patch.walk.anchor_drift)
        self.settings = WalkSettings(temperature=patch.walk.temperature,
                                     step_size=patch.walk.step_size, wander=patch.walk.wander,
                                     glide_bars=patch.walk.glide_bars)
        self.walker = LatentWalker(z_size, self.settings, seed=self.seed)
        self.section_walk = SectionWalk(self.forms[self.form_name], self.anchors, self.walker)
        self.next_bar = 0
        self._phrase_head: tuple[np.ndarray, int] | None = None
        # Two fixed orthonormal latent directions for the tablet's x/y pad.
        rng = np.random.default_rng([self.seed, 0x5859])
        basis, _ = np.linalg.qr(rng.standard_normal((z_size, 2)))
        self.xy_basis = basis.T  # (2, Z)
        self.xy = (0.5, 0.5)

    # ---- what the tablet changes (each from the next planned bar) ---------------------
    def set_xy(self, x: float, y: float) -> None:
        """Move along the x/y pad's two latent directions (0.5, 0.5 = no offset); from the
        next planned bar. Full travel tilts z by up to XY_REACH of the prior's radius."""
        self.xy = (min(max(float(x), 0.0), 1.0), min(max(float(y), 0.0), 1.0))

    def set_walk(self, *, step_size: float | None = None, temperature: float | None = None,
                 wander: float | None = None) -> None:
        """Change the walk's settings (those given)."""
        changes = {key: float(value) for key, value in (
            ("step_size", step_size), ("temperature", temperature), ("wander", wander))
            if value is not None}
        self.walker.update(self.walker.settings.replace(**changes))

    def freeze(self, on: bool) -> None:
        """Hold the walk where it is (the bar's point repeats), or let it move again."""
        self.walker.freeze(bool(on))

    def drift(self) -> None:
        """Back to the slow drift around the section's anchor."""
        self.walker.drift()

    def jump(self) -> None:
        """Jump to a fresh point for the rest of this section."""
        self.section_walk.force_jump()

    def glide(self) -> None:
        """Glide to a fresh point, seeded by the song and the next bar."""
        rng = np.random.default_rng([self.seed, self.next_bar, 0x61])
        self.walker.glide_to(to_typical_set(rng.standard_normal(self.walker.dim)))

    def next_section(self) -> None:
        """The next planned bar starts the next section."""
        self.section_walk.force_next_section()

    def previous_section(self) -> None:
        """The next planned bar starts the previous section again."""
        self.section_walk.force_previous_section()

    def choose_form(self, name: str) -> None:
        """Play form ``name`` from the next section boundary, from its first section.
        Choosing the form playing keeps it (and cancels a switch still waiting). Raises
        KeyError naming the forms there are."""
        if name not in self.forms:
            raise KeyError(f"no form {name!r} in this patch; the forms are "
                           f"{', '.join(self.forms)} (add one as [form.others.{name}])")
        form = self.forms[name]
        self.section_walk.choose_form(None if form is self.section_walk.form else form)

    # ---- what the show and its pages read --------------------------------------------
    @property
    def form(self) -> SongForm:
        """The form of the bars planned so far."""
        return self.section_walk.form

    def playing_form(self, plan: BarPlan | None) -> SongForm:
        """The form of ``plan`` (the bar playing), else of the bars planned so far."""
        return self.forms.get(plan.form, self.form) if plan is not None else self.form

    @property
    def form_pending(self) -> str | None:
        """The form chosen to take over at the next section boundary, if any."""
        pending = self.section_walk.form_pending
        return None if pending is None else self._form_names[id(pending)]

    @property
    def frozen(self) -> bool:
        return bool(self.walker.frozen)

    @property
    def walk_settings(self) -> WalkSettings:
        return self.walker.settings

    def latest_point(self) -> tuple[np.ndarray, np.ndarray]:
        """The walk's latest point and its anchor (the last bar planned)."""
        return self.walker.z, self.walker.anchor

    def position_of(self, bar: int) -> FormPosition:
        """Where performance bar ``bar`` falls in the form planned (right unless a section
        or form change is still in the bars planned ahead of it)."""
        return self.form.position(max(0, bar + self.section_walk.shift))

    def plan(self) -> BarPlan:
        """The plan of the next bar (call once per bar, in order)."""
        index = self.next_bar
        z, position, motion = self.section_walk.z_for_bar(index)
        self.form_name = self._form_names[id(self.section_walk.form)]
        self.next_bar += 1
        if self.xy != (0.5, 0.5):
            offset = (np.array(self.xy) - 0.5) * 2.0 * XY_REACH * np.sqrt(len(z))
            z = to_typical_set(z + offset @ self.xy_basis)
        anchor = self.anchors.anchor(position.section, position.pass_number)
        noise_seed = _seed(self.seed, position.section, position.bar_in_section)
        phrase_bar = -1
        place = position.bar_in_section % PHRASE_BARS
        if place == 0:
            self._phrase_head = (z, noise_seed)
        elif (place == MOTIF_PLACE and self._phrase_head is not None
              and self.patch.walk.motif < 1.0):
            # the phrase's third bar restates its first: the first bar's point moved a
            # little toward this bar's own, with the first bar's noise, its place decoded
            head_z, head_seed = self._phrase_head
            z, noise_seed, phrase_bar = slerp(head_z, z, self.patch.walk.motif), head_seed, 0
        return BarPlan(index, position, z.astype(np.float32), anchor.astype(np.float32),
                       motion, self.walker.settings.temperature, noise_seed,
                       self.form_name, phrase_bar)


class Composer:
    """Realises bar plans into arranged bars with the model (pure given the plan)."""

    def __init__(self, runner: MusicVAERunner, patch: Patch) -> None:
        missing = [p for p in (MELODY, BASS, DRUMS) if p not in runner.parts]
        if missing:
            raise ValueError(f"model {runner.name} has parts {runner.parts}; the song needs "
                             f"a trio model (melody, bass, drums); missing {missing}")
        self.runner = runner
        self.patch = patch
        self.tonic = KEY_NAMES[patch.song.key]
        self.mode = patch.song.mode
        self._shifts: dict[tuple[str, int], tuple[int, dict[str, int]]] = {}
        self._anchor_decodes: dict[tuple[str, int], list[Bar]] = {}

    def _decode_bar(self, z: np.ndarray, temperature: float, seed: int, bar: int
                    ) -> dict[str, list[Note]]:
        bars = self.runner.decode(z, temperature=temperature, seed=seed)
        chosen = bars[bar % self.runner.bars]
        return {p: list(chosen.notes(p)) for p in self.runner.parts}

    def _anchor_bars(self, plan: BarPlan) -> list[Bar]:
        """The section pass's anchor decoded at temperature 0 (its key and its groove)."""
        key = (plan.position.section, plan.position.pass_number)
        if key not in self._anchor_decodes:
            if len(self._anchor_decodes) >= ANCHOR_DECODES_KEPT:  # a show may run for hours
                del self._anchor_decodes[next(iter(self._anchor_decodes))]
            self._anchor_decodes[key] = self.runner.decode(plan.anchor, temperature=0.0,
                                                           seed=plan.noise_seed)
        return self._anchor_decodes[key]

    def _drums(self, plan: BarPlan, own: list[Note]) -> list[Note]:
        """The bar's drums. ``groove = "section"``: the section's groove (the first bar of
        its anchor's drum phrase) on every bar; the last beat of each inner 4-bar phrase
        varies it with the anchor phrase's own last beat, and the section's last bar ends
        in a fill chosen from the model's decodes of that bar (``engine.music.groove``).
        ``"bar"``: the walk's own bar."""
        if self.patch.walk.groove == "bar":
            return own
        bars = self._anchor_bars(plan)
        groove = bars[0].notes(DRUMS)
        if plan.position.bars_left == 1:
            return list(splice_fill(groove, self._fill(plan)))
        place = plan.position.bar_in_section % len(bars)
        if place == len(bars) - 1:
            return list(splice_fill(groove, bars[place].notes(DRUMS)))
        return list(groove)

    def _fill(self, plan: BarPlan) -> tuple[Note, ...]:
        """The strongest fill among FILL_CANDIDATES decodes of the bar's z (other noise
        draws; the first is the walk's own bar)."""
        decoded = self.runner.decode(np.repeat(plan.z[None], FILL_CANDIDATES, axis=0),
                                     temperature=plan.temperature, seed=plan.noise_seed)
        place = plan.position.bar_in_section % self.runner.bars
        return choose_fill([decoded[k * self.runner.bars + place].notes(DRUMS)
                            for k in range(FILL_CANDIDATES)])

    def _section_shift(self, plan: BarPlan) -> tuple[int, dict[str, int]]:
        """Key shift and per-part octave shift of a section pass, measured on its anchor."""
        key = (plan.position.section, plan.position.pass_number)
        if key not in self._shifts:
            bars = self._anchor_bars(plan)
            melody = join_bars([b.notes(MELODY) for b in bars])
            bass = join_bars([b.notes(BASS) for b in bars])
            found = detect_key(melody + bass)
            shift = transposition_interval(found, (self.tonic, self.mode))
            octaves = {}
            for part, notes in ((MELODY, melody), (BASS, bass)):
                low, high = REGISTERS[part]
                if notes:
                    centre = float(np.median([n.pitch for n in notes])) + shift
                    octaves[part] = int(round(((low + high) / 2 - centre) / 12)) * 12
                else:
                    octaves[part] = 0
            self._shifts[key] = (shift, octaves)
        return self._shifts[key]

    def realize(self, plan: BarPlan) -> ArrangedBar:
        parts = self._decode_bar(plan.z, plan.temperature, plan.noise_seed,
                                 plan.position.bar_in_section if plan.phrase_bar < 0
                                 else plan.phrase_bar)
        shift, octaves = self._section_shift(plan)
        rng = np.random.default_rng(plan.noise_seed + plan.index)
        out: dict[str, tuple[Note, ...]] = {}
        for part in (MELODY, BASS):
            low, high = REGISTERS[part]
            moved = [Note(n.start, fold_into(n.pitch + shift + octaves[part], low, high), n.end,
                          n.velocity) for n in parts[part]]
            moved = snap_to_scale(moved, self.tonic, self.mode, SNAP_STRENGTH, rng)
            # a snap moves a semitone and may step out of the register: fold it back (an
            # octave keeps the pitch class, so the note stays in key)
            out[part] = tuple(sorted(Note(n.start, fold_into(n.pitch, low, high), n.end,
                                          n.velocity) for n in moved))
        out[DRUMS] = tuple(self._drums(plan, parts[DRUMS]))
        chords = derive_chords(list(out[MELODY]), list(out[BASS]), self.tonic, self.mode,
                               n_bars=1)
        out[CHORDS] = tuple(chords)
        for part, notes in out.items():
            settings = getattr(self.patch.parts, part)
            octave = 0 if part == DRUMS else settings.octave * 12
            levelled = apply_velocity(notes, base=settings.velocity)
            out[part] = tuple(_in_octave(n, octave) for n in levelled)
        for part, notes in out.items():
            out[part] = tuple(n for n in notes if n.start < STEPS_PER_BAR)
        return ArrangedBar(plan.index, plan.position.section, out, shift)


def _in_octave(note: Note, octave: int) -> Note:
    velocity = max(1, min(127, note.velocity))
    pitch = max(0, min(127, note.pitch + octave))
    return Note(note.start, pitch, note.end, velocity)
