"""MIDI output ports: named backends behind one small base class, mido-style.

A subclass implements only ``_open``, ``_send`` and ``_close``. :class:`OutputPort` owns
the rest: a lock around every call into the device, a :class:`NoteTable` of what is
sounding, an idempotent :meth:`~OutputPort.close` that silences first (note-offs for the
tracked notes, then sustain off CC64 0, all notes off CC123 and all sound off CC120 on
every channel the port has used), and :meth:`~OutputPort.reopen` by name.

Backends, loaded on first use (:func:`open_output`, :func:`list_outputs`):

- ``jack``: python-rtmidi on JACK; ``alsa``: on the ALSA sequencer (Linux);
  ``coremidi`` (macOS) and ``winmm`` (Windows): the platform's own API;
- ``auto``: the platform's API; on Linux JACK when a JACK server runs, then ALSA;
- ``virtual``: a port other programs connect to, named ``<client>:<name>`` (e.g.
  ``encore:melody``), on JACK or ALSA or CoreMIDI (Windows has none: use loopMIDI);
- ``memory``: :class:`MemoryPort`, which records ``(t_ns, bytes)`` for tests and
  ``--dry-run``.

Hardware ports are found by a case-insensitive part of their name, never by number:
numbers change when a device is replugged. Device trouble raises :class:`MidiPortError`
(an ``OSError``) whose message says what to do about it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

BACKENDS = ("auto", "jack", "alsa", "coremidi", "winmm", "virtual", "memory")
CHANNELS = 16

NOTE_OFF = 0x80
NOTE_ON = 0x90
CONTROL_CHANGE = 0xB0
CC_SUSTAIN = 64
CC_ALL_SOUND_OFF = 120
CC_ALL_NOTES_OFF = 123


class MidiPortError(OSError):
    """A MIDI device could not be opened or written to."""


class BackendUnavailableError(MidiPortError):
    """The MIDI system itself is missing (no JACK server, no ALSA sequencer, ...)."""


class PortNotFoundError(MidiPortError):
    """No output port matches the name asked for."""


class PortClosedError(MidiPortError):
    """A message was sent to a closed port."""


# -- what is sounding ----------------------------------------------------------------------


def is_note_on(message: bytes) -> bool:
    """A note-on with a velocity (velocity 0 is a note-off)."""
    return len(message) > 2 and message[0] & 0xF0 == NOTE_ON and message[2] > 0


def silence_messages(channel: int) -> tuple[bytes, bytes, bytes]:
    """Sustain off, all notes off, all sound off: what a channel gets on close or panic."""
    status = CONTROL_CHANGE | channel
    return (bytes((status, CC_SUSTAIN, 0)), bytes((status, CC_ALL_NOTES_OFF, 0)),
            bytes((status, CC_ALL_SOUND_OFF, 0)))


class NoteTable:
    """Sounding notes per ``(port, channel, pitch)`` with counts, and the channels used.

    Fed every message that went out (:meth:`update`); a note started twice needs two
    note-offs, so it counts. Not locked: each :class:`OutputPort` updates its own table
    under its own lock.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int, int], int] = {}
        self._channels: dict[str, int] = {}  # port -> bit mask of the channels used

    def update(self, port: str, message: bytes) -> None:
        status = message[0]
        if not 0x80 <= status < 0xF0:  # system messages use no channel
            return
        channel = status & 0x0F
        self._channels[port] = self._channels.get(port, 0) | (1 << channel)
        kind = status & 0xF0
        if kind == NOTE_ON and len(message) > 2 and message[2] > 0:
            self.note_on(port, channel, message[1])
        elif kind == NOTE_OFF or kind == NOTE_ON:
            self.note_off(port, channel, message[1])
        elif kind == CONTROL_CHANGE and len(message) > 1 and message[1] in (
                CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF):
            for key in [k for k in self._counts if k[0] == port and k[1] == channel]:
                del self._counts[key]

    def note_on(self, port: str, channel: int, pitch: int) -> None:
        key = (port, channel, pitch)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._channels[port] = self._channels.get(port, 0) | (1 << channel)

    def note_off(self, port: str, channel: int, pitch: int) -> None:
        key = (port, channel, pitch)
        count = self._counts.get(key, 0)
        if count > 1:
            self._counts[key] = count - 1
        elif count:
            del self._counts[key]

    def sounding(self, port: str | None = None) -> dict[tuple[str, int, int], int]:
        """``{(port, channel, pitch): count}`` of the notes still on."""
        return {k: n for k, n in self._counts.items() if port is None or k[0] == port}

    def channels(self, port: str) -> list[int]:
        mask = self._channels.get(port, 0)
        return [c for c in range(CHANNELS) if mask >> c & 1]

    def ports(self) -> list[str]:
        return list(self._channels)

    def all_off_messages(self, port: str | None = None) -> list[tuple[str, bytes]]:
        """``(port, bytes)`` to silence everything: a note-off per sounding note (as many
        as it was started), then CC64 0, CC123 and CC120 on every channel used."""
        out: list[tuple[str, bytes]] = []
        for (p, channel, pitch), count in sorted(self._counts.items()):
            if port is None or p == port:
                out.extend([(p, bytes((NOTE_OFF | channel, pitch, 0)))] * count)
        for p in ([port] if port is not None else self.ports()):
            for channel in self.channels(p):
                out.extend((p, m) for m in silence_messages(channel))
        return out

    def clear(self, port: str | None = None) -> None:
        """Forget the sounding notes and the channels used (of ``port``): after silencing."""
        if port is None:
            self._counts.clear()
            self._channels.clear()
        else:
            for key in [k for k in self._counts if k[0] == port]:
                del self._counts[key]
            self._channels.pop(port, None)

    def merge(self, other: NoteTable) -> None:
        for key, count in other._counts.items():
            self._counts[key] = self._counts.get(key, 0) + count
        for port, mask in other._channels.items():
            self._channels[port] = self._channels.get(port, 0) | mask

    def __len__(self) -> int:
        return sum(self._counts.values())

    def __contains__(self, key: object) -> bool:
        return key in self._counts

    def __repr__(self) -> str:
        return f"NoteTable({len(self)} sounding on {len(self._channels)} port(s))"


