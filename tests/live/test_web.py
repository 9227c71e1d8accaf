"""The stage page's server against a real show: who gets in, what a touch does, what a
flood, a slow page or a malformed message costs.

A real :class:`~engine.live.show.Show` plays the tiny test model in this process (MIDI to
the in-memory backend, no audio: these tests are about the page's server, the browser
tests in ``test_web_browser.py`` play on JACK); the clients are aiohttp's WebSocket client
on the same loop, or raw sockets, or a child process for the flood (so the flood does not
share the show's loop, as a phone would not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from engine.live.osc_control import encode_message
from engine.live.osc_table import TABLE
from engine.live.show import Show
from engine.live.web import frames, server
from engine.patch import PatchError, parse_patch
from engine.web_settings import WebSettings

ROOT = Path(__file__).resolve().parents[2]

PATCH = """
[song]
tempo = 240.0
model = "tiny_trio"

[form]
sections = ["verse", "chorus"]
loop_from = 0

[form.lengths]
verse = 2
chorus = 2

[lyrics]
source = "markov"

[midi]
backend = "memory"

[parts.bass]
port = "mem"

[live]
internal_synth = false

[osc]
port = 0

"""


def web_patch(**web: Any):
    """The test patch with a [web] section: on, a free port, and ``web``'s keys."""
    keys = {"enabled": True, "port": 0} | web
    return parse_patch(PATCH + "[web]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                                     for k, v in keys.items()))


@contextlib.asynccontextmanager
async def playing(tiny_model_dir: Path, tmp_path: Path, **web: Any) -> AsyncIterator[Show]:
    """A show playing with its stage page up; stopped (and checked silent) on the way out."""
    show = Show(web_patch(**web), model_dir=tiny_model_dir, record_dir=tmp_path / "set",
                audio=False, osc=False)
    task = asyncio.ensure_future(show.run())
    deadline = time.monotonic() + 60
    while show.web is None or not show.web.port or show.clock is None or \
            show.clock.now_beat() < 0:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "the show did not start within 60 s"
        await asyncio.sleep(0.02)
    try:
        yield show
    finally:
        show.stop()
        await asyncio.wait_for(task, 30)


def ws_url(show: Show, path: str = "/ws") -> str:
    return f"http://127.0.0.1:{show.web.port}{path}"


async def let_in(session: aiohttp.ClientSession, show: Show, pin: str = "",
                 **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(ws_url(show), **kwargs)
    await ws.send_str(json.dumps({"type": "hello", "pin": pin}))
    return ws


async def next_frame(ws: aiohttp.ClientWebSocketResponse, kind: str,
                     timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, f"the page was closed: {msg}"
        frame = json.loads(msg.data)
        if frame["type"] == kind:
            return frame


async def state_where(ws: aiohttp.ClientWebSocketResponse, predicate,
                      frames_at_most: int = 200) -> dict[str, Any]:
    """The first state frame (of the next ``frames_at_most``) that ``predicate`` holds for."""
    for _ in range(frames_at_most):
        frame = await next_frame(ws, "state")
        if predicate(frame):
            return frame
    pytest.fail(f"no state frame of {frames_at_most} showed it")


async def until(predicate, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    text = (tmp_path / "set" / "song.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


# ---- settings ----------------------------------------------------------------------------
def test_beyond_loopback_without_a_pin_the_patch_is_refused() -> None:
    with pytest.raises(PatchError) as refused:
        web_patch(host="0.0.0.0")
    assert "[web] pin" in str(refused.value) and 'pin = "4711"' in str(refused.value)
    assert web_patch(host="0.0.0.0", pin="4711").web.pin == "4711"
    assert web_patch(host="127.0.0.1").web.pin == ""  # this computer only: no PIN needed
    with pytest.raises(ValueError, match="needs a pin"):  # and the server checks it too
        server.StageServer(WebSettings(host="0.0.0.0"), show=None)


@pytest.mark.parametrize("key, value, words", [
    ("allow", ["192.168.1.300"], "not an IP address or network"),
    ("host", "my-laptop", "is not an IP address"),
    ("pin", "12", "4 to 64 printable characters"),
    ("pin", "12 34", "without spaces"),
    ("port", 70000, "out of range"),
])
def test_web_settings_follow_the_osc_rules(key: str, value: Any, words: str) -> None:
    extra = {"pin": "4711"} if key != "pin" else {}
    with pytest.raises(PatchError, match=words):
        web_patch(**{key: value}, **extra)


def test_the_cli_refuses_a_pinless_page_on_the_network(tmp_path: Path) -> None:
    patch = tmp_path / "open.toml"
    patch.write_text('[web]\nhost = "0.0.0.0"\n')
    result = subprocess.run([sys.executable, "-m", "engine.cli", "live", "--patch", str(patch),
                             "--web", "--no-audio", "--dry-run"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "encore: error:" in result.stderr and "[web] pin" in result.stderr
    assert "Traceback" not in result.stderr


# ---- frames (no server) ---------------------------------------------------------------------
def test_the_hello_frame_carries_every_control_of_the_osc_table() -> None:
    hello = frames.hello_frame("Set")
    assert [c["address"] for c in hello["controls"]] == list(TABLE.addresses)
    tempo = next(c for c in hello["controls"] if c["address"] == "/encore/tempo")
    assert tempo["ranges"] == [[40.0, 240.0]] and tempo["widget"] == "fader"
    assert tempo["lands"] == "bar"
    assert {c["widget"] for c in hello["controls"]} >= {"fader", "xy", "button", "toggle"}


def test_the_pad_point_is_the_offset_along_the_pads_directions() -> None:
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((16, 2)))[0].T  # (2, Z)
    anchor = rng.standard_normal(16)
    assert frames.pad_point(anchor, anchor, basis) == (0.5, 0.5)
    from engine.song.conductor import XY_REACH

    full = 2.0 * XY_REACH * math.sqrt(16)
    z = anchor + 0.25 * full * basis[0] - 0.1 * full * basis[1]  # as the pad tilts z
    assert frames.pad_point(z, anchor, basis) == pytest.approx((0.75, 0.4), abs=1e-4)
    assert frames.pad_point(anchor + 9 * full * basis[1], anchor, basis) == (0.5, 1.0)


def test_the_lyric_now_and_next_follow_the_beat() -> None:
    history = frames.StageHistory()
    for bar, text in ((4, "first line"), (6, "second line")):
        history.on_lyric({"bar": bar, "text": text, "syllables": [
            {"notes": [[60, bar * 4.0, 1.0]]}, {"notes": [[62, bar * 4.0 + 1, 2.0]]}]})
    assert history.lyric_now_next(10.0) == ("", "first line")
    assert history.lyric_now_next(16.5) == ("first line", "second line")
    assert history.lyric_now_next(30.0) == ("second line", "")


@pytest.mark.parametrize("message, tags", [
    ({"address": "/encore/tempo", "args": [128]}, "i"),
    ({"address": "/encore/tempo", "args": [128.5]}, "f"),
    ({"address": "/encore/xy", "args": [0.25, 1]}, "fi"),
    ({"address": "/encore/section/next", "args": []}, ""),
    ({"address": "/encore/lyrics/theme", "args": ["rain"]}, "s"),
])
def test_a_touch_becomes_the_osc_message_a_tablet_sends(message: dict, tags: str) -> None:
    datagram = server._osc_datagram(message)
    assert datagram == encode_message(message["address"], tags, message["args"])


@pytest.mark.parametrize("message", [
    {"address": 7}, {"address": "/encore/tempo", "args": 128},
    {"address": "/encore/tempo", "args": [[1]]}, {"address": "/encore/tempo", "args": [None]},
    {"address": "/encore/tempo", "args": [1e39]}, {"address": "/encore/tempo", "args": [2**40]},
    {"address": "/en\x00core", "args": []}, {"address": "/encore/x", "args": [1] * 9},
])
def test_what_cannot_be_an_osc_message_is_refused(message: dict) -> None:
    assert server._osc_datagram(message) is None


# ---- against a playing show -----------------------------------------------------------------
def test_a_touch_takes_the_tablets_path_and_every_page_sees_it(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with playing(tiny_model_dir, tmp_path) as show, aiohttp.ClientSession() as s:
            a, b = await let_in(s, show), await let_in(s, show)
            hello = await next_frame(a, "hello")
            assert len(hello["controls"]) == len(TABLE)
            state = await next_frame(b, "state")
            assert state["values"]["/encore/part/bass/mute"] == 0
            await a.send_str(json.dumps({"type": "osc", "address": "/encore/part/bass/mute",
                                         "args": [1]}))
            await a.send_str(json.dumps({"type": "osc", "address": "/encore/tempo",
                                         "args": [180]}))
            # the other page sees the change waiting for its bar line, then landed
            seen_pending = False
            for _ in range(200):
                state = await next_frame(b, "state")
                seen_pending |= any(p["address"] == "/encore/tempo" for p in state["pending"])
                if state["values"]["/encore/part/bass/mute"] == 1 and state["bpm"] == 180:
                    break
            else:
                pytest.fail("page b never saw the mute and the tempo")
            assert seen_pending, "the change was never shown waiting for the next bar"
            roll = await next_frame(b, "roll")
            assert roll["bars"] and "bass" in roll["bars"][-1]["notes"]
            assert show.web.dispatcher.stats["good"] == 2
            assert show.web.stats["malformed"] == 0

    asyncio.run(scenario())
    controls = [r for r in records(tmp_path) if r["type"] == "control"]
    assert [(c["address"], c["values"]) for c in controls] == [
        ("/encore/part/bass/mute", [1]), ("/encore/tempo", [180.0])]


def test_malformed_messages_are_counted_and_ignored(tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    junk = ["not json", "[1, 2]", json.dumps({"type": "dance"}),
            json.dumps({"type": "osc", "address": 5}),
            json.dumps({"type": "osc", "address": "/encore/tempo", "args": [1e39]})]
    refused_by_table = [json.dumps({"type": "osc", "address": "/encore/tempo", "args": [999]}),
                        json.dumps({"type": "osc", "address": "/encore/nope", "args": []})]

    async def scenario() -> None:
        async with playing(tiny_model_dir, tmp_path) as show, aiohttp.ClientSession() as s:
            ws = await let_in(s, show)
            await next_frame(ws, "state")
            for text in junk + refused_by_table:
                await ws.send_str(text)
            await ws.send_bytes(b"\xff\xfe not OSC")  # a binary message is an OSC datagram
            await ws.send_str(json.dumps({"type": "osc", "address": "/encore/walk/freeze",
                                          "args": [1]}))
            await until(lambda: show.web.dispatcher.stats["good"] == 1, what="the valid one")
            stats, commands = show.web.stats, show.web.dispatcher.stats
            assert stats["malformed"] == len(junk)
            assert commands["out_of_range"] == 1 and commands["unknown_address"] == 1
            assert commands["bad_parse"] == 1
            assert not ws.closed  # ignored, not fatal
            assert (await next_frame(ws, "state"))["started"]
            await until(lambda: show.health.commands_applied == 1, what="freeze landed")
            await state_where(ws, lambda f: f["values"]["/encore/walk/freeze"] == 1)

    asyncio.run(scenario())
    assert [r["target"] for r in records(tmp_path) if r["type"] == "control"] == ["walk.freeze"]


def test_no_pin_or_a_wrong_one_gets_nothing_and_guessing_is_locked_out(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    async def refused(ws: aiohttp.ClientWebSocketResponse) -> int:
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), \
            f"got {msg.type}: {str(msg.data)[:80]}"
        return ws.close_code

    async def scenario() -> None:
        async with playing(tiny_model_dir, tmp_path, host="0.0.0.0", pin="s3cret") as show, \
                aiohttp.ClientSession() as s:
            for pin in ("", "wrong", "s3cre", "S3CRET"):
                assert await refused(await let_in(s, show, pin)) == server.CLOSE_WRONG_PIN
            ws = await let_in(s, show, "s3cret")
            assert (await next_frame(ws, "hello"))["title"]
            await ws.close()
            assert await refused(await let_in(s, show, "nope")) == server.CLOSE_WRONG_PIN
            with pytest.raises(aiohttp.WSServerHandshakeError) as locked:  # 5 wrong: locked
                await let_in(s, show, "s3cret")
            assert locked.value.status == 429
            assert show.web.stats["wrong_pin"] == 5 and show.web.stats["pin_locked"] == 1
            assert show.web.dispatcher.stats["good"] == 0

    asyncio.run(scenario())


def test_a_sender_outside_the_allow_list_gets_nothing(tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    async def scenario() -> None:
        async with playing(tiny_model_dir, tmp_path, allow=["10.1.2.3"]) as show, \
                aiohttp.ClientSession() as s:
            for path in ("/", "/stage.js"):
                with pytest.raises(aiohttp.ClientError):
                    async with s.get(ws_url(show, path)) as response:
                        await response.read()
            with pytest.raises(aiohttp.ClientError):
                await let_in(s, show)
            # (the client tries a dropped GET twice)
            assert show.web.stats["not_allowed"] >= 3 and show.web.stats["pages"] == 0

    asyncio.run(scenario())


def test_other_sites_and_other_host_names_are_refused(tiny_model_dir: Path,
                                                      tmp_path: Path) -> None:
    async def scenario() -> None:
        async with playing(tiny_model_dir, tmp_path) as show, aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as hijack:
                await let_in(s, show, headers={"Origin": "http://evil.example"})
            assert hijack.value.status == 403
            async with s.get(ws_url(show, "/"), headers={"Host": "evil.example"}) as response:
                assert response.status == 421  # DNS rebinding: not our name
            async with s.get(ws_url(show, "/../../etc/passwd")) as response:
                assert response.status == 404
            async with s.get(ws_url(show, "/")) as response:
                assert response.status == 200
                assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
                assert "stage.js" in await response.text()
            ws = await let_in(s, show, headers={"Origin": ws_url(show, "").rstrip("/")})
            await next_frame(ws, "state")

    asyncio.run(scenario())


FLOOD = r"""
import asyncio, json, sys, aiohttp
async def main(url, n):
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(url)
        await ws.send_str(json.dumps({"type": "hello", "pin": ""}))
        msg = json.dumps({"type": "osc", "address": "/encore/walk/speed", "args": [0.5]})
        sent = 0
        try:
            for _ in range(n):
                await ws.send_str(msg)
                sent += 1
        except Exception:
            pass
        print(sent, flush=True)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_a_websocket_flood_is_cut_off_and_does_not_hold_the_loop(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    """A child process sends 50,000 touches as fast as it can. The show's loop goes on
    (bars pushed, an honest page fed), the excess is dropped unread and counted, and the
    flooding page is cut off."""
    lags: list[float] = []

    async def probe(stop: asyncio.Event) -> None:
        while not stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)

    async def scenario() -> None:
        async with playing(tiny_model_dir, tmp_path) as show, aiohttp.ClientSession() as s:
            honest = await let_in(s, show)
            await next_frame(honest, "state")
            stop = asyncio.Event()
            probing = asyncio.ensure_future(probe(stop))
            bars_before = show.health.bars_played
            flood = await asyncio.create_subprocess_exec(
                sys.executable, "-c", FLOOD, f"ws://127.0.0.1:{show.web.port}/ws", "50000",
                stdout=asyncio.subprocess.PIPE)
            await until(lambda: show.web.stats["dropped_flood"] == 1, timeout=60,
                        what="the flooding page cut off")
            out, _ = await asyncio.wait_for(flood.communicate(), 60)
            frames_seen = 0
            for _ in range(3):
                await next_frame(honest, "state")
                frames_seen += 1
            await until(lambda: show.health.bars_played >= bars_before + 2,
                        what="two more bars after the flood")
            stop.set()
            await probing
            stats, commands = show.web.stats, show.web.dispatcher.stats
            taken = commands["good"]
            print(f"flood: sent {out.decode().strip()}, taken {taken}, dropped unread "
                  f"{stats['flood_dropped']}, loop lag max {max(lags) * 1000:.1f} ms")
            assert stats["flood_dropped"] >= server.FLOOD_LIMIT
            assert taken < 50_000 - server.FLOOD_LIMIT
            assert frames_seen == 3 and not honest.closed

    asyncio.run(scenario())


def test_a_page_that_stops_reading_is_dropped_and_the_others_go_on(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A raw socket does the WebSocket handshake and the hello, then never reads: its
    frames pile up in the socket, the server drops it; a reading page is fed throughout."""
    monkeypatch.setattr(server, "MAX_UNSENT_BYTES", 64 * 1024)
    monkeypatch.setattr(server, "SLOW_CLIENT_S", 1.0)

    async def scenario() -> None:
        async with playing(tiny_model_dir, tmp_path) as show, aiohttp.ClientSession() as s:
            reader = await let_in(s, show)
            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect(("127.0.0.1", show.web.port))
            stalled.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            hello = json.dumps({"type": "hello", "pin": ""}).encode()
            mask = b"\x01\x02\x03\x04"
            stalled.sendall(bytes((0x81, 0x80 | len(hello))) + mask +
                            bytes(c ^ mask[i % 4] for i, c in enumerate(hello)))
            await until(lambda: show.web.stats["pages"] == 2, what="the stalled page let in")
            sent_before = show.web.stats["frames_sent"]
            await until(lambda: show.web.stats["dropped_slow"] == 1, timeout=120,
                        what="the stalled page dropped")
            stalled.close()
            for _ in range(3):
                await next_frame(reader, "state")
            assert show.web.stats["frames_sent"] > sent_before
            assert len(show.web.clients) == 1

    asyncio.run(scenario())


def test_the_pages_are_told_when_the_set_ends(tiny_model_dir: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            async with playing(tiny_model_dir, tmp_path) as show:
                ws = await let_in(s, show)
                await next_frame(ws, "state")
                url = ws_url(show, "/")
            msg = await ws.receive(timeout=10)
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=10)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, server.CLOSE_ENDED)
            with pytest.raises(aiohttp.ClientError):  # nothing listens any more
                async with s.get(url) as response:
                    await response.read()
            assert show.health.web["pages"] == 1

    asyncio.run(scenario())
