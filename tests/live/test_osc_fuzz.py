"""A real show under an OSC flood: thousands of malformed datagrams on its UDP port, a few
valid ones among them. The show keeps playing on the grid, only the valid messages
change anything, and every refusal is counted where the dispatcher says it counts it.

The show runs in this process (MIDI to a JACK port, no audio); a JACK client in a helper
process catches the MIDI (as in tests/live/test_show.py). The datagrams are thrown from
this process's event loop in bursts, so the kernel's receive buffer never overflows and
every datagram is read (``OscServer.stats["received"]`` says so); a heartbeat task
measures how long the loop was held.

How refusals count (``OscDispatcher.stats``): ``bad_parse``, ``too_many_elements`` and
``not_allowed`` once per datagram, nothing of it applied (a bundle with one broken element
is refused whole); ``unknown_address``, ``bad_types`` and ``out_of_range`` once per
message, and once per control an address pattern selects (``/encore/part/*/level 2.0``
is four ``out_of_range``); ``too_large`` (over 8192 bytes) and ``too_complex`` (an address
pattern too costly to match) once per datagram or pattern. The flood stays within the
sender's work budget here (the budget has tests of its own, in test_osc.py, and a
benchmark, benchmarks/bench_osc_flood.py), so every datagram is read and counted.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.live import osc_control
from engine.live.osc_control import encode_message
from engine.live.show import Show
from engine.patch import parse_patch

jack = pytest.importorskip("jack")

SEED = 20250501
BAD_DATAGRAMS = 3000
TEMPO = 240.0  # a bar a second
MS = 1_000_000
NS = 1_000_000_000
RX_NAME = "encore-fuzz-rx"
CHANNELS = {"melody": 1, "bass": 2, "drums": 10, "chords": 3}
REFUSALS = ("bad_parse", "unknown_address", "bad_types", "out_of_range", "not_allowed",
            "too_large", "too_many_elements", "too_complex")
BURST_DATAGRAMS = 32
BURST_BYTES = 48_000  # well under the socket's receive buffer (rmem_default 208 KiB)


# ---- the MIDI receiver (a JACK client in its own process) --------------------------------
_RECEIVER = r"""
import gc, sys, time, jack
sys.setswitchinterval(0.0002)
gc.disable()  # a collection in the process callback made it miss its 1.3 ms cycle
client = jack.Client(sys.argv[1], no_start_server=True)
port = client.midi_inports.register("in")
events, missed, expect = [], [0], [None]

@client.set_process_callback
def process(frames):
    now = time.monotonic_ns()
    base = client.last_frame_time
    if expect[0] is not None and base != expect[0]:
        missed[0] += 1
    expect[0] = base + frames
    for offset, data in port.incoming_midi_events():
        events.append((now, bytes(data)))

xruns = []

@client.set_xrun_callback  # safe here: no python-rtmidi in this process (see conftest.py)
def xrun(delay):
    xruns.append(time.monotonic_ns())

client.activate()
print("ready", flush=True)
sys.stdin.readline()
time.sleep(0.2)
print(f"missed {missed[0]}", *xruns)
for t, data in list(events):
    print(t, data.hex())
print(".", flush=True)
client.deactivate()
client.close()
"""


class Receiver:
    """``RX_NAME:in``; :meth:`finish` returns the (monotonic ns, bytes) it got."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _RECEIVER, RX_NAME],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        ready = self.process.stdout.readline()
        if ready.strip() != "ready":
            self.process.kill()
            pytest.fail(f"the JACK receiver did not start: {ready!r}")
        self.missed_cycles = 0
        self.xruns: list[int] = []  # monotonic ns of each xrun the server reported

    def finish(self) -> list[tuple[int, bytes]]:
        out, _ = self.process.communicate("done\n", timeout=20)
        lines = out.splitlines()
        self.missed_cycles = int(lines[0].split()[1])
        self.xruns = [int(t) for t in lines[0].split()[2:]]
        return [(int(t), bytes.fromhex(d)) for t, d in (line.split() for line in lines[1:-1])]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def receiver(jack_server: str) -> Iterator[Receiver]:
    rx = Receiver()
    try:
        yield rx
    finally:
        rx.close()


