"""What the stage page shows, read from a running :class:`~engine.live.show.Show`.

Pure functions and one small keeper of history (:class:`StageHistory`): no web library,
no sockets, so tests build frames from a show without a browser. Every frame is a JSON
object with a ``type``; the page replaces what it shows with each one (a frame carries
the whole of its part of the picture, so a client that missed frames loses nothing):

- ``hello``: once, after the page is let in: the song's title, the parts and the
  controls of the OSC table (address, types, ranges, widget, when a change lands, help);
- ``state``: bar and beat, tempo, section and form, the lyric line sung now and the
  next, every control's value under its address, the commands still waiting to land,
  the x/y pad's point and the walk's trail in pad coordinates, health;
- ``roll``: the piano roll: the bars just played and those already composed ahead.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from engine.live.osc_table import PARTS, TABLE, Control
from engine.live.show_health import live_counts

TRAIL_BARS = 32     # bars of the walk's trail on the x/y pad
ROLL_PLAYED = 8     # bars already played in the piano roll
LYRIC_LINES = 8     # lyric lines kept for "now" and "next"


def hello_frame(title: str, table: Iterable[Control] = TABLE) -> dict[str, Any]:
    """The page's controls, generated from the OSC address table."""
    controls = [{
        "address": c.address, "types": c.types,
        "ranges": [list(r) if r is not None else None for r in c.ranges],
        "widget": c.widget, "lands": c.lands, "target": c.target, "help": c.help,
        "input": c.is_input,
    } for c in table]
    return {"type": "hello", "title": title, "parts": list(PARTS), "controls": controls}


def values_by_address(state: Mapping[str, Any],
                      table: Iterable[Control] = TABLE) -> dict[str, Any]:
    """The show's state (targets -> values) under each control's address, as JSON values."""
    out: dict[str, Any] = {}
    for control in table:
        if not control.has_state or control.target not in state:
            continue
        value = state[control.target]
        if len(control.types) > 1:
            out[control.address] = [_json_number(v) for v in value]
        elif control.types == "s":
            out[control.address] = str(value)
        else:
            out[control.address] = _json_number(value)
    return out


def _json_number(value: Any) -> float | int | None:
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


class StageHistory:
    """What the page shows that the show does not keep: the bars just played, the walk's
    trail and the lyric lines. Fed on the show's loop (a few appends a bar)."""

    def __init__(self) -> None:
        self.played: collections.deque[dict[str, Any]] = collections.deque(maxlen=ROLL_PLAYED)
        self.trail: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=TRAIL_BARS)
        self.lyrics: collections.deque[dict[str, Any]] = collections.deque(maxlen=LYRIC_LINES)

    def on_bar(self, show: Any, plan: Any, bar: Any) -> None:
        if bar is not None:
            self.played.append(roll_bar(bar, plan.position.section, played=True,
                                        muted=dict(show.mix.mute)))
        conductor = show.conductor
        if conductor is not None:
            self.trail.append(pad_point(plan.z, plan.anchor, conductor.xy_basis))

    def on_lyric(self, lyric: Mapping[str, Any]) -> None:
        beats = [(float(n[1]), float(n[1]) + float(n[2]))
                 for s in lyric.get("syllables", ()) for n in s.get("notes", ())]
        if not beats:
            return
        self.lyrics.append({"bar": int(lyric.get("bar", 0)), "text": str(lyric.get("text", "")),
                            "start": min(b[0] for b in beats), "end": max(b[1] for b in beats)})

    def lyric_now_next(self, beat: float) -> tuple[str, str]:
        """The line being sung at ``beat`` (or the last one sung, until the next starts),
        and the next line written."""
        lines = sorted(self.lyrics, key=lambda line: line["start"])
        now = next((line for line in reversed(lines) if line["start"] <= beat), None)
        upcoming = next((line for line in lines if line["start"] > beat), None)
        return (now["text"] if now else "", upcoming["text"] if upcoming else "")


def pad_point(z: np.ndarray, anchor: np.ndarray, basis: np.ndarray) -> tuple[float, float]:
    """A bar's point in the x/y pad's coordinates: its offset from the section's anchor
    along the pad's two latent directions, scaled as the pad tilts z (0.5, 0.5 is the
    anchor; the pad's full travel is 0..1), clipped to the pad."""
    from engine.song.conductor import XY_REACH

    offset = (np.asarray(z, np.float64) - np.asarray(anchor, np.float64)) @ basis.T  # (2,)
    scale = 2.0 * XY_REACH * math.sqrt(len(z))
    x, y = (0.5 + offset / scale).tolist()
    return (round(min(max(x, 0.0), 1.0), 4), round(min(max(y, 0.0), 1.0), 4))


