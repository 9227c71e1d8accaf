"""OSC control from a tablet: datagrams in, validated commands out, the state echoed back.

    dispatcher = OscDispatcher.from_settings(settings, show.apply, state=show.osc_state)
    server = OscServer(settings, dispatcher)
    await server.start()                    # listens on settings.host:settings.port
    ...
    server.send_feedback(show.osc_state())  # every registered tablet's faders show the truth
    server.close()

:class:`OscDispatcher` takes bytes and a sender and never touches a socket, so tests feed
it raw datagram byte literals. :meth:`~OscDispatcher.receive` parses messages and bundles
(nested; timetags are read and ignored: a command lands when the table says, ``now``,
next ``beat`` or next ``bar``), matches each address against
:data:`~engine.live.osc_table.TABLE` and checks its arguments, applying nothing;
:meth:`~OscDispatcher.deliver` then calls ``apply(Command)`` for each one that passed,
registers the sender and answers it (:meth:`~OscDispatcher.handle_datagram` does both at
once, on the caller's thread). It never raises: what it refuses is counted in
:attr:`OscDispatcher.stats`, one count per datagram for ``not_allowed``, ``too_large``,
``too_many_elements``, ``bad_parse``, ``over_budget`` and a datagram's ``too_complex``
(nothing of such a datagram is applied), one per message for ``good``, ``released`` (a
button let go), ``unknown_address``, ``bad_types``, ``out_of_range`` and a pattern's
``too_complex`` (a message in a bundle counts on its own; one with an address pattern
counts once per control it selects: ``/encore/part/*/level 2.0`` is four
``out_of_range``, an unmatched pattern one ``unknown_address``);
:attr:`OscDispatcher.problems` keeps the last few refusals in words, for the health view.

No datagram can hold the show. Each costs bounded work, counted in work units (about a
microsecond each here; :attr:`OscDispatcher.last_cost`): at most :data:`MAX_DATAGRAM`
bytes (8 kB; a tablet's messages are tens of bytes), :data:`MAX_ELEMENTS` messages and
bundles, :data:`MAX_DEPTH` levels of bundles, :data:`MAX_PATTERNS` address patterns, and
:data:`MAX_DATAGRAM_WORK` units of pattern matching (one pattern at most
:data:`~engine.live.osc_table.MAX_MATCH_WORK`; the table's addresses are compiled into an
index once, and a pattern is matched once against it). Each sender IP address has a
budget of :data:`SENDER_RATE` units a second (:data:`SENDER_BURST` at once), and all
senders together :data:`ALL_RATE` (:data:`ALL_BURST`): a datagram from a sender over its
budget is dropped unread (``over_budget``), and while all senders together are over
theirs the :class:`OscServer` stops reading for a moment, so the kernel drops the flood.
The server reads and checks datagrams on a thread of its own; the loop only applies what
was valid, handed over through a :class:`Mailbox` that keeps the last command per target
(a fader moved 60 times a second is one command per look of the loop, at most
25 a second, and the show keeps one per target until it lands).

Replies are rate-limited too. A request for the state (``/encore/status``,
``/encore/hello``; several in one datagram count once) is answered with every control's
value: 19 datagrams, about 600 bytes, for a 20-byte request that any allowed (or spoofed:
UDP has no handshake) source can repeat thousands of times a second, which would keep the
loop sending and amplify the traffic thirtyfold. So each client IP address (not address
and port: a new source port gets no new budget) has a token bucket of
:data:`REPLY_BURST` (10) answers refilled at :data:`REPLY_RATE` (5) a second, and all
clients together one of :data:`REPLY_BURST_ALL` (40) refilled at :data:`REPLY_RATE_ALL`
(20) a second: at most 20 answers (380 datagrams, ~12 kB) a second leave after the first
40, and a client flooding spends only its own bucket, never another's. A request over
budget is counted in ``replies_dropped`` and not answered on its own; the client is owed
one answer, sent with the state as it is then as soon as its budget allows (the
:class:`OscServer` times it: within 0.2 s unless many clients together use up the common
budget), so however many requests were held back the latest state still arrives. Valid
control messages in the same flood are still applied (within the work budget). Control
values are not echoed per message: :meth:`OscServer.send_feedback` sends the state once a
bar to the registered tablets (at most :data:`MAX_CLIENTS`), so a tablet moving faders at
60 Hz costs no replies, and one that also polls ``/encore/status`` up to 5 times a second
(or sends 10 requests at once, a layout loading) gets every answer.

The parser here is our own and strict (python-osc 1.10's bundle parser logs a warning per
junk element, loops forever on a negative element size and recurses without limit):
lengths must be multiples of 4, every size must fit, bundles nest at most
:data:`MAX_DEPTH` deep and a datagram holds at most ``max_elements`` messages and bundles.

Tablets register for feedback by sending a valid message (``/encore/hello`` is the
polite way; junk and refused messages register nobody); the client set is bounded, least
recently heard from dropped first. Feedback goes to the port each tablet sent from, or to
``reply_port`` when set (TouchOSC listens on a port of its own).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.live.osc_table import (
    MAX_MATCH_WORK,
    TABLE,
    CommandError,
    Control,
    Lands,
    OscTable,
    PatternTooComplexError,
    WorkMeter,
    osc_map_markdown,
    osc_table_json,
)
from engine.osc_settings import OscSettings

__all__ = [
    "MAX_DATAGRAM",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "Command",
    "Mailbox",
    "Message",
    "OscDispatcher",
    "OscParseError",
    "OscServer",
    "OscSettings",
    "Received",
    "encode_message",
    "feedback_messages",
    "osc_map_markdown",
    "osc_table_json",
    "parse_datagram",
]

log = logging.getLogger(__name__)

MAX_DATAGRAM = 8192    # bytes; bigger datagrams are dropped unread
MAX_ELEMENTS = 128     # messages and bundles in one datagram
MAX_DEPTH = 8          # bundles inside bundles
MAX_PATTERNS = 16      # address patterns (with wildcards) in one datagram
MAX_DATAGRAM_WORK = 8192  # work units matching one datagram's addresses may take
# The cost of a datagram in work units (about a microsecond of this machine's time each):
DATAGRAM_COST = 8      # each datagram read (the read, the sender's checks) ...
ELEMENT_COST = 6       # ... each message and bundle parsed ...
REFUSAL_COST = 16      # ... each refusal (counted and put in words) ...
BYTES_PER_UNIT = 512   # ... each 512 bytes, and the units its address patterns took
SENDER_RATE = 20_000   # work units a second per sender IP address, sustained ...
SENDER_BURST = 40_000  # ... and at once (a tablet at full tilt uses ~5,000 a second)
ALL_RATE = 40_000      # work units a second, all senders together (the receiver pauses) ...
ALL_BURST = 80_000     # ... and at once
MAX_CLIENTS = 8        # tablets that get feedback
MAX_PROBLEMS = 16      # refusals kept in words
REPLY_RATE = 5.0       # state answers a second per client IP address, sustained ...
REPLY_BURST = 10       # ... and at once after a quiet spell
REPLY_RATE_ALL = 20.0  # state answers a second, all clients together ...
REPLY_BURST_ALL = 40   # ... and at once
MAX_REPLY_BUCKETS = 256  # client addresses whose budget is remembered (least recent dropped)
HELD_BACK_SAID_EVERY_S = 10.0  # a client held back is described in problems this seldom

STATS_KEYS = ("good", "released", "bad_parse", "unknown_address", "bad_types",
              "out_of_range", "not_allowed", "too_large", "too_many_elements",
              "too_complex", "over_budget", "apply_errors", "feedback_errors",
              "internal_errors", "replies_dropped", "coalesced")

_BUNDLE = b"#bundle\x00"
_WILDCARDS = frozenset("*?[]{}")


# ---- OSC bytes ------------------------------------------------------------------------
class OscParseError(ValueError):
    """A datagram that is not well-formed OSC."""


class _TooManyError(OscParseError):
    """A datagram with more elements (or deeper bundles) than allowed."""


@dataclass(frozen=True, slots=True)
class Message:
    """One parsed OSC message: ``args`` has one value per type tag (None where a tag
    carries none: N, I, [ and ])."""

    address: str
    tags: str
    args: tuple[Any, ...]


def parse_datagram(data: bytes, *, max_elements: int = MAX_ELEMENTS,
                   max_depth: int = MAX_DEPTH) -> list[Message]:
    """Every message in a datagram, bundles flattened in order (timetags ignored).

    Raises :class:`OscParseError` for anything malformed (nothing partial comes back).
    """
    out: list[Message] = []
    _packet(bytes(data), 0, len(data), 0, out, [max_elements], max_depth)
    return out


def _packet(data: bytes, start: int, end: int, depth: int, out: list[Message],
            budget: list[int], max_depth: int) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooManyError("more elements than allowed")
    if (end - start) % 4:
        raise OscParseError(f"a packet of {end - start} bytes; OSC sizes are multiples of 4")
    if not data.startswith(_BUNDLE, start, end):
        out.append(_message(data, start, end))
        return
    if depth >= max_depth:
        raise _TooManyError(f"bundles nested more than {max_depth} deep")
    if end - start < 16:
        raise OscParseError("a bundle shorter than its 16-byte header")
    i = start + 16  # "#bundle\0" and the timetag, which only says when: ignored
    while i < end:
        if end - i < 4:
            raise OscParseError("a bundle element cut short before its size")
        (size,) = struct.unpack_from(">i", data, i)
        i += 4
        if size <= 0 or size % 4 or size > end - i:
            raise OscParseError(f"a bundle element of size {size} with {end - i} bytes left")
        _packet(data, i, i + size, depth + 1, out, budget, max_depth)
        i += size


def _message(data: bytes, start: int, end: int) -> Message:
    address, i = _string(data, start, end)
    if not address.startswith("/"):
        raise OscParseError(f"address {address[:40]!r} does not start with /")
    if i == end:  # very old senders leave out the type tags: no arguments
        return Message(address, "", ())
    if data[i] != 0x2C:  # ","
        raise OscParseError(f"{address}: no type tag string after the address")
    tags, i = _string(data, i, end)
    tags = tags[1:]
    args = []
    depth = 0
    for tag in tags:
        if tag in "ifcrm":
            if end - i < 4:
                raise OscParseError(f"{address}: argument {tag!r} cut short")
            fmt = {"i": ">i", "f": ">f", "c": ">I", "r": ">I", "m": ">I"}[tag]
            (value,) = struct.unpack_from(fmt, data, i)
            if tag == "f":
                value = _float32(value)
            i += 4
        elif tag in "hdt":
            if end - i < 8:
                raise OscParseError(f"{address}: argument {tag!r} cut short")
            (value,) = struct.unpack_from({"h": ">q", "d": ">d", "t": ">Q"}[tag], data, i)
            i += 8
        elif tag in "sS":
            value, i = _string(data, i, end)
        elif tag == "b":
            if end - i < 4:
                raise OscParseError(f"{address}: blob size cut short")
            (size,) = struct.unpack_from(">i", data, i)
            if size < 0 or size > end - i - 4:
                raise OscParseError(f"{address}: blob of {size} bytes with {end - i - 4} left")
            value = data[i + 4:i + 4 + size]
            i += 4 + (size + 3) // 4 * 4
        elif tag in "TFNI[]":
            value = True if tag == "T" else False if tag == "F" else None
            depth += (tag == "[") - (tag == "]")
            if depth < 0:
                raise OscParseError(f"{address}: ] before [ in the type tags")
        else:
            raise OscParseError(f"{address}: unknown type tag {tag!r}")
        args.append(value)
    if depth:
        raise OscParseError(f"{address}: [ without ] in the type tags")
    if i != end:
        raise OscParseError(f"{address}: {end - i} bytes left after the arguments")
    return Message(address, tags, tuple(args))


def _string(data: bytes, i: int, end: int) -> tuple[str, int]:
    """A NUL-terminated string padded to 4 bytes, and the index after it."""
    nul = data.find(b"\x00", i, end)
    if nul < 0:
        raise OscParseError("a string without its terminating NUL")
    try:
        text = data[i:nul].decode("utf-8")
    except UnicodeDecodeError:
        raise OscParseError("a string that is not UTF-8") from None
    after = i + (nul - i) // 4 * 4 + 4
    if after > end:
        raise OscParseError("a string's padding runs past the end")
    return text, after


def _float32(x: float) -> float:
    """The shortest decimal that is the same float32 (0.3, not 0.30000001192092896)."""
    if not math.isfinite(x):
        return x
    for digits in (6, 7, 8):
        short = float(f"{x:.{digits}g}")
        if struct.unpack(">f", struct.pack(">f", short))[0] == x:
            return short
    return x


def _pad(raw: bytes) -> bytes:
    return raw + b"\x00" * (4 - len(raw) % 4)


def encode_message(address: str, tags: str, args: Sequence[Any]) -> bytes:
    """One OSC message. ``tags`` uses i, f, h, d, s and b, one per argument.

    Raises ValueError for a NUL in a string, a number out of its type's range, or an
    unknown tag; TypeError for an argument of the wrong kind.
    """
    if len(tags) != len(args):
        raise ValueError(f"{address}: {len(tags)} type tags but {len(args)} arguments")
    for text in (address, *(a for t, a in zip(tags, args, strict=True) if t == "s")):
        if not isinstance(text, str):
            raise TypeError(f"{address}: OSC strings are str, got {text!r}")
        if "\x00" in text:
            raise ValueError(f"{address}: OSC strings cannot hold NUL, got {text!r}")
    out = [_pad(address.encode()), _pad(b"," + tags.encode("ascii"))]
    for tag, value in zip(tags, args, strict=True):
        try:
            if tag in "ifhd":
                out.append(struct.pack({"i": ">i", "f": ">f", "h": ">q", "d": ">d"}[tag],
                                       value))
            elif tag == "s":
                out.append(_pad(value.encode()))
            elif tag == "b":
                out.append(struct.pack(">i", len(value)) + bytes(value)
                           + b"\x00" * (-len(value) % 4))
            else:
                raise ValueError(f"{address}: cannot encode type tag {tag!r}; use i f h d s b")
        except struct.error as err:
            raise ValueError(f"{address}: {value!r} does not fit type {tag!r}: {err}") from None
    return b"".join(out)


# ---- commands and feedback ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Command:
    """A validated change for the show to apply: ``values`` as the table's types say
    (floats, ints, strings; ``()`` for a button press)."""

    target: str
    values: tuple[Any, ...]
    lands: Lands
    address: str
    received_ns: int


@dataclass(slots=True)
class Received:
    """What one datagram validly asked for (:meth:`OscDispatcher.receive`): its commands,
    whether it asked for the state, and whether any message in it was valid (which
    registers the sender for feedback)."""

    sender: tuple[str, int]
    commands: list[Command]
    wants_state: bool
    valid: bool
    received_ns: int


def feedback_messages(state: Mapping[str, Any], table: Iterable[Control] = TABLE,
                      errors: list[str] | None = None) -> list[bytes]:
    """Each control's current value under its own address, as OSC messages.

    ``state`` maps targets to values: ``{"song.tempo": 112.0, "walk.xy": (0.4, 0.6),
    "parts.bass.mute": False, "status.bar": 17, "status.section": "chorus", ...}``.
    Controls without a value in ``state`` (and buttons) are left out; a value that does
    not fit its control is left out and described in ``errors``.
    """
    out = []
    for control in table:
        if not control.has_state or control.target not in state:
            continue
        value = state[control.target]
        try:
            values = tuple(value) if len(control.types) > 1 else (value,)
            if len(values) != len(control.types):
                raise ValueError(f"needs {len(control.types)} values")
            args = [_feedback_value(tag, v) for tag, v in zip(control.types, values,
                                                               strict=True)]
            out.append(encode_message(control.address, control.types, args))
        except (TypeError, ValueError, OverflowError) as err:
            if errors is not None:
                errors.append(f"feedback {control.target} = {value!r:.60} for "
                              f"{control.address}: {err}")
    return out


def _feedback_value(tag: str, value: Any) -> Any:
    if tag == "f":
        return float(value)
    if tag == "i":
        return int(value)
    return str(value).replace("\x00", "")[:128]


# ---- reply budget ---------------------------------------------------------------------
class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` a second; one taken per reply.
    Times are monotonic nanoseconds passed in (the dispatcher's clock)."""

    __slots__ = ("burst", "last_ns", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now_ns: int):
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = self.burst
        self.last_ns = now_ns

    def _refill(self, now_ns: int) -> None:
        if now_ns > self.last_ns:
            self.tokens = min(self.burst, self.tokens + (now_ns - self.last_ns) * self.rate / 1e9)
            self.last_ns = now_ns

    def ready(self, now_ns: int) -> bool:
        self._refill(now_ns)
        return self.tokens >= 1.0

    def spend(self, units: float, now_ns: int) -> None:
        """Take ``units`` even when that leaves a debt (a cost known only afterwards): the
        bucket is ready again once the refill has paid it."""
        self._refill(now_ns)
        self.tokens -= units

    def take(self, now_ns: int) -> bool:
        """Take a token if there is one."""
        if not self.ready(now_ns):
            return False
        self.tokens -= 1.0
        return True

    def wait_s(self, now_ns: int) -> float:
        """Seconds until a token is there (0 when one is)."""
        self._refill(now_ns)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else math.inf


