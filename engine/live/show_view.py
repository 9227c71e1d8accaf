"""A read-only view of a running show, for what draws it (the terminal dashboard).

:class:`ShowView` answers what a page shows (where the song is, the walk, the mix, the
voice, the health figures) from any thread, without changing the show and without its
reader knowing the show's parts: each answer is a value (numbers, strings, tuples, the
frozen patch, the bar's plan), read at that moment. Steering goes the other way, through
the show's command path (:meth:`~engine.live.show.Show.on_command`) on the show's loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.live.osc_table import PARTS
from engine.live.show_health import LiveCounts, live_counts
from engine.music.song_form import FormPosition
from engine.patch import Patch

__all__ = ["PartView", "ShowView"]

PartView = tuple[str, str, float, bool]  # (part, where it plays, level, muted)


class ShowView:
    """What can be read of ``show`` (a :class:`~engine.live.show.Show`)."""

    __slots__ = ("_show",)

    def __init__(self, show: Any) -> None:
        self._show = show

    # ---- the song ---------------------------------------------------------------------
    @property
    def patch(self) -> Patch:
        return self._show.patch

    @property
    def bar_index(self) -> int:
        """The bar last pushed (-1 before the first)."""
        return int(self._show.bar_index)

    @property
    def started(self) -> bool:
        """The clock runs (its first beat may still be ahead)."""
        return self._show.clock is not None

    def now_beat(self) -> float | None:
        """The clock's beat now (negative before bar 0), None before it runs."""
        clock = self._show.clock
        return None if clock is None else clock.now_beat()

    @property
    def tempo(self) -> float:
        clock = self._show.clock
        return clock.bpm if clock is not None else self._show.patch.song.tempo

    def ns_to_beat(self, t_ns: int) -> float:
        """The clock's beat at monotonic ``t_ns`` (only once :attr:`started`)."""
        return self._show.clock.ns_to_beat(t_ns)

    def bpm_at(self, beat: float) -> float:
        """The tempo map's tempo at ``beat`` (only once :attr:`started`)."""
        return self._show.clock.bpm_at(beat)

    def position(self) -> FormPosition | None:
        """The playing bar's form position: the plan's when the show keeps it, else worked
        out from the form (right unless a section change is still in the bars composed
        ahead)."""
        show = self._show
        plan = getattr(show, "plan", None)
        if plan is not None:
            return plan.position
        if show.conductor is None or show.bar_index < 0:
            return None
        return show.conductor.position_of(show.bar_index)

    @property
    def section(self) -> str:
        return self._show.section

    @property
    def lyric(self) -> str:
        return self._show.lyric

    @property
    def theme(self) -> str:
        return self._show.theme

    def sync(self) -> str:
        """Where the tempo comes from."""
        follower, link = self._show.follower, self._show.link
        if follower is not None:
            bpm = follower.bpm
            name = follower.device_name or follower.name or "MIDI clock"
            return f"MIDI clock in {name}" + (f" {bpm:.1f}" if bpm else " (waiting)")
        if link is not None:
            return "Ableton Link"
        return "internal clock"

    # ---- the walk ---------------------------------------------------------------------
    def latent(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The playing bar's z and anchor: the plan's when the show keeps it, else the
        walk's latest point (composed a bar or more ahead of the music)."""
        plan = getattr(self._show, "plan", None)
        if plan is not None:
            return plan.z, plan.anchor
        conductor = self._show.conductor
        if conductor is None:
            return None, None
        return conductor.latest_point()

    @property
    def frozen(self) -> bool:
        conductor = self._show.conductor
        return conductor is not None and conductor.frozen

    def freeze_waiting(self) -> bool | None:
        """The last freeze still waiting to land (on or off), None when none waits."""
        pending = [c for c in list(self._show.pending) if c.target == "walk.freeze"]
        return bool(pending[-1].values[0]) if pending else None

    # ---- the mix ----------------------------------------------------------------------
    def parts(self) -> tuple[PartView, ...]:
        show = self._show
        rows = []
        for part in PARTS:
            port = show.part_ports.get(part)
            where = f"MIDI {port}" if port else "synth" if show.use_audio else "-"
            rows.append((part, where, float(show.mix.level.get(part, 1.0)),
                         bool(show.mix.mute.get(part, False))))
        return tuple(rows)

    @property
    def part_ports(self) -> tuple[str, ...]:
        """The MIDI ports the parts play on."""
        return tuple(sorted(set(self._show.part_ports.values())))

    @property
    def has_audio(self) -> bool:
        """The built-in synth plays (its audio output is open)."""
        return self._show.audio_engine is not None

    @property
    def master(self) -> float:
        return float(self._show.mix.master)

    def voice(self) -> str:
        """The singer, its level and mute, or "off"."""
        singing = self._show.singing
        if singing.vocals is None:
            return "off"
        return f"{singing.vocals.info.get('singer', '?')} {singing.level:.2f}" + (
            " MUTE" if singing.mute else "")

    # ---- health -----------------------------------------------------------------------
    def counts(self) -> LiveCounts:
        return live_counts(self._show)

    def lookahead_bars(self) -> int:
        """Bars composed ahead of the music (more when a voice sings them)."""
        patch = self._show.patch
        lookahead = patch.live.lookahead_bars
        if self._show.singing.vocals is not None:
            lookahead = max(lookahead, patch.lyrics.phrase_bars + 1)
        return lookahead

    def generation(self) -> tuple[float, int] | None:
        """The last bar's composing time (s) and the worker's restarts, once it runs."""
        generator = self._show.generator
        if generator is None:
            return None
        return generator.health.last_seconds, generator.health.restarts

    def vocal(self) -> tuple[tuple[float, ...], int, int, int] | None:
        """(render margins in ms, sung, missed, failed), when a voice sings."""
        vocals = self._show.singing.vocals
        if vocals is None:
            return None
        health = vocals.health
        return tuple(health.margins_ms), health.sung, health.missed, health.failed

    def midi_stats(self) -> dict[str, Any] | None:
        sender = self._show.sender
        return None if sender is None else sender.stats()

    def osc_stats(self) -> dict[str, int] | None:
        dispatcher = self._show.dispatcher
        return None if dispatcher is None else dict(dispatcher.stats)