# ---- datagrams ---------------------------------------------------------------------------
def pad(raw: bytes) -> bytes:
    return raw + b"\x00" * (4 - len(raw) % 4)


def raw_message(address: str | bytes, tags: str | bytes, payload: bytes = b"") -> bytes:
    """A message by hand, for the type tags encode_message does not write (T F N I [ ])."""
    address = address.encode() if isinstance(address, str) else address
    tags = tags.encode() if isinstance(tags, str) else tags
    return pad(address) + pad(b"," + tags) + payload


def bundle(*elements: bytes, timetag: int = 1) -> bytes:
    return b"#bundle\x00" + struct.pack(">Q", timetag) + b"".join(
        struct.pack(">i", len(e)) + e for e in elements)


def nested(depth: int, inner: bytes) -> bytes:
    for _ in range(depth):
        inner = bundle(inner)
    return inner


FUTURE = (int(time.time()) + 2_208_988_800 + 3600) << 32  # an NTP timetag an hour ahead
FAR_FUTURE = 0xFFFF_FFFF_FFFF_FFFF
F = struct.Struct(">f")

# Well-formed messages a control refuses, with the count each adds.
REFUSED: list[tuple[bytes, Counter]] = [
    (encode_message("/encore/tempo", "f", [500.0]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "f", [39.99]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "f", [-1e30]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "i", [2**31 - 1]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "h", [2**62]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "f", [math.nan]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "f", [math.inf]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "f", [-math.inf]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "d", [math.nan]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "d", [1e300]), Counter(out_of_range=1)),
    (encode_message("/encore/walk/temperature", "f", [2.5]), Counter(out_of_range=1)),
    (encode_message("/encore/walk/speed", "f", [-0.1]), Counter(out_of_range=1)),
    (encode_message("/encore/part/bass/level", "f", [1.01]), Counter(out_of_range=1)),
    (encode_message("/encore/part/melody/mute", "i", [2]), Counter(out_of_range=1)),
    (encode_message("/encore/part/melody/mute", "f", [math.inf]), Counter(out_of_range=1)),
    (encode_message("/encore/walk/freeze", "i", [-1]), Counter(out_of_range=1)),
    (encode_message("/encore/xy", "ff", [1.5, 0.5]), Counter(out_of_range=1)),
    (encode_message("/encore/xy", "ff", [0.5, math.nan]), Counter(out_of_range=1)),
    (encode_message("/encore/master/level", "d", [-math.inf]), Counter(out_of_range=1)),
    (encode_message("/encore/panic", "f", [math.nan]), Counter(out_of_range=1)),
    (encode_message("/encore/form", "s", ["x" * 100]), Counter(out_of_range=1)),
    (encode_message("/encore/lyrics/theme", "s", ["\x01bell"]), Counter(out_of_range=1)),
    (encode_message("/encore/lyrics/theme", "s", [""]), Counter(out_of_range=1)),
    (encode_message("/encore/tempo", "s", ["fast"]), Counter(bad_types=1)),
    (encode_message("/encore/tempo", "b", [b"\x42\xf0\x00\x00"]), Counter(bad_types=1)),
    (encode_message("/encore/tempo", "ff", [120.0, 120.0]), Counter(bad_types=1)),
    (raw_message("/encore/tempo", ""), Counter(bad_types=1)),
    (pad(b"/encore/tempo"), Counter(bad_types=1)),  # no type tags at all: no argument
    (raw_message("/encore/tempo", "T"), Counter(bad_types=1)),
    (raw_message("/encore/tempo", "N"), Counter(bad_types=1)),
    (raw_message("/encore/tempo", "[f]", F.pack(120.0)), Counter(bad_types=1)),
    (raw_message("/encore/tempo", "[]"), Counter(bad_types=1)),
    (encode_message("/encore/part/drums/mute", "f", [0.5]), Counter(bad_types=1)),
    (encode_message("/encore/xy", "f", [0.5]), Counter(bad_types=1)),
    (encode_message("/encore/xy", "fs", [0.5, "y"]), Counter(bad_types=1)),
    (encode_message("/encore/status/bar", "s", ["12"]), Counter(bad_types=1)),  # read-only
    (encode_message("/encore/form", "f", [1.0]), Counter(bad_types=1)),
    (encode_message("/encore/walk/jump", "s", ["now"]), Counter(bad_types=1)),
    (encode_message("/encore/walk/jump", "ff", [1.0, 1.0]), Counter(bad_types=1)),
    (raw_message("/encore/walk/jump", "N"), Counter(bad_types=1)),
    (encode_message("/encore/nope", "f", [1.0]), Counter(unknown_address=1)),
    (encode_message("/1/fader1", "f", [0.5]), Counter(unknown_address=1)),
    (encode_message("/encore/tempo/", "f", [120.0]), Counter(unknown_address=1)),
    (encode_message("/encore/témpo", "f", [120.0]), Counter(unknown_address=1)),
    (encode_message("/encore/" + "a" * 8_000, "f", [1.0]), Counter(unknown_address=1)),
    (encode_message("/encore/" + "a" * 60_000, "f", [1.0]), Counter(too_large=1)),
    (encode_message("/encore/part/*/level", "f", [2.0]), Counter(out_of_range=4)),
    (encode_message("/encore/part/{melody,bass}/level", "f", [-1.0]), Counter(out_of_range=2)),
    (encode_message("/encore/part/*/mute", "i", [7]), Counter(out_of_range=4)),
    (encode_message("/encore/walk/[stw]*", "f", [9.0]), Counter(out_of_range=3)),
    (encode_message("/encore/*/level", "f", [5.0]), Counter(out_of_range=2)),
    (encode_message("/encore/part/?????/level", "f", [math.nan]), Counter(out_of_range=1)),
    (encode_message("/encore/part/*/level", "s", ["loud"]), Counter(bad_types=4)),
    (encode_message("/encore/nothing/*", "f", [1.0]), Counter(unknown_address=1)),
    (encode_message("/encore/[tempo", "f", [120.0]), Counter(unknown_address=1)),
    (encode_message("/encore/{tempo", "f", [120.0]), Counter(unknown_address=1)),
    (encode_message("/encore/" + "*" * 300, "f", [120.0]), Counter(too_complex=1)),
    (encode_message("/encore/{" + ",".join(f"a{n}" for n in range(70)) + "}", "f", [1.0]),
     Counter(too_complex=1)),  # 268 characters: over the 256 of a pattern
    (encode_message("/encore/{" + ",".join(f"a{n}" for n in range(60)) + "}", "f", [1.0]),
     Counter(unknown_address=1)),
    (encode_message("/*/*/*/*/*/*/*/*", "f", [1.0]), Counter(unknown_address=1)),
]
# Well-formed and harmless: a button let go.
RELEASES = [encode_message("/encore/panic", "f", [0.0]),
            raw_message("/encore/walk/jump", "F"), encode_message("/encore/walk/glide", "i", [0])]