def as_message(message: Any) -> bytes:
    """Bytes, a bytearray, a list of ints or a mido.Message, as checked ``bytes``."""
    if type(message) is bytes and message and message[0] >= 0x80:  # the sender's path
        return message
    if isinstance(message, (bytes, bytearray, memoryview)):
        data = bytes(message)
    elif isinstance(message, (list, tuple)):
        if not all(isinstance(b, int) and 0 <= b <= 255 for b in message):
            raise ValueError(f"MIDI message bytes must be ints 0..255, got {message!r}")
        data = bytes(message)
    elif hasattr(message, "bytes"):  # a mido.Message
        data = bytes(message.bytes())
    else:
        raise TypeError(f"a MIDI message must be bytes, got {type(message).__name__}")
    if not data or data[0] < 0x80:
        raise ValueError(f"a MIDI message starts with a status byte (>= 0x80), got {data!r}")
    return data


# -- the base class ------------------------------------------------------------------------


class OutputPort:
    """A MIDI output. Subclasses implement ``_open``, ``_send`` and ``_close`` only.

    Thread-safe: every device call holds the port's lock. It is an ``RLock`` so that a
    signal handler that interrupts the thread holding it (Python runs handlers between
    bytecodes, so the device call itself has finished or not begun) can still silence the
    port: at worst the interrupted thread then records a note already silenced, which
    costs one extra note-off later.
    """

    backend = "base"

    def __init__(self, name: str, *, latency_ms: float = 0.0) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a port needs a non-empty name, got {name!r}")
        self.name = name
        self.latency_ms = float(latency_ms)
        self.device_name = name  # the full name of what was opened, set by _open
        self.reopens = 0
        self._lock = threading.RLock()
        self._notes = NoteTable()
        self._is_open = False
        self._open()
        self._is_open = True

    # -- what subclasses implement ----

    def _open(self) -> None:
        raise NotImplementedError

    def _send(self, message: bytes) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # -- the public API ----

    @property
    def is_open(self) -> bool:
        return self._is_open

    def send(self, message: bytes | bytearray | Iterable[int]) -> None:
        """Send one MIDI message now; raises :class:`MidiPortError` if the device fails."""
        data = as_message(message)
        with self._lock:
            if not self._is_open:
                raise PortClosedError(f"MIDI port {self.name!r} is closed; reopen() it first")
            self._send(data)
            self._notes.update(self.name, data)

    def silence(self) -> int:
        """Note-offs for every tracked note, then CC64 0, CC123, CC120 on every channel used.

        Tries every message even when some fail, then raises the first failure and keeps
        the notes, so that :meth:`reopen` silences them. Returns how many messages went out.
        """
        with self._lock:
            if not self._is_open:
                return 0
            sent, error = 0, None
            for _, message in self._notes.all_off_messages(self.name):
                try:
                    self._send(message)
                    sent += 1
                except Exception as exc:  # a vanished device: keep trying the rest
                    error = error or exc
            if error is not None:
                raise _as_port_error(error, self)
            self._notes.clear(self.name)
            return sent

    def sounding(self) -> dict[tuple[str, int, int], int]:
        with self._lock:
            return self._notes.sounding()

    def note_table(self) -> NoteTable:
        """A copy of this port's note table."""
        table = NoteTable()
        with self._lock:
            table.merge(self._notes)
        return table

    def close(self) -> None:
        """Silence the port, then close it. Idempotent; never raises for a gone device."""
        with self._lock:
            if not self._is_open:
                return
            try:
                self.silence()
            except OSError as exc:
                log.warning("MIDI port %r: could not silence it on close: %s", self.name, exc)
            self._is_open = False
            try:
                self._close()
            except Exception as exc:
                log.warning("MIDI port %r: error while closing: %s", self.name, exc)

    def reopen(self) -> None:
        """Close what is left of the device and open it again by name (not by number).

        Notes that were sounding when the device went away get their note-offs and the
        channels their all-off messages, in case the device kept them.
        """
        with self._lock:
            if self._is_open:
                self._is_open = False
                try:
                    self._close()
                except Exception as exc:
                    log.debug("MIDI port %r: error while closing before reopen: %s",
                              self.name, exc)
            self._open()
            self._is_open = True
            self.reopens += 1
            try:
                self.silence()
            except OSError as exc:
                log.warning("MIDI port %r: reopened but could not silence it: %s",
                            self.name, exc)

    def __enter__(self) -> OutputPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to tell
            pass

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"<{type(self).__name__} {self.name!r} ({self.backend}, {state})>"


