"""The stage page's server: HTTP for the page, a WebSocket for state and touches.

    server = StageServer(patch.web, show)
    url = await server.start()        # on the show's event loop
    server.on_bar(plan, bar)          # the show, after each bar is pushed
    server.on_lyric(lyric)            # the show, when a line is written
    await server.close()

Why aiohttp: one well-kept library (aio-libs, releases every few weeks) gives both the
HTTP side and WebSockets on the asyncio loop the show already runs, with what a stage
needs built in: a cap on message size, heartbeats that find a dead phone, a bounded write
buffer. (``websockets`` would need a hand-written HTTP side for the page.)

**Who gets in.** A connection from outside ``[web] allow`` is closed unanswered. A
request whose ``Host`` is not this computer's name while the page listens on loopback
is refused (a web page elsewhere cannot reach it by DNS rebinding), and so is a WebSocket
whose ``Origin`` is another site's (cross-site WebSocket hijacking). The WebSocket shows
and takes nothing until its first message, ``{"type": "hello", "pin": "..."}``, carries
the PIN (when one is set; it is required beyond loopback); wrong PINs are counted per
address, and after :data:`PIN_TRIES` of them the address is refused for
:data:`PIN_LOCK_S`.

**A touch is an OSC message.** ``{"type": "osc", "address": "/encore/tempo", "args":
[128]}`` is encoded as the OSC datagram a tablet would send and handed to an
:class:`~engine.live.osc_control.OscDispatcher` whose ``apply`` is the show's own command
entry: the same parsing, table validation, counting, reply budget and event log as a
tablet's message. A binary WebSocket message is taken as an OSC datagram as it is.

**The loop never waits for a browser.** Frames are built once for every client (a
``state`` frame up to :data:`FRAME_HZ` times a second, a ``roll`` frame when the bars
change) and put in each client's slots, one per kind: a newer frame replaces one not yet
sent (coalesced), so a client's queue never holds more than one frame of each kind. Each
client has a task of its own that sends; a client whose send has not finished for
:data:`SLOW_CLIENT_S`, or whose unsent bytes pass :data:`MAX_UNSENT_BYTES`, is dropped.
Incoming messages pass a token bucket per client (:data:`MESSAGE_RATE` a second, bursts of
:data:`MESSAGE_BURST`): a page dragging two faders stays far inside it, a flood is dropped
unread (``flood_dropped``) and the client disconnected after :data:`FLOOD_LIMIT` drops.
Malformed messages are counted (``malformed``) and ignored, like bad OSC.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import socket
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web

from engine.live.osc_control import (
    OscDispatcher,
    OscSettings,
    TokenBucket,
    encode_message,
)
from engine.live.web import frames
from engine.web_settings import WebSettings

log = logging.getLogger(__name__)

FRAME_HZ = 10.0            # state frames a second, at most
MIN_FRAME_GAP_S = 0.04     # a touch asks for a frame now; bursts share one
MAX_CLIENTS = 16           # pages at once; the next is refused
MAX_GREETING = 32          # connections still to say hello (and give the PIN) at once
MAX_MESSAGE = 4096         # bytes in one WebSocket message (a touch is ~60)
MESSAGE_RATE = 200.0       # messages a second per client, sustained ...
MESSAGE_BURST = 100        # ... and at once
FLOOD_LIMIT = 1000         # messages dropped over budget before the client is dropped
SLOW_CLIENT_S = 3.0        # a send unfinished this long drops the client
MAX_UNSENT_BYTES = 1 << 20  # bytes waiting in a client's socket before it is dropped
SEND_BUFFER_BYTES = 64 * 1024  # the kernel's send buffer for a page (SO_SNDBUF)
HELLO_TIMEOUT_S = 10.0     # the PIN must come within this
HEARTBEAT_S = 5.0          # ping; a page that does not answer is closed
STATE_EVERY_S = 1.0        # the show's state and health are read again at least this often
PIN_TRIES = 5              # wrong PINs from one address ...
PIN_LOCK_S = 60.0          # ... lock it out this long
MAX_PIN_HOSTS = 256        # addresses whose wrong PINs are remembered
CLOSE_WRONG_PIN = 4003     # WebSocket close codes the page understands
CLOSE_LOCKED = 4029
CLOSE_FULL = 4013
CLOSE_SLOW = 4008
CLOSE_FLOOD = 4009
CLOSE_ENDED = 1001

ASSETS = {  # URL path -> (file in static/, content type): nothing else is served
    "/": ("index.html", "text/html; charset=utf-8"),
    "/stage.css": ("stage.css", "text/css; charset=utf-8"),
    "/stage.js": ("stage.js", "text/javascript; charset=utf-8"),
    "/icon.svg": ("icon.svg", "image/svg+xml"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATS_KEYS = ("connections", "pages", "not_allowed", "bad_host", "bad_origin", "wrong_pin",
              "pin_locked", "full", "malformed", "too_large", "flood_dropped",
              "dropped_flood", "dropped_slow", "frames_built", "frames_sent",
              "frames_coalesced", "send_errors", "internal_errors")


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package (no path from a request is ever
    opened)."""
    static = resources.files("engine.live.web") / "static"
    return {path: ((static / name).read_bytes(), kind) for path, (name, kind) in ASSETS.items()}