# Well-formed messages, to be cut short.
WHOLE = [encode_message("/encore/tempo", "f", [120.0]),
         encode_message("/encore/xy", "ff", [0.25, 0.75]),
         encode_message("/encore/form", "s", ["a long form name"]),
         encode_message("/encore/part/bass/mute", "i", [1])]


def bad_datagram(rng: random.Random) -> tuple[str, bytes, Counter]:
    """One malformed or refused datagram: (kind, bytes, the refusals it must count)."""
    kind = rng.choice(["random bytes", "random bundle", "truncated", "bad type tags",
                       "refused message", "refused bundle", "future bundle", "huge bundle",
                       "deep bundle", "broken bundle", "oversized string", "release"])
    parse = Counter(bad_parse=1)
    if kind == "random bytes":
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 600)))
        first = rng.choice([b for b in range(256) if b not in b"/#"])  # never an address
        return kind, bytes([first]) + data, parse
    if kind == "random bundle":  # the first element's size cannot fit
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64) * 4))
        size = rng.choice([-4, 0, 3, len(junk) + 4, 2**31 - 1, -(2**31)])
        return kind, bundle(timetag=rng.getrandbits(64)) + struct.pack(">i", size) + junk, parse
    if kind == "truncated":
        whole = rng.choice(WHOLE + [bundle(*WHOLE)])
        cut = rng.choice([n for n in range(1, len(whole)) if n % 4])  # OSC sizes are 4k
        return kind, whole[:cut], parse
    if kind == "bad type tags":
        body = F.pack(120.0)
        return kind, rng.choice([
            raw_message("/encore/tempo", "x", body),               # unknown tag
            raw_message("/encore/tempo", "f[", body),              # [ without ]
            raw_message("/encore/tempo", "]f", body),              # ] before [
            pad(b"/encore/tempo") + pad(b"f") + body,              # no comma
            raw_message("/encore/tempo", b"\xff\xfe", body),       # not UTF-8
            raw_message("/encore/tempo", "f", body + b"\x00" * 4),  # bytes left over
            raw_message("/encore/tempo", "ff", body),              # argument missing
            raw_message("/encore/tempo", "s", b"fast"),            # string without its NUL
            raw_message("/encore/tempo", "b", struct.pack(">i", 1000) + body),  # blob too big
            raw_message("/encore/tempo", "b", struct.pack(">i", -4) + body),
            pad(b"encore/tempo") + pad(b",f") + body,              # no leading /
            b"/encore/tempo",                                      # no NUL at all
        ]), parse
    if kind == "refused message":
        data, counts = rng.choice(REFUSED)
        return kind, data, counts
    if kind in ("refused bundle", "future bundle"):
        picked = [rng.choice(REFUSED) for _ in range(rng.randrange(1, 12))]
        timetag = rng.choice([FUTURE, FAR_FUTURE, 0]) if kind == "future bundle" else 1
        data = bundle(*[m for m, _ in picked], timetag=timetag)
        if len(data) > 65_000:  # over what UDP carries
            data = bundle(picked[0][0], timetag=timetag)
            picked = picked[:1]
        if len(data) > 8192:
            return kind, data, Counter(too_large=1)
        return kind, data, sum((c for _, c in picked), Counter())
    if kind == "huge bundle":  # more than 128 elements, the valid tempo among them
        return kind, rng.choice([bundle(*[encode_message("/encore/tempo", "f", [100.0])] * 200),
                                 bundle(*[bundle()] * 200)]), Counter(too_many_elements=1)
    if kind == "deep bundle":  # nested 9 deep (8 allowed), a valid message inside
        return kind, nested(9, encode_message("/encore/tempo", "f", [100.0])), \
            Counter(too_many_elements=1)
    if kind == "broken bundle":  # valid messages, then one element whose size lies
        good = encode_message("/encore/part/bass/mute", "i", [1])
        return kind, bundle(good, good) + struct.pack(">i", 64) + good, parse
    if kind == "oversized string":
        size = rng.choice([65, 1000, 8000, 60_000])
        target = rng.choice(["/encore/form", "/encore/lyrics/theme"])
        data = encode_message(target, "s", ["w" * size])
        return kind, data, Counter(out_of_range=1) if len(data) <= 8192 else Counter(too_large=1)
    return kind, rng.choice(RELEASES), Counter()  # a release: not bad, not applied