def _as_port_error(exc: BaseException, port: OutputPort) -> MidiPortError:
    if isinstance(exc, MidiPortError):
        return exc
    error = MidiPortError(f"MIDI port {port.name!r} ({port.device_name}) failed: {exc}; "
                          "check the cable or the synth, it will be reopened by name")
    error.__cause__ = exc
    return error


# -- the in-memory backend -----------------------------------------------------------------


class MemoryPort(OutputPort):
    """Records ``(t_ns, bytes)`` for every message: tests and ``--dry-run``.

    :meth:`unplug` makes it behave like a device that went away (sends and opens raise
    :class:`MidiPortError`) until :meth:`plug` brings it back.
    """

    backend = "memory"

    def __init__(self, name: str = "memory", *, latency_ms: float = 0.0,
                 now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.messages: list[tuple[int, bytes]] = []
        self.now_ns = now_ns
        self.plugged = True
        super().__init__(name, latency_ms=latency_ms)

    def _open(self) -> None:
        if not self.plugged:
            raise PortNotFoundError(f"memory port {self.name!r} is unplugged; plug() it back")

    def _send(self, message: bytes) -> None:
        if not self.plugged:
            raise MidiPortError(f"memory port {self.name!r} is unplugged")
        self.messages.append((self.now_ns(), message))

    def _close(self) -> None:
        pass

    def unplug(self) -> None:
        self.plugged = False

    def plug(self) -> None:
        self.plugged = True

    def sent(self) -> list[bytes]:
        """The bytes of every message so far, without times."""
        return [m for _, m in self.messages]


# -- python-rtmidi backends ----------------------------------------------------------------

API_NAMES = {"jack": "API_UNIX_JACK", "alsa": "API_LINUX_ALSA",
              "coremidi": "API_MACOSX_CORE", "winmm": "API_WINDOWS_MM"}
API_LABELS = {"jack": "JACK", "alsa": "ALSA", "coremidi": "CoreMIDI", "winmm": "Windows MM"}


def rtmidi_module() -> Any:
    try:
        import rtmidi
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise BackendUnavailableError(
            "python-rtmidi is not installed: pip install python-rtmidi, "
            "or use the 'memory' backend for a dry run") from exc
    return rtmidi


def unavailable(api: str, detail: object) -> BackendUnavailableError:
    hints = {
        "jack": "start a JACK server first (e.g. `jackd -d alsa`, or `jackd -d dummy -r 48000 "
                "-p 256` on a machine without a sound card), or choose backend 'alsa'",
        "alsa": "this machine has no ALSA sequencer (/dev/snd/seq): load the snd-seq kernel "
                "module, or use backend 'jack' with a running JACK server",
        "coremidi": "CoreMIDI is only on macOS",
        "winmm": "Windows MM is only on Windows",
    }
    return BackendUnavailableError(
        f"{API_LABELS[api]} MIDI is not available ({detail}): {hints[api]}; "
        "backend 'memory' plays nowhere, for a dry run")


def rtmidi_client(api: str, client_name: str, *, direction: str = "out") -> Any:
    """A python-rtmidi ``MidiOut`` (or ``MidiIn`` for ``direction="in"``) on ``api``; a
    :class:`BackendUnavailableError` saying how to get that API when it cannot be had."""
    rtmidi = rtmidi_module()
    api_id = getattr(rtmidi, API_NAMES[api])
    if api_id not in rtmidi.get_compiled_api():
        raise unavailable(api, "python-rtmidi was built without it")
    kind = rtmidi.MidiIn if direction == "in" else rtmidi.MidiOut
    try:
        return kind(api_id, name=client_name)
    except (rtmidi.RtMidiError, OSError) as exc:
        raise unavailable(api, exc) from exc


def open_by_name(midi: Any, name_substring: str, port_name: str, *, what: str = "output",
                 hint: str = "") -> str | None:
    """Open the port of ``midi`` (an rtmidi client) whose name contains ``name_substring``;
    its full name, or None when no port matches. ``what`` and ``hint`` word the error."""
    rtmidi = rtmidi_module()
    names = midi.get_ports()
    index = match_port(name_substring, names, what=what)
    if index is None:
        return None
    try:
        midi.open_port(index, port_name)
    except (rtmidi.RtMidiError, OSError) as exc:
        raise MidiPortError(f"could not open MIDI {what} {names[index]!r}: {exc}{hint}") from exc
    return names[index]


def _jack_probably_running() -> bool:
    """Whether a JACK server's socket exists (saves libjack's complaints when none runs)."""
    if not sys.platform.startswith("linux"):
        return True
    server = os.environ.get("JACK_DEFAULT_SERVER", "default")
    return os.path.exists(f"/dev/shm/jack_{server}_{os.getuid()}_0")


def platform_apis() -> list[str]:
    """The rtmidi APIs ``auto`` tries, in order."""
    if sys.platform == "darwin":
        return ["coremidi"]
    if sys.platform == "win32":
        return ["winmm"]
    apis = ["jack"] if _jack_probably_running() else []
    if os.path.exists("/dev/snd/seq"):
        apis.append("alsa")
    return apis


def match_port(name_substring: str, names: list[str], *, what: str = "output") -> int | None:
    """The index of the port whose name contains ``name_substring`` (case-insensitive);
    an exact match wins; among several partial matches the first."""
    wanted = name_substring.casefold()
    exact = [i for i, n in enumerate(names) if n.casefold() == wanted]
    if exact:
        return exact[0]
    partial = [i for i, n in enumerate(names) if wanted in n.casefold()]
    if len(partial) > 1:
        log.warning("MIDI %s %r matches %s; using %r (give more of the name to choose)",
                    what, name_substring, [names[i] for i in partial], names[partial[0]])
    return partial[0] if partial else None


def _not_found(name_substring: str, api: str, names: list[str]) -> PortNotFoundError:
    available = ", ".join(repr(n) for n in names) or "none"
    return PortNotFoundError(
        f"no MIDI output matches {name_substring!r} on {API_LABELS[api]}; available: "
        f"{available}; check the name in the patch (any part of it will do, any case), "
        "start JACK or plug the synth in")


class RtMidiPort(OutputPort):
    """A python-rtmidi output: a device found by part of its name, or a virtual port.

    rtmidi's JACK output only queues a message for the next JACK cycle, and closing the
    port drops what is still queued: so closing a JACK port first waits ``JACK_DRAIN_S``
    (longer than a JACK period at any usual setting) for the silencing to leave.
    """

    JACK_DRAIN_S = 0.1

    def __init__(self, name: str, *, api: str, virtual: bool = False,
                 client_name: str = "encore", port_name: str | None = None,
                 latency_ms: float = 0.0) -> None:
        if api not in API_NAMES:
            raise ValueError(f"unknown rtmidi API {api!r}; choose one of {sorted(API_NAMES)}")
        self.api = api
        self.virtual = virtual
        self.client_name = client_name
        self.port_name = port_name or (name if virtual else "out")
        self.backend = f"{api} virtual" if virtual else api
        self._midi: Any = None
        self._unflushed = False
        super().__init__(name, latency_ms=latency_ms)

    def _open(self) -> None:
        rtmidi = rtmidi_module()
        midi = rtmidi_client(self.api, self.client_name)
        try:
            if self.virtual:
                try:
                    midi.open_virtual_port(self.port_name)
                except (rtmidi.RtMidiError, NotImplementedError) as exc:
                    raise MidiPortError(
                        f"{API_LABELS[self.api]} cannot create a virtual MIDI port ({exc}); "
                        "on Windows install loopMIDI and open its port by name") from exc
                self.device_name = f"{self.client_name}:{self.port_name}"
            else:
                device = open_by_name(midi, self.name, self.port_name,
                                      hint="; is another program holding it?")
                if device is None:
                    raise _not_found(self.name, self.api, midi.get_ports())
                self.device_name = device
        except BaseException:
            midi.delete()
            raise
        self._midi = midi

    def _send(self, message: bytes) -> None:
        self._midi.send_message(message)
        self._unflushed = True

    def _close(self) -> None:
        midi, self._midi = self._midi, None
        if midi is not None:
            if self.api == "jack" and self._unflushed:
                time.sleep(self.JACK_DRAIN_S)
            self._unflushed = False
            midi.close_port()
            midi.delete()


# -- opening by name -----------------------------------------------------------------------


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown MIDI backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def open_output(name_substring: str, backend: str = "auto", client_name: str = "encore", *,
                port_name: str | None = None, latency_ms: float = 0.0) -> OutputPort:
    """Open a MIDI output.

    ``name_substring`` is any part of the device's name (any case) for the device
    backends, the new port's name for ``virtual`` (``encore:melody`` for "melody"), and a
    label for ``memory``. ``port_name`` names this end of the connection where the API
    shows it (JACK, ALSA). ``latency_ms`` is how much earlier the MIDI sender sends to this
    port, so that a slow synth still sounds on time.
    """
    _check_backend(backend)
    if backend == "memory":
        return MemoryPort(name_substring, latency_ms=latency_ms)
    if backend == "virtual":
        apis = platform_apis() or ["alsa"]
        if sys.platform == "win32":
            raise MidiPortError("Windows cannot create virtual MIDI ports: install loopMIDI, "
                                "create a port there and open it by name")
        return RtMidiPort(name_substring, api=apis[0], virtual=True, client_name=client_name,
                          port_name=port_name, latency_ms=latency_ms)
    if backend != "auto":
        return RtMidiPort(name_substring, api=backend, client_name=client_name,
                          port_name=port_name, latency_ms=latency_ms)
    apis = platform_apis()
    if not apis:
        raise BackendUnavailableError(
            "no MIDI system found: no JACK server runs and there is no ALSA sequencer "
            "(/dev/snd/seq); start JACK, load snd-seq, or use backend 'memory' for a dry run")
    seen: list[str] = []
    errors: list[str] = []
    for api in apis:
        try:
            names = list_outputs(api)
        except BackendUnavailableError as exc:
            errors.append(str(exc))
            continue
        seen.extend(names)
        if match_port(name_substring, names) is not None:
            return RtMidiPort(name_substring, api=api, client_name=client_name,
                              port_name=port_name, latency_ms=latency_ms)
    if not seen and errors:
        raise BackendUnavailableError("; ".join(errors))
    raise _not_found(name_substring, apis[0], seen)


def list_outputs(backend: str = "auto") -> list[str]:
    """The names of the MIDI outputs a backend can open (``encore devices``)."""
    _check_backend(backend)
    if backend in ("memory", "virtual"):
        return []  # nothing to find: these ports are made, not found
    apis = platform_apis() if backend == "auto" else [backend]
    names: list[str] = []
    for api in apis:
        try:
            midi = rtmidi_client(api, "encore-list")
        except BackendUnavailableError:
            if backend != "auto":
                raise
            continue
        try:
            names.extend(n for n in midi.get_ports() if n not in names)
        finally:
            midi.delete()
    return names