def roll_bar(bar: Any, section: str, *, played: bool,
             muted: Mapping[str, bool] | None = None) -> dict[str, Any]:
    """One bar for the piano roll: ``notes`` per part as [pitch, start, end, velocity] on
    the bar's 16-step grid; ``muted`` lists the parts that did not sound."""
    notes = {part: [[n.pitch, n.start, n.end, n.velocity] for n in bar.parts.get(part, ())]
             for part in PARTS}
    return {"index": int(bar.index), "section": section, "played": played,
            "muted": [p for p in PARTS if muted and muted.get(p)], "notes": notes}


def ahead_done(show: Any) -> list[tuple[Any, Any]]:
    """(plan, bar) of the bars composed and waiting to play: the next bar and the show's
    look-ahead queue, where composing is done."""
    queued = list(getattr(show, "ahead", ()) or ())
    next_up = getattr(show, "next_up", None)
    out = []
    for plan, task in ([next_up] if next_up is not None else []) + queued:
        if plan.index <= show.bar_index or not task.done() or task.cancelled() \
                or task.exception() is not None:
            continue
        bar, _fresh = task.result()
        if bar is not None:
            out.append((plan, bar))
    return out


def composed_ahead(show: Any) -> list[dict[str, Any]]:
    """The piano roll's bars still to play."""
    return [roll_bar(bar, plan.position.section, played=False)
            for plan, bar in ahead_done(show)]


def roll_frame(show: Any, history: StageHistory) -> dict[str, Any]:
    bars = list(history.played) + composed_ahead(show)
    return {"type": "roll", "now": int(show.bar_index), "bars": bars}


def state_frame(show: Any, history: StageHistory, *, clients: int = 0,
                state: Mapping[str, Any] | None = None,
                figures: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The show as the page shows it now. ``state`` (``show.state()``) and ``figures``
    (:func:`health`) may be passed in from a cache: they read the MIDI sender's and the
    audio engine's statistics, which cost percentiles over their rings."""
    patch = show.patch
    clock = show.clock
    beat_now = clock.now_beat() if clock is not None else -1.0
    started = clock is not None and beat_now >= 0 and show.bar_index >= 0
    bar = beat = 0
    if started:
        bar, beat = math.floor(beat_now / 4) + 1, math.floor(beat_now % 4) + 1
    if state is None:
        state = show.state()
    plan = show.plan
    position = plan.position if plan is not None else None
    conductor = show.conductor
    form = [[s.name, s.bars] for s in conductor.playing_form(plan).sections] \
        if conductor is not None else [[name, patch.form.lengths[name]]
                                       for name in patch.form.sections]
    lyric_now, lyric_next = history.lyric_now_next(beat_now)
    return {
        "type": "state",
        "started": started, "bar": bar, "beat": beat,
        "position": round(max(beat_now, 0.0), 4),
        "bpm": round(clock.bpm if clock is not None else patch.song.tempo, 3),
        "sync": _sync(show),
        "section": position.section if position else show.section,
        "section_index": position.section_index if position else -1,
        "bar_in_section": position.bar_in_section + 1 if position else 0,
        "section_bars": position.section_bars if position else 0,
        "pass": position.pass_number + 1 if position else 0,
        "next_section": position.next_section if position else "",
        "form": form,
        "lyric_now": lyric_now, "lyric_next": lyric_next, "theme": show.theme,
        "values": values_by_address(state),
        "pending": [{"address": c.address, "values": [_plain(v) for v in c.values],
                     "lands": c.lands} for c in list(show.pending)],
        "xy": list(conductor.xy) if conductor is not None else [0.5, 0.5],
        "trail": [list(p) for p in history.trail],
        "health": dict(figures) if figures is not None else health(show, state),
        "clients": clients,
    }


def _plain(value: Any) -> Any:
    return value if isinstance(value, str) else _json_number(value)


def _sync(show: Any) -> str:
    if getattr(show, "follower", None) is not None:
        return "MIDI clock in"
    if getattr(show, "link", None) is not None:
        return "Ableton Link"
    return "internal clock"


def health(show: Any, state: Mapping[str, Any]) -> dict[str, Any]:
    """Underruns, late MIDI events, bars replaced, phrases missed, ports lost."""
    counts = live_counts(show)
    figures: dict[str, Any] = {
        "underruns": counts.underruns, "late": counts.late, "fallbacks": counts.fallbacks,
        "ports_lost": counts.ports_lost, "ports_gone": list(counts.ports_gone),
        "phrases_missed": counts.phrases_missed, "ok": counts.ok,
        "text": str(state.get("status.health", "")),
    }
    return figures