# ---- the valid messages and what each must change ------------------------------------------
@dataclass(frozen=True)
class Valid:
    datagram: bytes
    changes: dict[str, Any]  # show.state() targets -> value after
    targets: tuple[str, ...]  # the control records it must log


VALID = [
    Valid(encode_message("/encore/tempo", "f", [180.0]), {"song.tempo": 180.0},
          ("song.tempo",)),
    Valid(encode_message("/encore/walk/temperature", "f", [0.9]), {"walk.temperature": 0.9},
          ("walk.temperature",)),
    Valid(encode_message("/encore/walk/wander", "i", [1]), {"walk.wander": 1.0},
          ("walk.wander",)),
    Valid(raw_message("/encore/part/bass/mute", "T"), {"parts.bass.mute": 1},
          ("parts.bass.mute",)),
    Valid(encode_message("/encore/part/{drums,chords}/level", "f", [0.25]),
          {"parts.drums.level": 0.25, "parts.chords.level": 0.25},
          ("parts.drums.level", "parts.chords.level")),
    Valid(encode_message("/encore/master/level", "d", [0.5]), {"master.level": 0.5},
          ("master.level",)),
    Valid(bundle(encode_message("/encore/walk/speed", "f", [0.125]), timetag=FUTURE),
          {"walk.step_size": 0.125}, ("walk.step_size",)),
    Valid(encode_message("/encore/voice/mute", "i", [1]), {"voice.mute": 1}, ("voice.mute",)),
    Valid(encode_message("/encore/xy", "ff", [0.25, 0.75]), {}, ("walk.xy",)),
    Valid(raw_message("/encore/hello", ""), {}, ()),  # answered with the state, nothing set
]
# what a tablet outside [osc] allow sends: all refused, whatever they say
INTRUDER = [encode_message("/encore/tempo", "f", [60.0]),
            encode_message("/encore/part/*/mute", "i", [1]),
            encode_message("/encore/master/level", "f", [0.0])]