# ---- the dispatcher -------------------------------------------------------------------
class OscDispatcher:
    """Datagrams in, :class:`Command` out: parse, check against the table, apply, count.

    ``apply`` is called once per accepted message (and per control an address pattern
    selects). ``state`` (optional) returns the show's state for the replies to
    ``/encore/status`` and ``/encore/hello``. ``allow`` lists client IP addresses or
    networks; empty allows everyone. ``now_ns`` stamps ``received_ns`` and runs the reply
    budget (a fake clock in tests). ``reply_rate``/``reply_burst`` (per client IP address)
    and ``reply_rate_all``/``reply_burst_all`` (all clients together) bound the answers to
    state requests, in answers a second and answers at once (see the module docstring);
    the excess is counted in ``replies_dropped`` and owed (:meth:`owed_replies`).
    ``max_datagram``, ``max_elements``, ``max_patterns`` and ``max_work`` bound one
    datagram; ``sender_rate``/``sender_burst`` and ``all_rate``/``all_burst`` are the work
    budgets in units a second and at once (the module's ``SENDER_*`` and ``ALL_*`` unless
    given). Threads: :meth:`receive` from one thread (the server's receiver), everything
    else from one other (the asyncio loop's); :meth:`handle_datagram` does both on one.
    """

    def __init__(self, table: OscTable | Iterable[Control] = TABLE,
                 apply: Callable[[Command], None] = lambda command: None, *,
                 state: Callable[[], Mapping[str, Any]] | None = None,
                 allow: Iterable[str] = (), reply_port: int = 0,
                 max_clients: int = MAX_CLIENTS, max_datagram: int = MAX_DATAGRAM,
                 max_elements: int = MAX_ELEMENTS, max_patterns: int = MAX_PATTERNS,
                 max_work: int = MAX_DATAGRAM_WORK,
                 sender_rate: float | None = None, sender_burst: float | None = None,
                 all_rate: float | None = None, all_burst: float | None = None,
                 reply_rate: float = REPLY_RATE, reply_burst: int = REPLY_BURST,
                 reply_rate_all: float = REPLY_RATE_ALL,
                 reply_burst_all: int = REPLY_BURST_ALL,
                 now_ns: Callable[[], int] = time.monotonic_ns):
        self.table = table if isinstance(table, OscTable) else OscTable(table)
        self.apply = apply
        self.state = state
        self.allow = tuple(ipaddress.ip_network(entry, strict=False) for entry in allow)
        self.reply_port = reply_port
        self.max_clients = max_clients
        self.max_datagram = max_datagram
        self.max_elements = max_elements
        self.max_patterns = max_patterns
        self.max_work = max_work
        # the work budgets: the module's SENDER_* and ALL_* unless given
        self.sender_rate = SENDER_RATE if sender_rate is None else sender_rate
        self.sender_burst = SENDER_BURST if sender_burst is None else sender_burst
        self._cost_buckets: collections.OrderedDict[str, TokenBucket] = \
            collections.OrderedDict()
        self._all_cost = TokenBucket(ALL_RATE if all_rate is None else all_rate,
                                     ALL_BURST if all_burst is None else all_burst, now_ns())
        self._over_budget_said = -(1 << 62)
        self._refusals = 0
        self.last_cost = 0  # work units the last datagram read was charged
        self.last_match_work = 0  # of which matching its address patterns took
        self._allowed: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self.now_ns = now_ns
        self.stats: dict[str, int] = dict.fromkeys(STATS_KEYS, 0)
        self.problems: collections.deque[str] = collections.deque(maxlen=MAX_PROBLEMS)
        self._clients: collections.OrderedDict[tuple[str, int], None] = \
            collections.OrderedDict()
        self.reply_rate = reply_rate
        self.reply_burst = reply_burst
        self._reply_buckets: collections.OrderedDict[str, TokenBucket] = \
            collections.OrderedDict()
        self._all_replies = TokenBucket(reply_rate_all, reply_burst_all, now_ns())
        self._owed: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self._held_back_said: collections.OrderedDict[str, int] = collections.OrderedDict()

    @classmethod
    def from_settings(cls, settings: OscSettings, apply: Callable[[Command], None], *,
                      table: OscTable | Iterable[Control] = TABLE,
                      state: Callable[[], Mapping[str, Any]] | None = None,
                      **kwargs: Any) -> OscDispatcher:
        return cls(table, apply, state=state, allow=settings.allow,
                   reply_port=settings.reply_port, **kwargs)

    @property
    def clients(self) -> tuple[tuple[str, int], ...]:
        """Where feedback goes: the registered tablets, least recently heard from first."""
        return tuple(self._clients)

    def reply_address(self, sender: tuple[str, int]) -> tuple[str, int]:
        return (sender[0], self.reply_port or sender[1])

    def is_allowed(self, host: str) -> bool:
        if not self.allow:
            return True
        known = self._allowed.get(host)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        allowed = self._allowed[host] = any(ip in network for network in self.allow)
        while len(self._allowed) > MAX_REPLY_BUCKETS:
            self._allowed.popitem(last=False)
        return allowed

    def handle_datagram(self, data: bytes, sender: tuple[str, int]) -> list[bytes]:
        """Handle one datagram from ``sender`` (host, port) at once, on the caller's thread:
        :meth:`receive`, then :meth:`deliver`; returns the replies to send back to
        :meth:`reply_address` of the sender. Never raises."""
        received = self.receive(data, sender)
        return self.deliver(received) if received is not None else []

    def receive(self, data: bytes, sender: tuple[str, int]) -> Received | None:
        """Check one datagram and turn it into commands, applying nothing (the first half
        of :meth:`handle_datagram`; the :class:`OscServer` runs it on its receiver thread).
        None when nothing of it is valid: refused, over budget, or only refusals (all
        counted). Never raises."""
        try:
            return self._receive(data, sender)
        except Exception as err:  # a bug here must not stop the show: count it
            self._refuse("internal_errors", sender, f"internal error: {err!r}")
            log.exception("OSC: error reading a datagram from %s", sender)
            return None

    def deliver(self, received: Received) -> list[bytes]:
        """Apply what :meth:`receive` accepted, register the sender for feedback and answer
        a request for the state (within the reply budget); returns the replies. Call it on
        the thread that owns the show (the asyncio loop's). Never raises."""
        for command in received.commands:
            self.apply_command(command)
        return self.greet(received.sender, received.wants_state, received.received_ns)

    def apply_command(self, command: Command) -> None:
        """``apply(command)``, its failure counted in ``apply_errors``."""
        try:
            self.apply(command)
        except Exception as err:
            self._refuse("apply_errors", None, f"applying {command}: {err!r}")
            log.exception("OSC: applying %s failed", command)

    def greet(self, sender: tuple[str, int], wants_state: bool, received_ns: int) -> list[bytes]:
        """A sender that sent a valid message: registered for feedback, and answered with
        the state when it asked (within the reply budget). Never raises."""
        try:
            self._register(sender)
            return self._answer(sender, received_ns) if wants_state else []
        except Exception as err:  # a bug here must not stop the show: count it
            self._refuse("internal_errors", sender, f"internal error: {err!r}")
            log.exception("OSC: error answering %s", sender)
            return []

    def feedback_messages(self, state: Mapping[str, Any]) -> list[bytes]:
        """:func:`feedback_messages` over this dispatcher's table; values that do not fit
        are counted (``feedback_errors``) and described in :attr:`problems`."""
        errors: list[str] = []
        out = feedback_messages(state, self.table, errors)
        self.stats["feedback_errors"] += len(errors)
        self.problems.extend(errors)
        return out

    def read_wait_s(self) -> float:
        """Seconds until all senders together have budget again (0 when they have): the
        receiver stops reading meanwhile, so the kernel drops what a flood sends."""
        return self._all_cost.wait_s(self.now_ns())

    def _receive(self, data: bytes, sender: tuple[str, int]) -> Received | None:
        host = str(sender[0])
        now = self.now_ns()
        if not self.is_allowed(host):
            self._refuse("not_allowed", sender, "not in [osc] allow; add its address there")
            self._all_cost.spend(DATAGRAM_COST, now)  # reading it cost something too
            self.last_cost, self.last_match_work = DATAGRAM_COST, 0
            return None
        if len(data) > self.max_datagram:
            self._refuse("too_large", sender, f"a datagram of more than {self.max_datagram} "
                         f"bytes; the limit is {self.max_datagram}")
            self._all_cost.spend(DATAGRAM_COST, now)
            self.last_cost, self.last_match_work = DATAGRAM_COST, 0
            return None
        bucket = self._cost_bucket(host, now)
        if not (bucket.ready(now) and self._all_cost.ready(now)):
            self.stats["over_budget"] += 1
            self._all_cost.spend(DATAGRAM_COST, now)
            self.last_cost, self.last_match_work = DATAGRAM_COST, 0
            self._say_over_budget(sender, now)
            return None
        work = WorkMeter(self.max_work)
        elements = [self.max_elements]  # counts down as the parser reads
        refusals = self._refusals
        try:
            return self._check(data, sender, now, work, elements)
        finally:
            cost = (DATAGRAM_COST + len(data) // BYTES_PER_UNIT + work.used
                    + ELEMENT_COST * (self.max_elements - max(elements[0], 0))
                    + REFUSAL_COST * (self._refusals - refusals))
            self.last_cost, self.last_match_work = cost, work.used
            bucket.spend(cost, now)
            self._all_cost.spend(cost, now)

    def _check(self, data: bytes, sender: tuple[str, int], received_ns: int,
               work: WorkMeter, elements: list[int]) -> Received | None:
        messages: list[Message] = []
        try:
            _packet(bytes(data), 0, len(data), 0, messages, elements, MAX_DEPTH)
        except OscParseError as err:  # what was read before the error is charged too
            if isinstance(err, _TooManyError):
                self._refuse("too_many_elements", sender, f"{err}; the limit is "
                             f"{self.max_elements} elements, {MAX_DEPTH} deep")
            else:
                self._refuse("bad_parse", sender, f"not OSC: {err}")
            return None
        patterns = sum(1 for m in messages if _WILDCARDS & set(m.address))
        if patterns > self.max_patterns:
            self._refuse("too_complex", sender, f"{patterns} address patterns in one "
                         f"datagram; the limit is {self.max_patterns}: send plain addresses")
            return None
        selected: list[list[Control] | CommandError] = []
        for message in messages:  # every address looked up before anything is counted
            meter = WorkMeter(MAX_MATCH_WORK)
            try:
                selected.append(self.table.select(message.address, meter))
            except PatternTooComplexError as err:
                selected.append(err)
            work.used += meter.used
            if work.used > work.limit:
                self._refuse("too_complex", sender, f"address patterns that cost more than "
                             f"{work.limit} work units in one datagram; send plain addresses")
                return None
        received = Received((str(sender[0]), int(sender[1])), [], False, False, received_ns)
        for message, controls in zip(messages, selected, strict=True):
            self._message(message, controls, received)
        return received if received.valid else None

    def _message(self, message: Message, controls: list[Control] | CommandError,
                 received: Received) -> None:
        """Check one message against the controls its address selected; what passes goes
        into ``received``."""
        sender = received.sender
        if isinstance(controls, CommandError):
            self._refuse(controls.reason, sender, str(controls))
            return
        if not controls:
            self._refuse("unknown_address", sender, f"unknown address {message.address[:80]}; "
                         "`encore osc-map` lists them")
            return
        for control in controls:
            try:
                values = control.accept(message.tags, message.args)
            except CommandError as refused:
                self._refuse(refused.reason, sender, str(refused))
                continue
            received.valid = True
            if values is None:
                self.stats["released"] += 1
                continue
            self.stats["good"] += 1
            if control.replies:
                received.wants_state = True
                continue
            received.commands.append(Command(control.target, values, control.lands,
                                             control.address, received.received_ns))

    def _cost_bucket(self, host: str, now_ns: int) -> TokenBucket:
        bucket = self._cost_buckets.get(host)
        if bucket is None:
            bucket = self._cost_buckets[host] = TokenBucket(self.sender_rate, self.sender_burst,
                                                            now_ns)
            while len(self._cost_buckets) > MAX_REPLY_BUCKETS:
                self._cost_buckets.popitem(last=False)
        else:
            self._cost_buckets.move_to_end(host)
        return bucket

    def _say_over_budget(self, sender: tuple[str, int], now_ns: int) -> None:
        if now_ns - self._over_budget_said >= HELD_BACK_SAID_EVERY_S * 1e9:
            self._over_budget_said = now_ns  # in words now and then, not per datagram
            self.problems.append(
                f"from {_who(sender)}: more OSC than {self.sender_rate:g} work units a "
                "second (one datagram of a few messages is about 100); datagrams dropped "
                "unread (counted in over_budget)")

    def _answer(self, sender: tuple[str, int], received_ns: int) -> list[bytes]:
        host = str(sender[0])
        client = self.reply_address((host, int(sender[1])))
        if self._take_reply(host, received_ns):
            self._owed.pop(client, None)  # this answer is the one owed
            return self._state_messages()
        self.stats["replies_dropped"] += 1
        self._owed[client] = None
        while len(self._owed) > self.max_clients:
            self._owed.popitem(last=False)
        said = self._held_back_said.get(host)
        if said is None or received_ns - said >= HELD_BACK_SAID_EVERY_S * 1e9:
            self._held_back_said[host] = received_ns  # in words now and then, not per request
            self._held_back_said.move_to_end(host)
            while len(self._held_back_said) > MAX_PROBLEMS:
                self._held_back_said.popitem(last=False)
            self.problems.append(
                f"from {_who(sender)}: asks for the state more than {self.reply_burst} times "
                f"at once or {self.reply_rate:g} a second; answers held back (counted in "
                "replies_dropped), the latest state follows when the budget allows")
        return []

    @property
    def owes_replies(self) -> bool:
        """Whether a client is owed the answer the budget held back."""
        return bool(self._owed)

    def owed_wait_s(self) -> float | None:
        """Seconds until an owed answer may be sent (None when none is owed)."""
        if not self._owed:
            return None
        now = self.now_ns()
        all_wait = self._all_replies.wait_s(now)
        return max(all_wait, min(self._bucket(host, now).wait_s(now) for host, _ in self._owed))

    def owed_replies(self) -> list[tuple[tuple[str, int], list[bytes]]]:
        """The answers owed that the budget now allows, as (reply address, messages), oldest
        owed first; each is taken off what is owed (one answer pays for every request that
        was held back)."""
        out: list[tuple[tuple[str, int], list[bytes]]] = []
        messages: list[bytes] | None = None
        now = self.now_ns()
        for client in list(self._owed):
            if not self._take_reply(client[0], now):
                continue
            del self._owed[client]
            if messages is None:
                messages = self._state_messages()
            out.append((client, messages))
        return out

    def _bucket(self, host: str, now_ns: int) -> TokenBucket:
        bucket = self._reply_buckets.get(host)
        if bucket is None:
            bucket = self._reply_buckets[host] = TokenBucket(self.reply_rate, self.reply_burst,
                                                             now_ns)
            while len(self._reply_buckets) > MAX_REPLY_BUCKETS:
                self._reply_buckets.popitem(last=False)
        else:
            self._reply_buckets.move_to_end(host)
        return bucket

    def _take_reply(self, host: str, now_ns: int) -> bool:
        """Take one answer from the client's budget and the common one, if both have it."""
        bucket = self._bucket(host, now_ns)
        if not (bucket.ready(now_ns) and self._all_replies.ready(now_ns)):
            return False
        bucket.take(now_ns)
        self._all_replies.take(now_ns)
        return True

    def _state_messages(self) -> list[bytes]:
        if self.state is None:
            return []
        try:
            state = self.state()
        except Exception as err:
            self._refuse("feedback_errors", None, f"reading the state for a reply: {err!r}")
            return []
        return self.feedback_messages(state)

    def _register(self, sender: tuple[str, int]) -> None:
        client = self.reply_address((str(sender[0]), int(sender[1])))
        self._clients[client] = None
        self._clients.move_to_end(client)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def _refuse(self, reason: str, sender: tuple[str, int] | None, text: str) -> None:
        self._refusals += 1
        self.stats[reason] += 1
        where = f"from {_who(sender)}: " if sender is not None else ""
        self.problems.append(f"{where}{text}")
        log.debug("OSC %s %s%s", reason, where, text)


