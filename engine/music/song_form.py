"""The song's form (sections that loop), an anchor latent per section, and the walk between.

    form = SongForm([("intro", 4), ("verse", 8), ("chorus", 8)], loop_from=1)
    form.position(20)   # FormPosition(bar_index=20, section='chorus', pass_number=0, ...)
    form.position(28)   # the verse again: pass 1 (the intro plays only once)
    anchors = Anchors(dim=128, seed=7)          # every chorus shares one (slowly drifting) z
    walk = SectionWalk(form, anchors, LatentWalker(128, WalkSettings(), seed=7))
    z, pos, motion = walk.z_for_bar(0)          # call with 0, 1, 2, ... one per bar

The form
--------
Pass 0 plays every section once, in order; each later pass plays ``sections[loop_from:]``
again. ``pass_number`` counts how many times the form came round, so a section's bars in
pass ``p`` are "the p-th return" of it. ``position(bar_index)`` is a pure function of the
bar index: the conductor owns the bar counter and asks.

Anchors
-------
One anchor per section *name* (every chorus shares it), from its own generator
``np.random.default_rng([seed, crc32(name), k])``: k = 0 gives the pass-0 anchor, k = p the
direction of pass p's drift. So an anchor depends only on (seed, name, pass): renaming or
reordering other sections, or asking in any order, never changes it.

Each pass the anchor moves a little, so a returning chorus is the same chorus, developed.
The move is a tethered random walk on the sphere: a tangent vector ``v`` at the pass-0
anchor ``a`` (unit ``a^``), an AR(1) process in passes::

    v[0] = 0,   v[p] = ANCHOR_TETHER * v[p-1] + drift * u[p]    (u[p]: random unit, tangent)
    anchor(p) = sqrt(d) * (cos|v[p]| a^ + sin|v[p]| v[p]/|v[p]|)     (the exponential map)

``|v|`` is the angle (radians) from the pass-0 anchor: exactly ``drift`` at pass 1, then
growing like ``drift * sqrt(p)`` at first but bounded: its rms tends to
``drift / sqrt(1 - ANCHOR_TETHER**2)`` = 2.29 drift. With the default drift 0.15 that is
0.34 rad (cosine 0.94 to pass 0) however long the set runs, while consecutive passes differ
by ~0.15 rad (cosine ~0.99). An untethered walk would have lost the chorus after ~40 passes.

Walking the form
----------------
``SectionWalk`` turns the form into walker motions, one bar at a time: on the first bar of a
section it glides from wherever the walk is to that section's anchor for this pass over
``settings.glide_bars`` bars (the very first bar of the song jumps there instead); inside a
section the walker drifts around the anchor. It returns ``(z, FormPosition, motion)``.
``choose_form(other)`` swaps the form at the next section boundary: that bar is the other
form's first bar (its pass 0), glided into like any section start.

numpy only: this module is part of the runtime.
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.music.latent_walk import LatentWalker, to_typical_set

PHRASE_BARS = 4
"""Bars in a phrase: the decoder makes 4-bar segments and keeps one bar of each."""
DEFAULT_ANCHOR_DRIFT = 0.15
"""Radians an anchor moves per pass: cosine 0.989 between consecutive passes."""
ANCHOR_TETHER = 0.9
"""AR(1) coefficient pulling a drifting anchor back towards its pass-0 self each pass."""
MAX_ANCHOR_DRIFT = 0.5
"""Largest allowed ``drift``: its stationary spread (1.15 rad) is already far."""


@dataclass(frozen=True, slots=True)
class Section:
    """A named run of bars; sections with one name share an anchor."""

    name: str
    bars: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"a section name must be a non-empty str, got {self.name!r}")
        if isinstance(self.bars, bool) or not isinstance(self.bars, int):
            raise TypeError(f"section {self.name!r}: bars must be an int, got {self.bars!r}")
        if self.bars < 1:
            raise ValueError(f"section {self.name!r}: bars must be >= 1, got {self.bars}")


@dataclass(frozen=True, slots=True)
class FormPosition:
    """Where one bar falls in the form."""

    bar_index: int
    """The bar's index in the form (0 = the first bar of the song)."""
    section: str
    """The section's name."""
    section_index: int
    """Its index in ``SongForm.sections``."""
    pass_number: int
    """How many times the form has come round (0 = first time through)."""
    bar_in_section: int
    section_bars: int
    next_section: str
    """The name of the section that follows this one."""

    @property
    def is_section_start(self) -> bool:
        return self.bar_in_section == 0

    @property
    def bars_left(self) -> int:
        """Bars of this section from this one on (1 on its last bar)."""
        return self.section_bars - self.bar_in_section

    @property
    def bar_in_phrase(self) -> int:
        """The bar's place in its 4-bar phrase, counted from the section start."""
        return self.bar_in_section % PHRASE_BARS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SongForm:
    """Sections played in order, then ``sections[loop_from:]`` again and again."""

    def __init__(self, sections: Sequence[tuple[str, int] | Section], loop_from: int = 0
                 ) -> None:
        if not sections:
            raise ValueError("a form needs at least one section, e.g. [('verse', 8)]")
        self.sections: tuple[Section, ...] = tuple(
            s if isinstance(s, Section) else Section(*s) for s in sections)
        if isinstance(loop_from, bool) or not isinstance(loop_from, int):
            raise TypeError(f"loop_from must be an int, got {loop_from!r}")
        if not 0 <= loop_from < len(self.sections):
            raise ValueError(f"loop_from must index a section (0..{len(self.sections) - 1}), "
                             f"got {loop_from}")
        self.loop_from = loop_from
        starts, total = [], 0
        for section in self.sections:
            starts.append(total)
            total += section.bars
        self._starts = tuple(starts)
        self.first_pass_bars = total
        """Bars in pass 0 (every section)."""
        self.loop_bars = total - starts[loop_from]
        """Bars in every later pass (``sections[loop_from:]``)."""

    def __repr__(self) -> str:
        body = ", ".join(f"({s.name!r}, {s.bars})" for s in self.sections)
        return f"SongForm([{body}], loop_from={self.loop_from})"

    def __iter__(self) -> Iterator[FormPosition]:
        """Every bar's position from bar 0, without end."""
        return self.positions()

    def positions(self, start: int = 0) -> Iterator[FormPosition]:
        bar = start
        while True:
            yield self.position(bar)
            bar += 1

    def position(self, bar_index: int) -> FormPosition:
        """Where bar ``bar_index`` falls (pure: no iteration state)."""
        if isinstance(bar_index, bool) or not isinstance(bar_index, int | np.integer):
            raise TypeError(f"bar_index must be an int, got {bar_index!r}")
        bar_index = int(bar_index)
        if bar_index < 0:
            raise ValueError(f"bar_index must be >= 0, got {bar_index}")
        if bar_index < self.first_pass_bars:
            pass_number, offset = 0, bar_index
        else:
            rest = bar_index - self.first_pass_bars
            pass_number = 1 + rest // self.loop_bars
            offset = self._starts[self.loop_from] + rest % self.loop_bars
        index = bisect.bisect_right(self._starts, offset) - 1
        following = index + 1 if index + 1 < len(self.sections) else self.loop_from
        section = self.sections[index]
        return FormPosition(bar_index=bar_index, section=section.name, section_index=index,
                            pass_number=pass_number, bar_in_section=offset - self._starts[index],
                            section_bars=section.bars,
                            next_section=self.sections[following].name)

    def section_start(self, bar_index: int) -> int:
        """The bar where the section playing at ``bar_index`` began."""
        return bar_index - self.position(bar_index).bar_in_section

    def jump_to_next_section(self, from_bar: int) -> int:
        """The bar where the section after the one at ``from_bar`` starts.

        The conductor moves its bar counter there to skip the rest of this section.
        """
        return from_bar + self.position(from_bar).bars_left

    def jump_to_previous_section(self, from_bar: int) -> int:
        """The bar where the section before the one at ``from_bar`` starts (0 at the start)."""
        start = self.section_start(from_bar)
        return 0 if start == 0 else self.section_start(start - 1)

    def pass_start(self, pass_number: int) -> int:
        """The first bar of pass ``pass_number``."""
        if pass_number < 0:
            raise ValueError(f"pass_number must be >= 0, got {pass_number}")
        if pass_number == 0:
            return 0
        return self.first_pass_bars + (pass_number - 1) * self.loop_bars

    def sections_in_pass(self, pass_number: int) -> tuple[Section, ...]:
        """The sections pass ``pass_number`` plays: all of them in pass 0, then the loop."""
        if pass_number < 0:
            raise ValueError(f"pass_number must be >= 0, got {pass_number}")
        return self.sections if pass_number == 0 else self.sections[self.loop_from:]