# ---- the show ----------------------------------------------------------------------------
def patch_text() -> str:
    # rest_in = []: every part plays in every section (the default lead rests in the
    # intro), so the notes expected are the bars' written ones from bar 0
    parts = "".join(f'[parts.{part}]\nchannel = {channel}\nport = "{RX_NAME}"\n'
                    f'rest_in = []\n\n'
                    for part, channel in CHANNELS.items())
    return f"""
[song]
tempo = {TEMPO}
model = "tiny_trio"

[humanize]
timing_ms = 0.0

[midi]
backend = "jack"

[live]
internal_synth = false

[lyrics]
source = "off"

[osc]
port = 0
allow = ["127.0.0.1"]

{parts}"""


@dataclass
class Pushed:
    bar: int
    mute: dict[str, bool]
    notes: dict[str, list[tuple[int, int]]]  # part -> [(start step, pitch)]


def snapshot(show: Show) -> dict[str, Any]:
    """Everything a tablet may change: the state the show echoes (labels aside), the walk,
    the x/y pad, the mix, the tempo map and the commands still waiting."""
    conductor = show.conductor
    state = {k: v for k, v in show.state().items() if not k.startswith("status.")}
    return state | {"walk": conductor.walker.settings, "frozen": conductor.walker.frozen,
                    "xy": conductor.xy, "mute": dict(show.mix.mute),
                    "level": dict(show.mix.level), "master": show.mix.master,
                    "tempo map": [(s.bar, s.bpm) for s in show.clock.tempo_map],
                    "pending": list(show.pending)}


async def throw(datagrams: list[tuple[socket.socket, bytes]], show: Show,
                task: asyncio.Task) -> None:
    """Send in bursts; after each, wait until the show has read every datagram sent."""
    server = show.osc_server
    address = server.address
    base = server.stats["received"]
    sent = burst = burst_bytes = 0
    for sock, data in datagrams:
        sock.sendto(data, address)
        sent += 1
        burst += 1
        burst_bytes += len(data)
        if burst >= BURST_DATAGRAMS or burst_bytes >= BURST_BYTES or len(data) > 8000:
            await caught_up(server, base + sent, task)
            burst = burst_bytes = 0
    await caught_up(server, base + sent, task)


