"""The patch's ``[osc]`` section: where the engine listens for a tablet.

It lives outside :mod:`engine.live` so that reading a patch (which music, lyrics, voice and
the offline render all do) never loads the live engine; :mod:`engine.live.osc_control`
serves what these settings describe.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OscSettings"]


# ---- settings -------------------------------------------------------------------------
def shown(text: str, limit: int = 60) -> str:
    """``text`` quoted as in TOML, cut to about ``limit`` characters (a value from a file
    may be megabytes long; a message shows its start)."""
    return json.dumps(text if len(text) <= limit else text[:limit - 3] + "...",
                      ensure_ascii=False)


def _setting(default: Any = dataclasses.MISSING, help: str = "", *,
             range: tuple[float | None, float | None] | None = None) -> Any:
    """A field with the metadata :func:`engine.patch.setting` gives, so the patch reader
    and ``describe_schema`` read this section like any other (engine.patch imports this
    module, so this module cannot import it)."""
    return field(default=default, metadata={
        "help": help, "range": range, "unit": "", "identifier": False, "path": False,
        "missing_hint": "", "default_text": ""})


@dataclass(frozen=True, slots=True)
class OscSettings:
    """OSC control from a tablet (TouchOSC, Open Stage Control): where the engine listens."""

    host: str = _setting(
        "127.0.0.1", 'Address to listen on: "127.0.0.1" takes only this computer, '
        '"0.0.0.0" every network (then name the tablets in allow).')
    port: int = _setting(9000, "UDP port to listen on (the tablet's outgoing port); 0 picks a "
                         "free one.", range=(0, 65535))
    allow: tuple[str, ...] = _setting(
        (), 'IP addresses (or networks, e.g. "192.168.1.0/24") of the tablets that may play; '
        "empty allows every sender that reaches host.")
    feedback: bool = _setting(
        True, "Echo every control's value back to the tablets that have spoken, so their "
        "faders show the truth.")
    reply_port: int = _setting(
        0, "Port the tablets listen on for feedback (TouchOSC's incoming port); 0 answers "
        "the port each message came from.", range=(0, 65535))

    def problems(self) -> Iterator[tuple[str, str]]:
        """Rules across keys, as (key, what is wrong and how to fix it)."""
        if self.host != "localhost":
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                yield "host", (f'= {shown(self.host)} is not an IP address; use "0.0.0.0" for '
                               'every network or "127.0.0.1" for this computer only')
        for entry in self.allow:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                yield "allow", (f"has {shown(entry)}, which is not an IP address or network; "
                                'write e.g. "192.168.1.20" or "192.168.1.0/24"')
