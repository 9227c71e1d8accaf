"""The MIDI port watch: once a bar, is every hardware output's device still there?

A device that went away raises nothing when sent to (JACK keeps our port), so the show
looks, once a bar, with MIDI clients of its own (:meth:`PortWatch.open` joins them to the
graph before the first note: start-up work, not work for the middle of bar 0). A missing
output is marked failed in the MIDI sender (its messages counted as lost) and reopened by
name, with its sounding notes released, when it comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["PortWatch"]


class PortWatch:
    """Watches the hardware outputs among ``ports`` (name -> opened port)."""

    def __init__(self, ports: dict[str, Any]) -> None:
        self.ports = ports
        self.gone: set[str] = set()  # outputs whose device is away now
        self._probes: dict[str, Any] = {}  # MIDI API -> a client that lists the ports

    def _hardware(self) -> Iterator[tuple[str, Any]]:
        from engine.live.midi_ports import RtMidiPort

        for name, port in self.ports.items():
            if isinstance(port, RtMidiPort) and not port.virtual:
                yield name, port

    def open(self) -> None:
        """Open the watch's own MIDI clients (before the first note)."""
        from engine.live.midi_ports import rtmidi_client

        for _, port in self._hardware():
            if port.api not in self._probes:
                try:
                    self._probes[port.api] = rtmidi_client(port.api, "encore-watch")
                except Exception as err:  # noqa: BLE001 - tried again at the first bar
                    log.debug("MIDI port watch: %s", err)

    def check(self, sender: Any) -> list[tuple[str, str]]:
        """Look once; returns the changes, ``(name, "gone" or "back")``. A port gone is
        marked missing in ``sender`` (which reopens it when it is back)."""
        from engine.live.midi_ports import rtmidi_client

        changes = []
        for name, port in self._hardware():
            try:
                probe = self._probes.get(port.api)
                if probe is None:
                    probe = self._probes[port.api] = rtmidi_client(port.api, "encore-watch")
                wanted = name.casefold()
                present = any(wanted in other.casefold() for other in probe.get_ports())
            except Exception as err:  # noqa: BLE001 - the watch must never stop the show
                log.debug("MIDI port watch: %s", err)
                continue
            if not present and name not in self.gone:
                self.gone.add(name)
                sender.port_missing(name)
                log.warning("MIDI output %r went away; reopening it when it is back", name)
                changes.append((name, "gone"))
            elif present and name in self.gone:
                self.gone.discard(name)
                changes.append((name, "back"))
        return changes

    def close(self) -> None:
        self._probes.clear()