async def caught_up(server, count: int, task: asyncio.Task, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while server.stats["received"] < count:
        if task.done():
            task.result()  # the show's exception, if it raised
            pytest.fail("the show stopped under the flood")
        if time.monotonic() > deadline:
            pytest.fail(f"the show read {server.stats['received']} of {count} datagrams in "
                        f"{timeout} s: lost in the kernel, or the loop is stuck")
        await asyncio.sleep(0.0005)


async def heartbeat(lags: list[float], stop: asyncio.Event) -> None:
    """How late the loop wakes a 2 ms sleep: how long something held it."""
    while not stop.is_set():
        began = time.monotonic()
        await asyncio.sleep(0.002)
        lags.append(time.monotonic() - began - 0.002)


def test_an_osc_flood_changes_only_what_the_valid_messages_say(
        receiver: Receiver, tiny_model_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # every datagram read and counted: the flood (~0.3 M work units) within the budgets
    for name in ("SENDER_RATE", "SENDER_BURST", "ALL_RATE", "ALL_BURST"):
        monkeypatch.setattr(osc_control, name, 10**7)
    rng = random.Random(SEED)
    bad = [bad_datagram(rng) for _ in range(BAD_DATAGRAMS)]
    expected = sum((counts for _, _, counts in bad), Counter())
    kinds = Counter(kind for kind, _, _ in bad)
    releases = kinds["release"]
    patch = parse_patch(patch_text())
    pushed: list[Pushed] = []

    def on_bar(show: Show, bar) -> None:
        pushed.append(Pushed(show.bar_index, dict(show.mix.mute),
                             {p: [(n.start, n.pitch) for n in notes]
                              for p, notes in bar.parts.items()}))

    show = Show(patch, model_dir=tiny_model_dir, record_dir=tmp_path / "set", audio=False,
                osc=True, bars=None, on_bar=on_bar)
    seen: dict[str, Any] = {}
    lags: list[float] = []

    async def scenario() -> None:
        task = asyncio.ensure_future(show.run())
        deadline = time.monotonic() + 60
        while show.bar_index < 1:
            assert not task.done() and time.monotonic() < deadline, "the show did not start"
            await asyncio.sleep(0.005)
        seen["before"] = snapshot(show)
        seen["bar before"] = show.bar_index
        # the bad ones first, alone: nothing may change
        stop = asyncio.Event()
        beat = asyncio.ensure_future(heartbeat(lags, stop))
        fuzzer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        intruder.bind(("127.0.0.2", 0))  # loopback, but not in [osc] allow
        try:
            half = len(bad) // 2
            flood = [(fuzzer, d) for _, d, _ in bad[:half]] + [(intruder, d) for d in INTRUDER]
            began = time.monotonic()
            await throw(flood, show, task)
            await asyncio.sleep(1.2 * 4 * 60 / TEMPO)  # past a bar line: bar commands land
            seen["after bad"] = snapshot(show)
            # the rest, the valid ones at random places among them
            rest = [(fuzzer, d) for _, d, _ in bad[half:]]
            for valid in VALID:
                rest.insert(rng.randrange(len(rest) + 1), (fuzzer, valid.datagram))
            await throw(rest, show, task)
            seen["flood seconds"] = time.monotonic() - began
            seen["bar flood"] = show.bar_index
            await asyncio.sleep(2.2 * 4 * 60 / TEMPO)  # the tempo change has landed
            seen["after"] = snapshot(show)
        finally:
            fuzzer.close()
            intruder.close()
            stop.set()
            await beat
        show.bars = show.bar_index + 2  # one more bar, then the show ends on a bar line
        await task

    asyncio.run(scenario())
    events = receiver.finish()
    stats = show.dispatcher.stats
    counted = {key: stats[key] for key in REFUSALS}
    print(f"\nthrew {len(bad)} bad datagrams ({dict(kinds)}) and {len(INTRUDER)} from outside "
          f"the allow list, {len(VALID)} valid, in {seen['flood seconds']:.2f} s; counted "
          f"{ {k: v for k, v in counted.items() if v} }, good {stats['good']}, released "
          f"{stats['released']}; loop held at most {max(lags) * 1000:.1f} ms "
          f"(p99 {sorted(lags)[int(len(lags) * 0.99)] * 1000:.1f} ms)")

    # every datagram was read, every refusal counted where it should be
    assert show.osc_server.stats["received"] == len(bad) + len(INTRUDER) + len(VALID)
    assert counted == {key: expected[key] for key in REFUSALS} | {
        "not_allowed": len(INTRUDER)}
    assert stats["over_budget"] == 0
    assert stats["good"] == sum(max(1, len(v.targets)) for v in VALID)
    assert stats["released"] == releases
    assert stats["apply_errors"] == stats["internal_errors"] == stats["feedback_errors"] == 0

    # the bad ones changed nothing
    assert seen["after bad"] == seen["before"]
    # the valid ones changed exactly what they say, and were logged as applied
    want = dict(seen["before"])
    for valid in VALID:
        want |= valid.changes
    after = seen["after"]
    walk = after.pop("walk")
    assert (walk.temperature, walk.wander, walk.step_size) == (0.9, 1.0, 0.125)
    assert after.pop("xy") == (0.25, 0.75)
    assert after.pop("mute") == {p: p == "bass" for p in CHANNELS}
    assert after.pop("level") == {"melody": 1.0, "bass": 1.0, "drums": 0.25, "chords": 0.25}
    assert after.pop("master") == 0.5
    tempo_map = after.pop("tempo map")
    assert tempo_map[0] == (0, TEMPO) and tempo_map[1][1] == 180.0 and len(tempo_map) == 2
    assert seen["bar before"] < tempo_map[1][0] <= seen["bar flood"] + 1
    for key in ("walk", "xy", "mute", "level", "master", "tempo map"):
        want.pop(key)
    assert after == want
    lines = (tmp_path / "set" / "song.jsonl").read_text().splitlines()
    controls = [r for r in map(json.loads, lines) if r["type"] == "control"]
    assert Counter(r["target"] for r in controls) == Counter(
        t for v in VALID for t in v.targets)
    assert show.health.commands_applied == len(controls)

    # the music went on: every bar pushed before its line, every note on the wire, on time
    assert [p.bar for p in pushed] == list(range(len(pushed)))
    assert show.health.push_late_ms_max == 0.0, "a bar was pushed after its bar line"
    # How long the loop was held is printed above, not asserted: on a loaded machine the
    # loop is held ~100 ms with no OSC at all (benchmarks/bench_osc_flood.py measures it
    # beside a control run). What the flood must not do is make the music late, below.
    assert_on_the_grid(show, pushed, events, receiver)


def assert_on_the_grid(show: Show, pushed: list[Pushed], events: list[tuple[int, bytes]],
                       receiver: Receiver) -> None:
    """The receiver got exactly the note-ons the pushed bars held, each at its grid time
    (under the tempo map the valid tempo message changed)."""
    clock = show.clock
    want: dict[tuple[int, int], list[int]] = {}
    for bar in pushed:
        for part, notes in bar.notes.items():
            if not bar.mute.get(part, False):
                for start, pitch in notes:
                    want.setdefault((CHANNELS[part] - 1, pitch), []).append(
                        clock.step_to_ns(bar.bar, start))
    got: dict[tuple[int, int], list[int]] = {}
    for t_ns, data in events:
        if len(data) == 3 and data[0] & 0xF0 == 0x90 and data[2] > 0:
            got.setdefault((data[0] & 0x0F, data[1]), []).append(t_ns)
    try:
        wrong = {k: (len(want.get(k, [])), len(got.get(k, []))) for k in want | got
                 if len(want.get(k, [])) != len(got.get(k, []))}
        if wrong:  # say when: a whole step missing at one moment is a JACK cycle lost
            first = clock.tempo_map[0].start_ns
            missing = {k: [round((w - first) / MS) for w in want.get(k, [])
                           if not any(abs(g - w) < 30 * MS for g in got.get(k, []))]
                       for k in wrong}
            raise AssertionError(
                f"note-ons (expected, received) differ: {wrong}; the unmatched ones at (ms "
                f"from bar 0) {missing}; the sender: {show.sender.stats()}")
        errors = sorted(abs(g - w) for k in want
                        for w, g in zip(sorted(want[k]), sorted(got[k]), strict=True))
        assert statistics.median(errors) <= 5 * MS, f"median error {statistics.median(errors)}"
        assert errors[-1] <= 30 * MS, f"worst error {errors[-1] / MS:.1f} ms"
    except AssertionError as error:
        if receiver.missed_cycles or receiver.xruns:  # JACK drops MIDI in a missed cycle
            pytest.xfail(f"the JACK receiver missed {receiver.missed_cycles} cycle(s), the "
                         f"server reported {len(receiver.xruns)} xrun(s): {error}")
        late = show.sender.stats()["late"]
        if late and str(error).startswith(("median error", "worst error")):  # timing only
            pytest.xfail(f"the MIDI sender sent {late} message(s) late (over 3 ms): the "
                         f"machine held its thread, so the grid cannot be judged: {error}")
        raise



def test_a_fader_flood_lands_as_the_last_value_per_landing_point(
        receiver: Receiver, tiny_model_dir: Path, tmp_path: Path) -> None:
    """300 datagrams moving the bass level (lands on the next beat) and 300 moving the
    master level (lands now) reach the log as a few records: one per landing point for
    the bass, one per look of the loop for the master, and the last values land."""
    patch = parse_patch(patch_text())
    show = Show(patch, model_dir=tiny_model_dir, record_dir=tmp_path / "set", audio=False,
                osc=True, bars=None)
    seen: dict[str, float] = {}

    async def scenario() -> None:
        task = asyncio.ensure_future(show.run())
        deadline = time.monotonic() + 60
        while show.bar_index < 1:
            assert not task.done() and time.monotonic() < deadline, "the show did not start"
            await asyncio.sleep(0.005)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tablet:
            seen["began"] = time.monotonic()
            for n in range(300):
                tablet.sendto(encode_message("/encore/part/bass/level", "f", [n / 299]),
                              show.osc_server.address)
                tablet.sendto(encode_message("/encore/master/level", "f", [1 - n / 299]),
                              show.osc_server.address)
                await asyncio.sleep(0.001)
            seen["sent"] = time.monotonic()
            await caught_up(show.osc_server, 600, task)
        await asyncio.sleep(2 * 60 / TEMPO)  # past the next beat: the last level lands
        seen["landed"] = time.monotonic()
        show.bars = show.bar_index + 2
        await task

    asyncio.run(scenario())
    lines = (tmp_path / "set" / "song.jsonl").read_text().splitlines()
    controls = [r for r in map(json.loads, lines) if r["type"] == "control"]
    bass = [r for r in controls if r["target"] == "parts.bass.level"]
    master = [r for r in controls if r["target"] == "master.level"]
    stats = show.dispatcher.stats
    beats = (seen["landed"] - seen["began"]) * TEMPO / 60
    looks = (seen["landed"] - seen["began"]) / osc_control.DRAIN_INTERVAL_S
    print(f"\n600 datagrams in {seen['sent'] - seen['began']:.2f} s: {len(bass)} bass level "
          f"records ({beats:.1f} beats), {len(master)} master level records; coalesced "
          f"{stats['coalesced']} on the way in, {show.health.commands_coalesced} waiting")
    assert stats["good"] == 600 and stats["internal_errors"] == 0
    assert 1 <= len(bass) <= beats + 2
    assert 1 <= len(master) <= looks + 2
    assert bass[-1]["values"] == [1.0] and master[-1]["values"] == [0.0]
    assert show.mix.level["bass"] == 1.0 and show.mix.master == 0.0
    assert show.health.commands_applied == len(controls)
    assert stats["coalesced"] + show.health.commands_coalesced == 600 - len(controls)
