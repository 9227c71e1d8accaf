"""What each control of the OSC table does to a running show: one handler per target.

:data:`ACTIONS` maps every target a tablet may send (the input controls of
:data:`~engine.live.osc_table.TABLE`, less the requests for the state, which the dispatcher
answers itself) to the function that applies it::

    ACTIONS["song.tempo"](show, command)   # -> extra fields for the control record

A handler runs on the show's loop, when the command lands (``now``, on the next ``beat``
or at the next ``bar``, as the table says); the table has already checked its values'
types and ranges. It returns extra fields for the event log's control record (or None),
or raises :class:`NotApplied` when the show cannot apply it (the record is still
written, with the reason, and the command is not counted as applied).
tests/live/test_osc_actions.py holds the table and this registry to one another: every
input target has a handler and every handler a control.

To add a control: a row in the table, a handler here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.live.osc_control import Command
from engine.live.osc_table import PARTS

if TYPE_CHECKING:
    from engine.live.show import Show

__all__ = ["ACTIONS", "Handler", "NotApplied"]

Handler = Callable[["Show", Command], "dict[str, Any] | None"]


class NotApplied(Exception):  # noqa: N818 - an outcome, not an error
    """The show did not apply the command: ``reason`` goes into the control record
    (empty: the show is not ready for it yet, e.g. no clock before the first bar)."""

    def __init__(self, reason: str = ""):
        self.reason = reason
        super().__init__(reason)


def _tempo(show: Show, command: Command) -> dict[str, Any]:
    """On the next bar line not yet stamped; proposed to a Link session there too."""
    clock = show.clock
    if clock is None:
        raise NotApplied()
    bpm = float(command.values[0])
    at_bar = max(show.bar_index + 1, clock.next_bar())
    clock.set_tempo(bpm, at_bar=at_bar)
    if show.link_lock is not None:  # proposed to the session on that bar line
        show.link_lock.propose_tempo(clock, bpm, at_bar)
    return {"at_bar": at_bar}


def _conductor(act: Callable[[Any, tuple[Any, ...]], None]) -> Handler:
    """A handler that acts on the show's conductor (none before the set starts)."""
    def handler(show: Show, command: Command) -> None:
        if show.conductor is not None:
            act(show.conductor, command.values)
    handler.__doc__ = act.__doc__
    return handler


def _form(show: Show, command: Command) -> None:
    """At the next section boundary the named form plays from its first section."""
    if show.conductor is None:
        return
    try:
        show.conductor.choose_form(str(command.values[0]))
    except KeyError as err:
        raise NotApplied(str(err.args[0])) from None


def _mute(part: str) -> Handler:
    def handler(show: Show, command: Command) -> None:
        show.mix.mute[part] = bool(command.values[0])
    return handler


def _level(part: str) -> Handler:
    def handler(show: Show, command: Command) -> None:
        show.mix.level[part] = float(command.values[0])
        show.send_volume(part)
    return handler


def _master(show: Show, command: Command) -> None:
    show.mix.master = float(command.values[0])
    if show.audio_engine is not None:
        show.audio_engine.set_master(show.mix.master)


def _lyrics(show: Show, command: Command) -> None:
    if show.generator is None:
        return
    text = str(command.values[0]) if command.values else ""
    show.generator.steer_lyrics(command.target, text)
    if command.target == "lyrics.theme":
        show.theme = text


def _voice_level(show: Show, command: Command) -> None:
    show.singing.level = float(command.values[0])


def _voice_mute(show: Show, command: Command) -> None:
    show.singing.mute = bool(command.values[0])


def _panic(show: Show, command: Command) -> None:
    show.panic()


ACTIONS: dict[str, Handler] = {
    "song.tempo": _tempo,
    "walk.step_size": _conductor(lambda c, v: c.set_walk(step_size=v[0])),
    "walk.temperature": _conductor(lambda c, v: c.set_walk(temperature=v[0])),
    "walk.wander": _conductor(lambda c, v: c.set_walk(wander=v[0])),
    "walk.freeze": _conductor(lambda c, v: c.freeze(bool(v[0]))),
    "walk.drift": _conductor(lambda c, v: c.drift()),
    "walk.glide": _conductor(lambda c, v: c.glide()),
    "walk.jump": _conductor(lambda c, v: c.jump()),
    "walk.xy": _conductor(lambda c, v: c.set_xy(v[0], v[1])),
    "section.next": _conductor(lambda c, v: c.next_section()),
    "section.previous": _conductor(lambda c, v: c.previous_section()),
    "form": _form,
    "lyrics.theme": _lyrics,
    "lyrics.renew": _lyrics,
    **{f"parts.{part}.mute": _mute(part) for part in PARTS},
    **{f"parts.{part}.level": _level(part) for part in PARTS},
    "voice.level": _voice_level,
    "voice.mute": _voice_mute,
    "master.level": _master,
    "panic": _panic,
}
