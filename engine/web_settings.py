"""The ``[web]`` patch section: where the stage page listens, who may open it, its PIN.

The allow-list follows the ``[osc]`` rules exactly (the same checks run on it); beyond
those, a page that listens beyond this computer (any host but a loopback address) needs a
``pin``: whoever is on the venue's Wi-Fi could otherwise steer the set.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.osc_settings import OscSettings, shown

MIN_PIN = 4
MAX_PIN = 64


def _setting(default: Any, help: str, *,
             range: tuple[float | None, float | None] | None = None) -> Any:
    """A field with the metadata :func:`engine.patch.setting` gives (engine.patch imports
    this module, so this module cannot import it)."""
    return field(default=default, metadata={
        "help": help, "range": range, "unit": "", "identifier": False, "path": False,
        "missing_hint": "", "default_text": ""})


def is_loopback(host: str) -> bool:
    """Whether ``host`` listens on this computer only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class WebSettings:
    """The stage page: steer and watch the set from a browser (`encore live --web`)."""

    enabled: bool = _setting(
        False, "Serve the stage page while playing live (`encore live --web` turns it on too).")
    host: str = _setting(
        "127.0.0.1", 'Address to listen on: "127.0.0.1" serves this computer only, '
        '"0.0.0.0" every network (then set pin, and name the phones in allow).')
    port: int = _setting(8080, "TCP port of the page (http://HOST:PORT/); 0 picks a free one.",
                         range=(0, 65535))
    allow: tuple[str, ...] = _setting(
        (), 'IP addresses (or networks, e.g. "192.168.1.0/24") of the phones and tablets that '
        "may open the page; empty allows every one that reaches host. Others get nothing.")
    pin: str = _setting(
        "", f"PIN or token the page asks for before it shows or steers anything ({MIN_PIN} to "
        f"{MAX_PIN} characters); required when host is beyond this computer.")

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def problems(self) -> Iterator[tuple[str, str]]:
        """Rules across keys, as (key, what is wrong and how to fix it)."""
        # the very rules of [osc] for host and allow
        yield from OscSettings(host=self.host, allow=self.allow).problems()
        if self.pin and not (MIN_PIN <= len(self.pin) <= MAX_PIN and self.pin.isprintable()
                             and not any(ch.isspace() for ch in self.pin)):
            yield "pin", (f"must be {MIN_PIN} to {MAX_PIN} printable characters without "
                          'spaces; write e.g. pin = "4711"')
        elif not self.pin and not self.loopback:
            yield "pin", (f"is empty but host = {shown(self.host)} listens beyond this computer: "
                          "anyone on the network could steer the set; set a PIN, e.g. "
                          'pin = "4711", or host = "127.0.0.1"')

    def replace(self, **changes: Any) -> WebSettings:
        return dataclasses.replace(self, **changes)