class Anchors:
    """One latent anchor per section name, drifting a little each pass (tethered)."""

    def __init__(self, dim: int, seed: int, drift: float = DEFAULT_ANCHOR_DRIFT) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2 (the model's z size), got {dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if not 0 <= drift <= MAX_ANCHOR_DRIFT:
            raise ValueError(f"drift must be in [0, {MAX_ANCHOR_DRIFT}] radians per pass, "
                             f"got {drift}")
        self.dim = dim
        self.seed = seed
        self.drift = float(drift)
        self._units: dict[str, np.ndarray] = {}          # name -> unit pass-0 direction
        self._tangents: dict[str, list[np.ndarray]] = {}  # name -> [v[0], v[1], ...]

    def __repr__(self) -> str:
        return f"Anchors(dim={self.dim}, seed={self.seed}, drift={self.drift})"

    def _rng(self, name: str, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(name.encode("utf-8")), stream])

    def _unit(self, name: str) -> np.ndarray:
        if name not in self._units:
            z = self._rng(name, 0).standard_normal(self.dim)
            self._units[name] = z / np.linalg.norm(z)
            self._tangents[name] = [np.zeros(self.dim)]
        return self._units[name]

    def anchor(self, name: str, pass_number: int = 0) -> np.ndarray:
        """The anchor of section ``name`` in pass ``pass_number`` (norm ``sqrt(d)``)."""
        if isinstance(pass_number, bool) or not isinstance(pass_number, int | np.integer) \
                or pass_number < 0:
            raise ValueError(f"pass_number must be an int >= 0, got {pass_number!r}")
        unit = self._unit(name)
        tangents = self._tangents[name]
        while len(tangents) <= pass_number:
            step = self._rng(name, len(tangents)).standard_normal(self.dim)
            step -= (step @ unit) * unit
            step /= np.linalg.norm(step)
            v = ANCHOR_TETHER * tangents[-1] + self.drift * step
            tangents.append(v - (v @ unit) * unit)
        v = tangents[pass_number]
        angle = float(np.linalg.norm(v))
        if angle == 0.0:
            return unit * math.sqrt(self.dim)
        return to_typical_set(math.cos(angle) * unit + math.sin(angle) * (v / angle))