def lan_address() -> str:
    """This computer's address on the network a phone would use (no packet is sent)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
        return str(s.getsockname()[0])
    return "127.0.0.1"


def page_url(host: str, port: int, pin: str = "") -> str:
    """The URL to open (with ``?pin=`` so a scanned QR code lets the phone straight in)."""
    shown = lan_address() if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?pin={pin}" if pin else "")


class _Client:
    """One page: its WebSocket, the frames waiting (one per kind) and its send task."""

    def __init__(self, ws: web.WebSocketResponse, peer: tuple[str, int],
                 transport: asyncio.Transport | None, now_ns: int) -> None:
        self.ws = ws
        self.peer = peer
        self.transport = transport
        self.slots: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.wake = asyncio.Event()
        self.sending_since: float | None = None
        self.bucket = TokenBucket(MESSAGE_RATE, MESSAGE_BURST, now_ns)
        self.flooded = 0
        self.task: asyncio.Task | None = None
        self.dropped = False

    def unsent_bytes(self) -> int:
        if self.transport is None or self.transport.is_closing():
            return 0
        return int(self.transport.get_write_buffer_size())

    def drop(self) -> None:
        """Cut the connection now (no closing handshake to wait for)."""
        self.dropped = True
        if self.transport is not None:
            self.transport.abort()


class StageServer:
    """The page's HTTP and WebSocket server on the show's loop (see the module's notes).

    ``show`` is a :class:`~engine.live.show.Show` (anything with its attributes: tests and
    the benchmark pass a real one). ``apply`` defaults to the show's command entry.
    """

    def __init__(self, settings: WebSettings, show: Any, *,
                 apply: Callable[[Any], None] | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        if not settings.loopback and not settings.pin:
            raise ValueError(f'[web] host = "{settings.host}" listens beyond this computer '
                             'and needs a pin; set e.g. pin = "4711"')
        self.settings = settings
        self.show = show
        self.now = now
        self.history = frames.StageHistory()
        self.dispatcher = OscDispatcher.from_settings(
            OscSettings(host=settings.host, allow=settings.allow),
            apply if apply is not None else show.on_command, state=show.state)
        self.allow = tuple(ipaddress.ip_network(a, strict=False) for a in settings.allow)
        self.stats: dict[str, int] = dict.fromkeys(STATS_KEYS, 0)
        self.clients: list[_Client] = []
        self.url = ""
        self._assets = load_assets()
        self._runner: web.AppRunner | None = None
        self._publisher: asyncio.Task | None = None
        self._kick = asyncio.Event()
        self._roll_dirty = True
        self._ahead_key: tuple[int, ...] = ()
        self._hello = ""
        self._pin_failures: collections.OrderedDict[str, list[float]] = \
            collections.OrderedDict()
        self._closing = False
        self._greeting = 0  # connections that have not said hello yet
        self._cached: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._cached_key: tuple[int, int, int] = (-1, -1, -1)
        self._cached_at = -math.inf

    # ---- life -------------------------------------------------------------------------
    async def start(self) -> str:
        """Listen; returns the page's URL."""
        app = web.Application(middlewares=[self._gate], client_max_size=MAX_MESSAGE)
        app.router.add_get("/ws", self._websocket)
        for path in ASSETS:
            app.router.add_get(path, self._asset)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port,
                           reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(err.errno, f"cannot serve the stage page on {self.settings.host}:"
                          f"{self.settings.port}: {err.strerror or err}; set [web] port to a "
                          "free port (0 picks one)") from err
        port = self.port
        self._hello = json.dumps(frames.hello_frame(self.show.patch.song.title))
        self._publisher = asyncio.ensure_future(self._publish_forever())
        self.url = page_url(self.settings.host, port)
        log.info("stage page on %s (%s)", self.url,
                 "PIN required" if self.settings.pin else "no PIN: this computer only")
        return self.url

    @property
    def port(self) -> int:
        if self._runner is None:
            return 0
        for address in self._runner.addresses:
            return int(address[1])
        return 0

    async def close(self) -> None:
        """Tell every page the set has ended and stop listening; safe to call twice."""
        if self._closing:
            return
        self._closing = True
        if self._publisher is not None:
            self._publisher.cancel()
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.ws.close(code=CLOSE_ENDED,
                                                       message=b"the set has ended"), 0.5)
            client.drop()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._runner.cleanup(), 2.0)
            self._runner = None

    def summary(self) -> dict[str, Any]:
        """Counts for the show's ``stopped:`` line: the page's own and its commands'."""
        return dict(self.stats) | {"commands": dict(self.dispatcher.stats)}

    # ---- fed by the show (its loop) ---------------------------------------------------
    def on_bar(self, plan: Any, bar: Any) -> None:
        self.history.on_bar(self.show, plan, bar)
        self._roll_dirty = True
        self._kick.set()

    def on_lyric(self, lyric: dict[str, Any]) -> None:
        self.history.on_lyric(lyric)

    # ---- HTTP -------------------------------------------------------------------------
    def is_allowed(self, host: str) -> bool:
        if not self.allow:
            return True
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.allow)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        peer = _peer(request)
        if not self.is_allowed(peer[0]):
            self.stats["not_allowed"] += 1
            if request.transport is not None:
                request.transport.abort()  # nothing at all goes back
            raise web.HTTPForbidden()
        if self.settings.loopback and not _loopback_host(request.host):
            self.stats["bad_host"] += 1
            raise web.HTTPMisdirectedRequest(text="open the page as http://127.0.0.1:PORT/")
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _asset(self, request: web.Request) -> web.Response:
        body, kind = self._assets[request.path]
        return web.Response(body=body, content_type=kind.split(";")[0],
                            charset="utf-8" if "charset" in kind else None)

    # ---- WebSocket --------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not _same_origin(origin, request.host):
            self.stats["bad_origin"] += 1
            raise web.HTTPForbidden(text="the stage page talks only to its own server")
        peer = _peer(request)
        if self._locked(peer[0]):
            self.stats["pin_locked"] += 1
            raise web.HTTPTooManyRequests(text=f"too many wrong PINs; wait {PIN_LOCK_S:.0f} s")
        if self._greeting >= MAX_GREETING:
            self.stats["full"] += 1
            raise web.HTTPServiceUnavailable(text="too many pages connecting at once")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE,
                                   compress=False, writer_limit=1 << 16)
        await ws.prepare(request)
        self.stats["connections"] += 1
        _small_send_buffer(request.transport)
        self._greeting += 1
        try:
            let_in = await self._let_in(ws, peer)
        finally:
            self._greeting -= 1
        if not let_in:
            return ws
        if len(self.clients) >= MAX_CLIENTS:
            self.stats["full"] += 1
            await ws.close(code=CLOSE_FULL, message=b"too many pages open")
            return ws
        client = _Client(ws, peer, request.transport, time.monotonic_ns())
        self.clients.append(client)
        self.stats["pages"] += 1
        client.slots["hello"] = self._hello
        client.slots["state"] = self._state_text()
        client.slots["roll"] = self._roll_text()
        client.task = asyncio.ensure_future(self._send_forever(client))
        client.wake.set()
        try:
            await self._receive(client)
        finally:
            if client in self.clients:
                self.clients.remove(client)
            if client.task is not None:
                client.task.cancel()
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 0.5)
        return ws

    async def _let_in(self, ws: web.WebSocketResponse, peer: tuple[str, int]) -> bool:
        """The first message must be the hello with the PIN (when one is set)."""
        try:
            msg = await ws.receive(timeout=HELLO_TIMEOUT_S)
        except TimeoutError:
            await ws.close(code=CLOSE_WRONG_PIN, message=b"no hello")
            return False
        hello = _json_object(msg.data) if msg.type == WSMsgType.TEXT else None
        if hello is None or hello.get("type") != "hello":
            self.stats["malformed"] += msg.type in (WSMsgType.TEXT, WSMsgType.BINARY)
            await ws.close(code=CLOSE_WRONG_PIN, message=b"say hello first")
            return False
        pin = hello.get("pin", "")
        wanted = self.settings.pin
        if wanted and not (isinstance(pin, str) and
                           hmac.compare_digest(pin.encode(), wanted.encode())):
            self.stats["wrong_pin"] += 1
            self._pin_failed(peer[0])
            await ws.close(code=CLOSE_WRONG_PIN, message=b"wrong PIN")
            return False
        return True

    def _locked(self, host: str) -> bool:
        failures = self._pin_failures.get(host)
        if not failures:
            return False
        now = self.now()
        failures[:] = [t for t in failures if now - t < PIN_LOCK_S]
        return len(failures) >= PIN_TRIES

    def _pin_failed(self, host: str) -> None:
        self._pin_failures.setdefault(host, []).append(self.now())
        self._pin_failures.move_to_end(host)
        while len(self._pin_failures) > MAX_PIN_HOSTS:
            self._pin_failures.popitem(last=False)

    async def _receive(self, client: _Client) -> None:
        ws = client.ws
        while not ws.closed:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.ERROR:
                if "size" in str(msg.data).lower() or "too big" in str(msg.data).lower():
                    self.stats["too_large"] += 1
                return
            if not client.bucket.take(time.monotonic_ns()):
                self.stats["flood_dropped"] += 1
                client.flooded += 1
                if client.flooded >= FLOOD_LIMIT:
                    self.stats["dropped_flood"] += 1
                    log.warning("stage page: %s:%d sends too many messages; dropped",
                                *client.peer)
                    client.drop()
                    return
                continue
            try:
                self._message(client, msg)
            except Exception:  # a bug here must not stop the show: count it
                self.stats["internal_errors"] += 1
                log.exception("stage page: handling a message from %s", client.peer)

    def _message(self, client: _Client, msg: Any) -> None:
        if msg.type == WSMsgType.BINARY:  # an OSC datagram as a tablet sends it
            self._datagram(client, bytes(msg.data))
            return
        if msg.type != WSMsgType.TEXT:
            self.stats["malformed"] += 1
            return
        data = _json_object(msg.data)
        kind = data.get("type") if data is not None else None
        if kind == "osc":
            datagram = _osc_datagram(data)
            if datagram is None:
                self.stats["malformed"] += 1
                return
            self._datagram(client, datagram)
        elif kind == "ping":
            client.slots["pong"] = json.dumps({"type": "pong", "t": data.get("t")})
            client.wake.set()
        else:
            self.stats["malformed"] += 1

    def _datagram(self, client: _Client, datagram: bytes) -> None:
        """The tablet's path: parse, validate, count, apply (the show's command entry)."""
        replies = self.dispatcher.handle_datagram(datagram, client.peer)
        if replies:  # a state request within the reply budget: this page's answer now
            client.slots["state"] = self._state_text()
            client.wake.set()
        self._kick.set()  # every page shows the change (and what waits to land) soon

    # ---- frames out -------------------------------------------------------------------
    def _state_text(self) -> str:
        self.stats["frames_built"] += 1
        state, figures = self._snapshot()
        return json.dumps(frames.state_frame(self.show, self.history,
                                             clients=len(self.clients), state=state,
                                             figures=figures),
                          separators=(",", ":"), allow_nan=False)

    def _snapshot(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``show.state()``, read again when a command has been applied (from the page, a
        tablet or the dashboard), a bar pushed, or a second gone; and the health figures,
        read again once a second. Both read the MIDI sender's and the audio engine's
        statistics, which cost percentiles over their rings."""
        show = self.show
        key = (show.health.commands_applied, show.bar_index, len(show.pending))
        now = self.now()
        stale = now - self._cached_at >= STATE_EVERY_S
        if self._cached is None or key != self._cached_key or stale:
            state = show.state()
            figures = frames.health(show, state) if self._cached is None or stale \
                else self._cached[1]
            self._cached = (state, figures)
            self._cached_key = key
            if stale:
                self._cached_at = now
        return self._cached

    def _roll_text(self) -> str:
        return json.dumps(frames.roll_frame(self.show, self.history), separators=(",", ":"))

    async def _publish_forever(self) -> None:
        period = 1.0 / FRAME_HZ
        last = -math.inf
        while True:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=period)
            gap = self.now() - last
            if gap < MIN_FRAME_GAP_S:
                await asyncio.sleep(MIN_FRAME_GAP_S - gap)
            self._kick.clear()
            last = self.now()
            try:
                self._publish()
            except Exception:  # a bug here must not stop the show: count it
                self.stats["internal_errors"] += 1
                log.exception("stage page: building a frame")

    def _publish(self) -> None:
        """Put the newest frames in every client's slots; drop the slow ones."""
        self._drop_slow()
        if not self.clients:
            return
        ahead = tuple(plan.index for plan, _bar in frames.ahead_done(self.show))
        if ahead != self._ahead_key:
            self._ahead_key = ahead
            self._roll_dirty = True
        outgoing = {"state": self._state_text()}
        if self._roll_dirty:
            self._roll_dirty = False
            outgoing["roll"] = self._roll_text()
        for client in self.clients:
            for kind, text in outgoing.items():
                if kind in client.slots:
                    self.stats["frames_coalesced"] += 1
                client.slots[kind] = text
            client.wake.set()

    def _drop_slow(self) -> None:
        now = self.now()
        for client in list(self.clients):
            stuck = client.sending_since is not None and now - client.sending_since > \
                SLOW_CLIENT_S
            if stuck or client.unsent_bytes() > MAX_UNSENT_BYTES:
                self.stats["dropped_slow"] += 1
                log.warning("stage page: %s:%d does not keep up; dropped", *client.peer)
                self.clients.remove(client)
                client.drop()

    async def _send_forever(self, client: _Client) -> None:
        ws = client.ws
        while not ws.closed and not client.dropped:
            await client.wake.wait()
            client.wake.clear()
            while client.slots and not ws.closed and not client.dropped:
                _kind, text = client.slots.popitem(last=False)
                client.sending_since = self.now()
                try:
                    await ws.send_str(text)
                except Exception:  # noqa: BLE001 - a page gone mid-send: let it go
                    self.stats["send_errors"] += 1
                    client.drop()
                    return
                finally:
                    client.sending_since = None
                self.stats["frames_sent"] += 1


# ---- small helpers ----------------------------------------------------------------------
def _peer(request: web.Request) -> tuple[str, int]:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if not peername:
        return ("", 0)
    return (str(peername[0]), int(peername[1]))


def _small_send_buffer(transport: asyncio.BaseTransport | None) -> None:
    """Keep a page's stale frames out of the kernel: a phone that stops reading fills a
    small buffer in a few seconds (then it is dropped), not megabytes over minutes."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


def _loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _same_origin(origin: str, host: str) -> bool:
    for scheme in ("http://", "https://"):
        if origin.lower().startswith(scheme):
            return origin[len(scheme):].rstrip("/").lower() == host.lower()
    return False


def _json_object(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or len(text) > MAX_MESSAGE:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _osc_datagram(data: dict[str, Any]) -> bytes | None:
    """``{"address": "/encore/tempo", "args": [128]}`` as the OSC message a tablet would
    send (ints as i, other numbers as f, strings as s); None when it cannot be one."""
    address, args = data.get("address"), data.get("args", [])
    if not isinstance(address, str) or not isinstance(args, list) or len(args) > 8:
        return None
    tags = []
    for value in args:
        if isinstance(value, bool):
            tags.append("i")
        elif isinstance(value, int):
            tags.append("i")
        elif isinstance(value, float):
            tags.append("f")
        elif isinstance(value, str):
            tags.append("s")
        else:
            return None
    try:
        return encode_message(address, "".join(tags), [int(v) if isinstance(v, bool) else v
                                                        for v in args])
    except (ValueError, TypeError, OverflowError, UnicodeEncodeError):
        return None
