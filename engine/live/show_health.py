"""The show's health in one place: the running counts everyone shows, and the figures of
the whole set the show returns.

- :func:`live_counts` reads the counts that say whether the set is going well (underruns,
  late MIDI, bars replaced, phrases missed, MIDI ports lost or gone) from a running show.
  The tablet's ``status.health`` label (:meth:`LiveCounts.text`), the stage page and the
  dashboard all read them from here.
- :class:`ShowHealth` is what :meth:`~engine.live.show.Show.run` returns; the show counts
  bars, commands and lateness into it as it plays, and :func:`collect` adds each part's
  own figures (audio, MIDI, generation, OSC, voice, Link) on the way out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.live.show import Show

__all__ = ["LiveCounts", "ShowHealth", "collect", "live_counts"]

AUDIO_KEYS = ("path", "underruns", "callback_overruns", "callback_us_p99", "callback_us_max",
              "events_late", "errors")
OSC_SERVER_KEYS = ("received", "read_pauses", "kernel_dropped", "receiver_cpu_ms")


@dataclass
class ShowHealth:
    bars_played: int = 0
    ports_lost: int = 0
    lyric_lines: int = 0
    voice: dict[str, Any] = field(default_factory=dict)
    recording: dict[str, Any] = field(default_factory=dict)
    bars_fallback: int = 0
    bars_silent: int = 0
    push_late_ms_max: float = 0.0
    loop_lag_ms_max: float = 0.0  # the longest the show's loop was held, once bars play
    loop_lag_ms_p99: float = 0.0  # 99 of 100 looks at the loop found it held no longer
    commands_applied: int = 0
    commands_coalesced: int = 0  # replaced by a later one for the same target before landing
    last_section: str = ""
    nice: int = 0  # the show threads' nice value (SHOW_NICENESS when the system allows)
    audio: dict[str, Any] = field(default_factory=dict)
    midi: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    osc: dict[str, Any] = field(default_factory=dict)
    link: dict[str, Any] = field(default_factory=dict)
    web: dict[str, Any] = field(default_factory=dict)  # the stage page's counts, when on

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class LiveCounts:
    """How the set is going, now."""

    underruns: int
    late: int
    fallbacks: int
    ports_lost: int
    ports_gone: tuple[str, ...]
    phrases_missed: int
    sung: bool  # a voice worker runs (its misses are shown)

    @property
    def ok(self) -> bool:
        return not (self.underruns or self.late or self.fallbacks or self.phrases_missed
                    or self.ports_gone)

    def text(self) -> str:
        """The tablet's ``status.health`` line."""
        return (f"fallback {self.fallbacks} late {self.late} underruns {self.underruns}"
                + (f" vocal missed {self.phrases_missed}" if self.sung else "")
                + (f" midi gone {','.join(self.ports_gone)}" if self.ports_gone else ""))


def live_counts(show: Show) -> LiveCounts:
    """The counts of a running (or stopped) show, read without changing anything."""
    vocals = show.singing.vocals
    return LiveCounts(
        underruns=int(show.audio_engine.stats().underruns) if show.audio_engine is not None
        else 0,
        late=int(show.sender.stats().get("late", 0)) if show.sender is not None else 0,
        fallbacks=show.health.bars_fallback, ports_lost=show.health.ports_lost,
        ports_gone=tuple(sorted(show.ports_gone)),
        phrases_missed=vocals.health.missed if vocals is not None else 0,
        sung=vocals is not None)


def collect(show: Show) -> None:
    """Each part's own figures into ``show.health`` (on the way out)."""
    health = show.health
    if show.audio_engine is not None:
        stats = show.audio_engine.stats().as_dict()
        health.audio = {k: stats[k] for k in AUDIO_KEYS}
    if show.sender is not None:
        stats = show.sender.stats()
        health.midi = {"sent": stats["sent"], "late": stats["late"],
                       "dropped": stats["dropped"], "lost": stats["lost"],
                       "reopens": stats["reopens"]} | stats["lateness"]
    if show.generator is not None:
        health.generation = show.generator.health.to_dict()
    if show.dispatcher is not None:
        health.osc = dict(show.dispatcher.stats)
        if show.osc_server is not None:  # datagrams read, reading paused, kernel drops
            health.osc |= {k: v for k, v in show.osc_server.stats.items()
                           if k in OSC_SERVER_KEYS}
    health.voice = show.singing.health()
    if show.link_lock is not None:
        health.link = show.link_lock.stats()