def _who(sender: Any) -> str:
    try:
        return f"{sender[0]}:{sender[1]}"
    except Exception:
        return repr(sender)[:80]


# ---- the server -----------------------------------------------------------------------
DRAIN_INTERVAL_S = 0.04  # the loop takes what arrived at most this often (25 times a second)
READ_TIMEOUT_S = 0.1     # the receiver looks at its stop flag this often
MAX_READ_PAUSE_S = 0.05  # the longest the receiver stops reading while over the budget
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)  # Linux: datagrams the kernel dropped


class Mailbox:
    """From the receiver thread to the loop: the commands accepted since the loop last
    looked, coalesced (the latest per target, so a fader at 60 Hz is one value per look,
    and a button pressed many times one press), and the senders to register or answer.
    Bounded by the table's size and :data:`MAX_CLIENTS`; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._commands: dict[str, Command] = {}
        self._senders: collections.OrderedDict[tuple[str, int], tuple[bool, int]] = \
            collections.OrderedDict()
        self._woken = False
        self.coalesced = 0

    def put(self, received: Received) -> bool:
        """Add what a datagram asked for; True when the loop must be woken to take it."""
        with self._lock:
            for command in received.commands:
                if self._commands.pop(command.target, None) is not None:
                    self.coalesced += 1
                self._commands[command.target] = command
            wants, _ = self._senders.pop(received.sender, (False, 0))
            self._senders[received.sender] = (wants or received.wants_state,
                                              received.received_ns)
            while len(self._senders) > 2 * MAX_CLIENTS:
                self._senders.popitem(last=False)
            wake, self._woken = not self._woken, True
            return wake

    def take(self) -> tuple[list[Command], list[tuple[tuple[str, int], bool, int]]]:
        """Everything waiting, oldest first: (commands, [(sender, wants_state, ns)])."""
        with self._lock:
            commands, self._commands = list(self._commands.values()), {}
            senders = [(s, wants, ns) for s, (wants, ns) in self._senders.items()]
            self._senders.clear()
            self._woken = False
            return commands, senders


class OscServer:
    """The dispatcher on a UDP socket bound to host:port, read by a thread of its own.

    The receiver thread reads each datagram and runs :meth:`OscDispatcher.receive` (parse,
    limits, address patterns, types and ranges, the sender's work budget), so no datagram
    costs the asyncio loop anything; it hands only what was valid to the loop through a
    :class:`Mailbox`, waking the loop at most every :data:`DRAIN_INTERVAL_S`. When all
    senders together are over their budget the thread stops reading for a moment and the
    kernel drops the flood (counted in ``kernel_dropped`` where Linux says so).

    On the loop: commands are applied (:meth:`OscDispatcher.deliver`), senders registered,
    replies (to ``/encore/status`` and ``/encore/hello``) sent within the reply budget, an
    answer the budget held back sent by a timer as soon as the budget allows (one answer
    for all the requests held back). :meth:`send_feedback` sends the state to every
    registered tablet (unless the settings turn feedback off). Send errors are counted in
    :attr:`stats`, never raised.
    """

    def __init__(self, settings: OscSettings, dispatcher: OscDispatcher):
        self.settings = settings
        self.dispatcher = dispatcher
        self.stats: dict[str, int] = dict.fromkeys(
            ("received", "sent", "send_errors", "receive_errors", "read_pauses",
             "kernel_dropped", "receiver_cpu_ms"), 0)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mailbox = Mailbox()
        self._last_drain = 0.0
        self._drain_timer: asyncio.TimerHandle | None = None
        self._owed_timer: asyncio.TimerHandle | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and start receiving; returns the bound (host, port)."""
        if self._sock is not None:
            raise RuntimeError("the OSC server is already started")
        where = f"{self.settings.host}:{self.settings.port}"
        try:
            family, _, _, _, address = socket.getaddrinfo(
                self.settings.host, self.settings.port, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind(address)
            except OSError:
                sock.close()
                raise
        except OSError as err:
            raise OSError(err.errno, f"cannot listen for OSC on {where}: "
                          f"{getattr(err, 'strerror', None) or err}; is another Encore "
                          "running? set [osc] port to a free port, or [osc] host to an "
                          "address of this computer") from err
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        sock.settimeout(READ_TIMEOUT_S)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._receive_loop, args=(sock,),
                                        name="encore-osc-receiver", daemon=True)
        self._thread.start()
        host, port = self.address or (self.settings.host, self.settings.port)
        allowed = ", ".join(self.settings.allow) or "every sender"
        log.info("OSC listening on %s:%d (allowed: %s)", host, port, allowed)
        return host, port

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound (host, port), or None before :meth:`start`."""
        if self._sock is None:
            return None
        sockname = self._sock.getsockname()
        return (sockname[0], sockname[1]) if sockname else None

    def close(self) -> None:
        """Stop listening (the receiver thread ends within :data:`READ_TIMEOUT_S`); safe to
        call twice."""
        self._stop.set()
        for timer in (self._owed_timer, self._drain_timer):
            if timer is not None:
                timer.cancel()
        self._owed_timer = self._drain_timer = None
        if self._thread is not None:
            self._thread.join(timeout=2 * READ_TIMEOUT_S)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def __aenter__(self) -> OscServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def send_feedback(self, state: Mapping[str, Any]) -> int:
        """Send the state to every registered tablet; returns the datagrams sent."""
        if not self.settings.feedback or self._sock is None:
            return 0
        clients = self.dispatcher.clients
        if not clients:
            return 0
        messages = self.dispatcher.feedback_messages(state)
        return sum(self._send(m, client) for client in clients for m in messages)

    # -- the receiver thread
    def _receive_loop(self, sock: socket.socket) -> None:
        ancillary = socket.CMSG_SPACE(4)
        size = self.dispatcher.max_datagram + 1  # one byte more shows a datagram too large
        while not self._stop.is_set():
            try:
                data, anc, _, addr = sock.recvmsg(size, ancillary)
            except TimeoutError:
                continue
            except OSError as err:  # e.g. ICMP port unreachable after feedback to a tablet
                if self._stop.is_set():  # that has gone away; or the socket closed
                    return
                self.stats["receive_errors"] += 1
                log.debug("OSC socket error: %s", err)
                continue
            try:
                self._received(data, anc, addr)
            except Exception:  # a bug here must not stop the receiver: count it
                self.dispatcher.stats["internal_errors"] += 1
                log.exception("OSC: error in the receiver")
            if self.stats["received"] % 64 == 0:  # what reading costs this process
                self.stats["receiver_cpu_ms"] = int(time.thread_time() * 1000)
        self.stats["receiver_cpu_ms"] = int(time.thread_time() * 1000)

    def _received(self, data: bytes, anc: list[tuple[int, int, bytes]],
                  addr: tuple[Any, ...]) -> None:
        self.stats["received"] += 1
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                self.stats["kernel_dropped"] = struct.unpack("=I", value[:4])[0]
        received = self.dispatcher.receive(data, (str(addr[0]), int(addr[1])))
        if received is not None and self._mailbox.put(received):
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._wake)
        wait = self.dispatcher.read_wait_s()
        if wait > 0:  # over the budget of all senders: let the kernel drop the flood
            self.stats["read_pauses"] += 1
            self._stop.wait(min(wait, MAX_READ_PAUSE_S))

    # -- on the loop
    def _wake(self) -> None:
        if self._sock is None or self._drain_timer is not None:
            return
        wait = self._last_drain + DRAIN_INTERVAL_S - time.monotonic()
        if wait > 0:
            self._drain_timer = asyncio.get_running_loop().call_later(wait, self._drain)
        else:
            self._drain()

    def _drain(self) -> None:
        """Apply what the receiver accepted, register and answer its senders."""
        self._drain_timer = None
        self._last_drain = time.monotonic()
        try:
            commands, senders = self._mailbox.take()
            self.dispatcher.stats["coalesced"] = self._mailbox.coalesced
            for command in commands:
                self.dispatcher.apply_command(command)
            for sender, wants_state, received_ns in senders:
                target = self.dispatcher.reply_address(sender)
                for reply in self.dispatcher.greet(sender, wants_state, received_ns):
                    self._send(reply, target)
            if self._owed_timer is None and self.dispatcher.owes_replies:
                self._schedule_owed()
        except Exception:  # a bug here must not stop the show: count it
            self.dispatcher.stats["internal_errors"] += 1
            log.exception("OSC: error applying what arrived")

    def _schedule_owed(self) -> None:
        """Send the answers owed when the budget allows (a timer on the loop)."""
        try:
            wait = self.dispatcher.owed_wait_s()
            if wait is None or self._sock is None or not math.isfinite(wait):
                return
            self._owed_timer = asyncio.get_running_loop().call_later(max(wait, 0.001),
                                                                     self._send_owed)
        except Exception:  # a bug here must not stop the show: count it
            self.dispatcher.stats["internal_errors"] += 1
            log.exception("OSC: error timing the owed replies")

    def _send_owed(self) -> None:
        self._owed_timer = None
        try:
            for target, replies in self.dispatcher.owed_replies():
                for reply in replies:
                    self._send(reply, target)
            if self.dispatcher.owes_replies:
                self._schedule_owed()
        except Exception:  # a bug here must not stop the show: count it (the next request
            self.dispatcher.stats["internal_errors"] += 1  # times the owed answers again)
            log.exception("OSC: error sending the owed replies")

    def _send(self, data: bytes, addr: tuple[str, int]) -> int:
        if self._sock is None:
            return 0
        try:
            self._sock.sendto(data, socket.MSG_DONTWAIT, addr)
        except (OSError, ValueError) as err:
            self.stats["send_errors"] += 1
            log.debug("OSC: sending to %s failed: %s", addr, err)
            return 0
        self.stats["sent"] += 1
        return 1