class SectionWalk:
    """Walker motions from the form: glide into each section's anchor, drift inside it.

    Call ``z_for_bar`` once per bar with the performance's bar counter (0, 1, 2, ...). The
    form position normally equals that counter; ``force_next_section()`` moves the form on
    (the next call plays the next section's first bar), after which ``FormPosition.bar_index``
    runs ahead of the counter by the bars skipped.
    """

    def __init__(self, form: SongForm, anchors: Anchors, walker: LatentWalker) -> None:
        if anchors.dim != walker.dim:
            raise ValueError(f"anchors have dim {anchors.dim} but the walker has {walker.dim}")
        self.form = form
        self.anchors = anchors
        self.walker = walker
        self.shift = 0
        """Form bar minus performance bar (grows with each forced section change)."""
        self._section_start: int | None = None   # form bar where the current section began
        self._last_form_bar: int | None = None
        self._skip_pending: str | None = None
        self._form_pending: SongForm | None = None

    @property
    def form_pending(self) -> SongForm | None:
        """The form chosen to take over at the next section boundary, if any."""
        return self._form_pending

    def z_for_bar(self, bar_index: int) -> tuple[np.ndarray, FormPosition, str]:
        """``(z, position, motion)`` for performance bar ``bar_index``; one call per bar."""
        if self._skip_pending and self._last_form_bar is not None:
            jump = (self.form.jump_to_next_section if self._skip_pending == "next"
                    else self.form.jump_to_previous_section)
            self.shift = jump(self._last_form_bar) - bar_index
        self._skip_pending = None
        form_bar = bar_index + self.shift
        if form_bar < 0:
            raise ValueError(f"bar {bar_index} is before the form's start (shift {self.shift}); "
                             "call z_for_bar with increasing bar indices")
        position = self.form.position(form_bar)
        switched = False
        if self._form_pending is not None and position.is_section_start:
            # a new section starts here: the chosen form takes over from its first section
            self.form, self._form_pending = self._form_pending, None
            self.shift, form_bar = -bar_index, 0
            position = self.form.position(0)
            switched = self._section_start is not None
        start = form_bar - position.bar_in_section
        if start != self._section_start or switched:
            target = self.anchors.anchor(position.section, position.pass_number)
            if self._section_start is None:
                self.walker.jump(target)
            else:
                self.walker.glide_to(target)
            self._section_start = start
        self._last_form_bar = form_bar
        z = self.walker.step()
        return z, position, self.walker.motion

    def force_next_section(self) -> None:
        """The next bar starts the next section (and glides to its anchor)."""
        self._skip_pending = "next"

    def force_previous_section(self) -> None:
        """The next bar starts the previous section again (and glides to its anchor)."""
        self._skip_pending = "previous"

    def choose_form(self, form: SongForm | None) -> None:
        """From the next section boundary on, play ``form`` from its first section (its
        pass 0; it then loops from its own ``loop_from``); None keeps the form playing.
        A forced section change makes the boundary the next bar."""
        self._form_pending = form

    def force_jump(self, z: np.ndarray | None = None) -> None:
        """Jump to a new region (``z`` or a prior sample) for the rest of this section.

        The next section still glides to its own anchor, so the form stays recognisable.
        """
        self.walker.jump(z)

    def state(self) -> dict[str, Any]:
        """JSON-able summary for the event log."""
        return {"shift": self.shift, "walker": self.walker.state()}
