"""OSC control: raw datagrams in, validated commands out, the state echoed back.

Datagrams are byte literals built by hand (address NUL-padded to 4 bytes, then the type
tags, then big-endian arguments) or by python-osc's builders, an independent encoder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import json
import math
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from engine.live.osc_control import (
    MAX_CLIENTS,
    REPLY_BURST,
    REPLY_BURST_ALL,
    REPLY_RATE,
    REPLY_RATE_ALL,
    Command,
    Message,
    OscDispatcher,
    OscParseError,
    OscServer,
    OscSettings,
    encode_message,
    feedback_messages,
    parse_datagram,
)
from engine.live.osc_table import (
    PARTS,
    TABLE,
    CommandError,
    Control,
    OscTable,
    address_matches,
    osc_map_markdown,
    osc_table_json,
)

SENDER = ("192.168.1.20", 50000)
NOW_NS = 123_456_789

# ---- hand-built datagrams -----------------------------------------------------------------
TEMPO_120 = b"/encore/tempo\x00\x00\x00" b",f\x00\x00" b"\x42\xf0\x00\x00"  # 120.0 as float32
TEMPO_INT_96 = b"/encore/tempo\x00\x00\x00" b",i\x00\x00" b"\x00\x00\x00\x60"
TEMPO_300 = b"/encore/tempo\x00\x00\x00" b",f\x00\x00" b"\x43\x96\x00\x00"
TEMPO_NAN = b"/encore/tempo\x00\x00\x00" b",f\x00\x00" b"\x7f\xc0\x00\x00"
TEMPO_INF = b"/encore/tempo\x00\x00\x00" b",f\x00\x00" b"\x7f\x80\x00\x00"
TEMPO_DOUBLE_INF = b"/encore/tempo\x00\x00\x00" b",d\x00\x00" b"\x7f\xf0" + bytes(6)
TEMPO_STRING = b"/encore/tempo\x00\x00\x00" b",s\x00\x00" b"fast\x00\x00\x00\x00"
TEMPO_TWO = b"/encore/tempo\x00\x00\x00" b",ff\x00" b"\x42\xf0\x00\x00" b"\x42\xf0\x00\x00"
TEMPO_NONE = b"/encore/tempo\x00\x00\x00" b",\x00\x00\x00"
TEMPO_ARRAY = b"/encore/tempo\x00\x00\x00" b",[f]\x00\x00\x00\x00" b"\x42\xf0\x00\x00"
TEMPO_BAD_TAG = b"/encore/tempo\x00\x00\x00" b",x\x00\x00" b"\x42\xf0\x00\x00"
TEMPO_NO_COMMA = b"/encore/tempo\x00\x00\x00" b"f\x00\x00\x00" b"\x42\xf0\x00\x00"
XY = b"/encore/xy\x00\x00" b",ff\x00" b"\x3e\x80\x00\x00" b"\x3f\x40\x00\x00"  # 0.25, 0.75
XY_ONE = b"/encore/xy\x00\x00" b",f\x00\x00" b"\x3e\x80\x00\x00"
PANIC_PRESS = b"/encore/panic\x00\x00\x00" b",f\x00\x00" b"\x3f\x80\x00\x00"  # 1.0
PANIC_RELEASE = b"/encore/panic\x00\x00\x00" b",f\x00\x00" b"\x00\x00\x00\x00"  # 0.0
PANIC_BARE = b"/encore/panic\x00\x00\x00" b",\x00\x00\x00"
PANIC_NO_TAGS = b"/encore/panic\x00\x00\x00"  # very old senders: no type tag string
MUTE_BASS_1F = b"/encore/part/bass/mute\x00\x00" b",f\x00\x00" b"\x3f\x80\x00\x00"
MUTE_BASS_0I = b"/encore/part/bass/mute\x00\x00" b",i\x00\x00" b"\x00\x00\x00\x00"
MUTE_BASS_T = b"/encore/part/bass/mute\x00\x00" b",T\x00\x00"
MUTE_BASS_HALF = b"/encore/part/bass/mute\x00\x00" b",f\x00\x00" b"\x3f\x00\x00\x00"
FORM_LONG = b"/encore/form\x00\x00\x00\x00" b",s\x00\x00" b"long\x00\x00\x00\x00"
FORM_EMPTY = b"/encore/form\x00\x00\x00\x00" b",s\x00\x00" b"\x00\x00\x00\x00"
TOUCHOSC_FADER = b"/1/fader1\x00\x00\x00" b",f\x00\x00" b"\x3f\x00\x00\x00"
LABEL_BAR = b"/encore/status/bar\x00\x00" b",s\x00\x00" b"12\x00\x00"
NOT_SLASH = b"encore\x00\x00" b",f\x00\x00" b"\x3f\x00\x00\x00"
STATUS = b"/encore/status\x00\x00" b",\x00\x00\x00"
HELLO = b"/encore/hello\x00\x00\x00" b",\x00\x00\x00"


def bundle(*elements: bytes, timetag: bytes = b"\x00\x00\x00\x00\x00\x00\x00\x01") -> bytes:
    """A bundle by hand: "#bundle", the timetag, then each element with its int32 size."""
    return b"#bundle\x00" + timetag + b"".join(
        struct.pack(">i", len(e)) + e for e in elements)


def ntp_timetag(unix_seconds: float) -> bytes:
    seconds = int(unix_seconds) + 2_208_988_800  # NTP counts from 1900
    return struct.pack(">II", seconds, 0)


def make(**kwargs) -> tuple[OscDispatcher, list[Command]]:
    applied: list[Command] = []
    return OscDispatcher(TABLE, applied.append, now_ns=lambda: NOW_NS, **kwargs), applied


def counts(d: OscDispatcher) -> dict[str, int]:
    return {k: v for k, v in d.stats.items() if v}


def valid(command: Command) -> bool:
    """Whether a command fits the table, checked here without the table's own code."""
    control = TABLE.get(command.address)
    if control is None or control.widget == "label" or control.replies:
        return False
    if (command.target, command.lands) != (control.target, control.lands):
        return False
    if command.received_ns != NOW_NS:
        return False
    if control.widget == "button":
        return command.values == ()
    if len(command.values) != len(control.types):
        return False
    for tag, value, bounds in zip(control.types, command.values, control.ranges, strict=True):
        if tag == "s":
            ok = type(value) is str and 0 < len(value) <= 64 and value.isprintable()
        else:
            ok = (type(value) is {"f": float, "i": int}[tag] and math.isfinite(value)
                  and bounds[0] <= value <= bounds[1])
        if not ok:
            return False
    return True


# ---- single messages ------------------------------------------------------------------
@pytest.mark.parametrize("datagram, target, values", [
    (TEMPO_120, "song.tempo", (120.0,)),
    (TEMPO_INT_96, "song.tempo", (96.0,)),
    (XY, "walk.xy", (0.25, 0.75)),
    (MUTE_BASS_1F, "parts.bass.mute", (1,)),
    (MUTE_BASS_0I, "parts.bass.mute", (0,)),
    (MUTE_BASS_T, "parts.bass.mute", (1,)),
    (FORM_LONG, "form", ("long",)),
    (PANIC_PRESS, "panic", ()),
    (PANIC_BARE, "panic", ()),
    (PANIC_NO_TAGS, "panic", ()),
])
def test_a_valid_message_becomes_one_command(datagram, target, values):
    d, applied = make()
    assert d.handle_datagram(datagram, SENDER) == []
    control = next(c for c in TABLE if c.target == target)
    assert applied == [Command(target, values, control.lands, control.address, NOW_NS)]
    assert [type(v) for v in applied[0].values] == [type(v) for v in values]  # 96 -> 96.0
    assert counts(d) == {"good": 1}
    assert d.clients == (SENDER,)


def test_floats_come_back_as_the_float32_that_was_sent_in_short():
    d, applied = make()
    d.handle_datagram(encode_message("/encore/walk/temperature", "f", [0.3]), SENDER)
    assert applied[0].values == (0.3,)  # not 0.30000001192092896
    assert applied[0].lands == "bar"
    d.handle_datagram(encode_message("/encore/part/drums/level", "f", [0.7]), SENDER)
    assert applied[1] == Command("parts.drums.level", (0.7,), "beat",
                                 "/encore/part/drums/level", NOW_NS)


def test_a_button_acts_on_press_only():
    d, applied = make()
    for datagram in (PANIC_PRESS, PANIC_RELEASE, PANIC_BARE):
        d.handle_datagram(datagram, SENDER)
    assert [c.target for c in applied] == ["panic", "panic"]
    assert applied[0].lands == "now"
    assert counts(d) == {"good": 2, "released": 1}


@pytest.mark.parametrize("datagram, reason", [
    (TEMPO_300, "out_of_range"),
    (TEMPO_NAN, "out_of_range"),
    (TEMPO_INF, "out_of_range"),
    (TEMPO_DOUBLE_INF, "out_of_range"),
    (FORM_EMPTY, "out_of_range"),
    (TEMPO_STRING, "bad_types"),
    (TEMPO_TWO, "bad_types"),
    (TEMPO_NONE, "bad_types"),
    (TEMPO_ARRAY, "bad_types"),
    (XY_ONE, "bad_types"),
    (MUTE_BASS_HALF, "bad_types"),
    (LABEL_BAR, "bad_types"),
    (TOUCHOSC_FADER, "unknown_address"),
    (b"/encore/nope\x00\x00\x00\x00,\x00\x00\x00", "unknown_address"),
    (TEMPO_120[:-4], "bad_parse"),           # the float is missing
    (TEMPO_120[:-2], "bad_parse"),           # not a multiple of 4 bytes
    (TEMPO_120 + bytes(4), "bad_parse"),     # bytes left after the arguments
    (TEMPO_BAD_TAG, "bad_parse"),
    (TEMPO_NO_COMMA, "bad_parse"),
    (NOT_SLASH, "bad_parse"),
    (b"", "bad_parse"),
    (b"/encore/tempo", "bad_parse"),         # no NUL
    (b"/encore/form\x00\x00\x00\x00,s\x00\x00\xff\xfe\x00\x00", "bad_parse"),  # not UTF-8
    (b"/encore/tempo\x00\x00\x00,[f\x00" b"\x42\xf0\x00\x00", "bad_parse"),    # [ without ]
])
def test_refused_messages_are_counted_and_not_applied(datagram, reason):
    d, applied = make()
    assert d.handle_datagram(datagram, SENDER) == []
    assert applied == []
    assert counts(d) == {reason: 1}
    assert len(d.problems) == 1


def test_refusals_say_what_came_and_what_is_expected():
    d, _ = make()
    d.handle_datagram(TEMPO_300, SENDER)
    d.handle_datagram(TEMPO_STRING, SENDER)
    d.handle_datagram(TOUCHOSC_FADER, SENDER)
    assert list(d.problems) == [
        "from 192.168.1.20:50000: /encore/tempo = 300 is out of range 40..240; send a value "
        "between them",
        "from 192.168.1.20:50000: /encore/tempo must be a number, got 'fast' (string)",
        "from 192.168.1.20:50000: unknown address /1/fader1; `encore osc-map` lists them",
    ]


def test_address_patterns_reach_every_matching_control():
    d, applied = make()
    d.handle_datagram(encode_message("/encore/part/*/mute", "i", [1]), SENDER)
    assert [c.target for c in applied] == [f"parts.{p}.mute" for p in PARTS]
    assert all(c.values == (1,) for c in applied)
    applied.clear()
    d.handle_datagram(encode_message("/encore/part/{bass,drums}/level", "f", [0.5]), SENDER)
    assert [c.address for c in applied] == ["/encore/part/bass/level",
                                           "/encore/part/drums/level"]
    assert counts(d) == {"good": 6}
    d.handle_datagram(encode_message("/encore/nothing/*", "f", [0.5]), SENDER)
    assert d.stats["unknown_address"] == 1


# ---- bundles --------------------------------------------------------------------------
def test_a_bundle_applies_its_messages_in_order():
    d, applied = make()
    d.handle_datagram(bundle(TEMPO_120, XY, PANIC_BARE), SENDER)
    assert [c.target for c in applied] == ["song.tempo", "walk.xy", "panic"]
    assert {c.received_ns for c in applied} == {NOW_NS}


def test_nested_bundles_are_flattened():
    d, applied = make()
    d.handle_datagram(bundle(TEMPO_120, bundle(XY, bundle(FORM_LONG)), PANIC_BARE), SENDER)
    assert [c.target for c in applied] == ["song.tempo", "walk.xy", "form", "panic"]
    d.handle_datagram(bundle(), SENDER)  # an empty bundle is fine and does nothing
    assert counts(d) == {"good": 4}


def test_a_bundle_for_the_future_lands_per_the_table_without_waiting():
    d, applied = make()
    later = bundle(TEMPO_120, timetag=ntp_timetag(time.time() + 3600))
    builder = OscBundleBuilder(time.time() + 3600)  # python-osc's own, an hour ahead
    builder.add_content(OscMessageBuilder("/encore/walk/jump").build())
    started = time.perf_counter()
    d.handle_datagram(later, SENDER)
    d.handle_datagram(builder.build().dgram, SENDER)
    assert time.perf_counter() - started < 0.05
    assert [(c.target, c.lands) for c in applied] == [("song.tempo", "bar"),
                                                     ("walk.jump", "bar")]


def test_one_bad_message_in_a_bundle_does_not_stop_the_others():
    d, applied = make()
    d.handle_datagram(bundle(TEMPO_300, XY, TOUCHOSC_FADER), SENDER)
    assert [c.target for c in applied] == ["walk.xy"]
    assert counts(d) == {"good": 1, "out_of_range": 1, "unknown_address": 1}


@pytest.mark.parametrize("datagram, reason", [
    (bundle(*[PANIC_BARE] * 200), "too_many_elements"),
    (bundle(*[bundle()] * 200), "too_many_elements"),
    (bundle(bundle(bundle(bundle(bundle(bundle(bundle(bundle(bundle(TEMPO_120))))))))),
     "too_many_elements"),  # 9 deep
    (bundle(TEMPO_120) + bytes(2), "bad_parse"),
    (bundle(TEMPO_120)[:-4], "bad_parse"),                         # element runs past the end
    (b"#bundle\x00" + bytes(8) + b"\xff\xff\xff\xfc" + TEMPO_120, "bad_parse"),  # size -4
    (b"#bundle\x00" + bytes(8) + struct.pack(">i", 0), "bad_parse"),
    (b"#bundle\x00" + bytes(4), "bad_parse"),                      # no room for the timetag
    (bundle(TEMPO_120 + bytes(4)), "bad_parse"),
    (bytes(70_000), "too_large"),
])
def test_malformed_or_oversized_bundles_are_refused_whole(datagram, reason):
    d, applied = make()
    started = time.perf_counter()
    assert d.handle_datagram(datagram, SENDER) == []
    assert time.perf_counter() - started < 0.05
    assert applied == []
    assert counts(d) == {reason: 1}
    assert d.clients == ()


def test_limits_are_settings_of_the_dispatcher():
    d, applied = make(max_elements=3, max_datagram=100)
    d.handle_datagram(bundle(TEMPO_120, XY), SENDER)  # 3 elements (the bundle, 2), 68 bytes
    d.handle_datagram(bundle(TEMPO_120, XY, PANIC_BARE), SENDER)  # 4 elements
    d.handle_datagram(bundle(*[TEMPO_120] * 4), SENDER)  # 128 bytes
    assert counts(d) == {"good": 2, "too_many_elements": 1, "too_large": 1}


# ---- allow list, clients, replies ----------------------------------------------------
def test_the_allow_list_drops_other_senders():
    d, applied = make(allow=("192.168.1.0/24", "10.0.0.7"))
    d.handle_datagram(TEMPO_120, ("192.168.1.20", 9000))
    d.handle_datagram(TEMPO_120, ("10.0.0.7", 9000))
    d.handle_datagram(TEMPO_120, ("::ffff:10.0.0.7", 9000))
    d.handle_datagram(TEMPO_120, ("10.0.0.8", 9000))
    d.handle_datagram(TEMPO_120, ("192.168.2.20", 9000))
    d.handle_datagram(TEMPO_120, ("not an address", 9000))
    assert len(applied) == 3
    assert counts(d) == {"good": 3, "not_allowed": 3}
    assert all(host.startswith(("192.168.1.", "10.0.0.7", "::ffff:")) for host, _ in d.clients)


def test_an_empty_allow_list_allows_everyone():
    d, applied = make()
    d.handle_datagram(TEMPO_120, ("203.0.113.9", 1))
    assert len(applied) == 1


def test_clients_are_bounded_least_recently_heard_from_dropped_first():
    d, _ = make(max_clients=2)
    for port in (1, 2, 3, 2):
        d.handle_datagram(HELLO, ("10.0.0.1", port))
    assert d.clients == (("10.0.0.1", 3), ("10.0.0.1", 2))
    d.handle_datagram(TEMPO_120, ("10.0.0.9", 9))  # any valid message registers
    assert d.clients[-1] == ("10.0.0.9", 9)
    for refused in (b"junk", TOUCHOSC_FADER, TEMPO_300):  # junk and refused ones do not
        d.handle_datagram(refused, ("10.0.0.8", 8))
    assert ("10.0.0.8", 8) not in d.clients


def test_reply_port_sends_feedback_to_the_tablets_listening_port():
    d, _ = make(reply_port=9001)
    d.handle_datagram(HELLO, ("10.0.0.1", 54321))
    assert d.clients == (("10.0.0.1", 9001),)
    assert d.reply_address(("10.0.0.1", 54321)) == ("10.0.0.1", 9001)


STATE = {
    "song.tempo": 112.0, "walk.step_size": 0.12, "walk.temperature": 0.5, "walk.wander": 0.3,
    "walk.freeze": False, "walk.xy": (0.5, 0.25), "form": "standard",
    **{f"parts.{p}.mute": p == "drums" for p in PARTS},
    **{f"parts.{p}.level": 1.0 for p in PARTS},
    "master.level": 0.8,
    "status.bar": 17, "status.section": "chorus", "status.health": "ok",
    "something.else": object(),  # not in the table: ignored
}


def decoded(messages: list[bytes]) -> dict[str, list]:
    """Address -> arguments, decoded by python-osc."""
    out = {}
    for raw in messages:
        message = OscMessage(raw)
        out[message.address] = message.params
    return out


def test_status_and_hello_answer_with_every_controls_value():
    d, applied = make(state=lambda: STATE)
    for request in (STATUS, HELLO, bundle(STATUS, HELLO, STATUS)):
        replies = d.handle_datagram(request, SENDER)
        got = decoded(replies)
        assert len(replies) == len(got) == 19  # one per control with a value, once
    assert applied == []  # requests are answered here, not applied
    assert got["/encore/tempo"] == [112.0]
    assert got["/encore/xy"] == [0.5, 0.25]
    assert got["/encore/part/drums/mute"] == [1]
    assert got["/encore/part/bass/mute"] == [0]
    assert got["/encore/form"] == ["standard"]
    assert got["/encore/status/bar"] == ["17"]
    assert got["/encore/status/section"] == ["chorus"]
    assert got["/encore/status/health"] == ["ok"]
    assert not any(TABLE[a].is_button for a in got)


def test_feedback_skips_and_reports_values_that_do_not_fit():
    errors: list[str] = []
    state = {"song.tempo": "fast", "walk.xy": 0.5, "master.level": math.inf,
             "walk.freeze": math.nan, "form": "ok", "parts.bass.mute": 2**40}
    got = decoded(feedback_messages(state, TABLE, errors))
    assert got == {"/encore/form": ["ok"], "/encore/master/level": [math.inf]}
    assert len(errors) == 4
    assert errors[0].startswith("feedback song.tempo = 'fast' for /encore/tempo:")
    d, _ = make()
    assert d.feedback_messages(state) and d.stats["feedback_errors"] == 4
    assert feedback_messages({}) == []


def test_failures_of_the_show_are_counted_not_raised():
    def explode(*_):
        raise RuntimeError("boom")

    d = OscDispatcher(TABLE, explode, state=explode)
    assert d.handle_datagram(TEMPO_120, SENDER) == []
    assert d.handle_datagram(STATUS, SENDER) == []
    assert counts(d) == {"good": 2, "apply_errors": 1, "feedback_errors": 1}
    assert d.handle_datagram(TEMPO_120, None) == []  # a nonsense sender: counted too
    assert d.stats["internal_errors"] == 1


# ---- the reply budget -----------------------------------------------------------------
class FakeClock:
    """now_ns for the dispatcher, moved by hand."""

    def __init__(self) -> None:
        self.ns = 10**12

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)


STATE_REPLIES = 19  # datagrams in one answer to a state request (test above)


def budget(seconds: float, rate: float = REPLY_RATE, burst: int = REPLY_BURST) -> int:
    """The most answers a token bucket may give over ``seconds``."""
    return int(burst + rate * seconds)


def test_a_status_flood_is_answered_within_the_budget_and_the_rest_counted():
    clock = FakeClock()
    applied: list[Command] = []
    d = OscDispatcher(TABLE, applied.append, state=lambda: STATE, now_ns=clock)
    answered = 0
    began = clock.ns
    for n in range(2000):  # 2000 requests in 2 s, a valid tempo every 100
        answered += bool(d.handle_datagram(STATUS, SENDER))
        if n % 100 == 0:
            d.handle_datagram(TEMPO_120, SENDER)
        clock.advance(0.001)
    elapsed = (clock.ns - began) / 1e9
    assert budget(elapsed) - 1 <= answered <= budget(elapsed)  # 10 at once, then 5 a second
    assert d.stats["replies_dropped"] == 2000 - answered
    assert d.stats["good"] == 2000 + 20 and len(applied) == 20  # commands are never limited
    assert sum("answers held back" in p for p in d.problems) == 1  # said once, not 1980 times
    assert d.problems[-1].startswith("from 192.168.1.20:50000: asks for the state more than")
    # the answer held back follows once the budget allows, once for all of them
    wait = d.owed_wait_s()
    assert d.owes_replies and 0 <= wait <= 1 / REPLY_RATE
    clock.advance(wait)
    owed = d.owed_replies()
    assert [client for client, _ in owed] == [SENDER]
    assert len(owed[0][1]) == STATE_REPLIES
    assert not d.owes_replies and d.owed_wait_s() is None
    clock.advance(10.0)
    assert d.owed_replies() == []


def test_an_answer_pays_what_was_owed():
    clock = FakeClock()
    d = OscDispatcher(TABLE, state=lambda: STATE, now_ns=clock)
    for _ in range(REPLY_BURST + 3):
        d.handle_datagram(STATUS, SENDER)
    assert d.owes_replies and d.stats["replies_dropped"] == 3
    assert d.owed_wait_s() == pytest.approx(1 / REPLY_RATE) and d.owed_replies() == []
    clock.advance(1.0)
    assert len(d.handle_datagram(STATUS, SENDER)) == STATE_REPLIES  # the latest state
    assert not d.owes_replies


# the reply budget alone (the work budget, which drops a flood unread, has its own tests in
# test_osc_hostile.py)
NO_WORK_LIMIT = {"sender_rate": 1e9, "sender_burst": 1e9, "all_rate": 1e9, "all_burst": 1e9}


def test_one_client_flooding_does_not_starve_another():
    clock = FakeClock()
    d = OscDispatcher(TABLE, state=lambda: STATE, now_ns=clock, **NO_WORK_LIMIT)
    flooder, tablet = ("192.168.1.66", 40000), ("192.168.1.20", 9000)
    asked = answered = 0
    for ms in range(10_000):  # 10 s: the flooder 1000 a second, the tablet 4 a second
        d.handle_datagram(STATUS, flooder)
        d.handle_datagram(STATUS, (flooder[0], 40000 + ms))  # a new port does not help
        if ms % 250 == 0:
            asked += 1
            answered += len(d.handle_datagram(STATUS, tablet)) == STATE_REPLIES
        clock.advance(0.001)
    assert answered == asked == 40
    assert budget(10.0) - 1 <= 20_000 - d.stats["replies_dropped"] <= budget(10.0)


def test_many_senders_together_are_held_to_the_common_budget():
    """Spoofed source addresses each get a fresh budget of their own, but not more than
    the common one."""
    clock = FakeClock()
    d = OscDispatcher(TABLE, state=lambda: STATE, now_ns=clock)
    answered = 0
    for n in range(5000):  # 5 s, 1000 a second, each from another address
        answered += bool(d.handle_datagram(STATUS, (f"10.{n // 65536}.{n // 256 % 256}."
                                                    f"{n % 256}", 9000)))
        clock.advance(0.001)
    assert answered <= budget(5.0, REPLY_RATE_ALL, REPLY_BURST_ALL)
    assert answered >= budget(5.0, REPLY_RATE_ALL, REPLY_BURST_ALL) - 1
    assert d.stats["replies_dropped"] == 5000 - answered
    assert len(d.clients) == MAX_CLIENTS  # and feedback still goes to 8 at most


def test_a_tablet_at_full_tilt_loses_nothing():
    """TouchOSC or Open Stage Control: faders moving at 60 Hz, status polled 5 times a
    second, and 10 requests at once when a layout loads: every command applied, every
    request answered."""
    clock = FakeClock()
    applied: list[Command] = []
    d = OscDispatcher(TABLE, applied.append, state=lambda: STATE, now_ns=clock)
    tablet = ("192.168.1.20", 9000)
    replies = [d.handle_datagram(HELLO, tablet) for _ in range(REPLY_BURST)]
    assert all(len(r) == STATE_REPLIES for r in replies)
    clock.advance(2.0)
    moves = answered = 0
    for tick in range(60 * 60):  # a minute of 60 Hz fader moves
        level = encode_message("/encore/part/bass/level", "f", [tick % 100 / 100])
        assert d.handle_datagram(level, tablet) == []  # a move is not answered one by one
        moves += 1
        if tick % 12 == 0:  # 5 a second
            answered += len(d.handle_datagram(STATUS, tablet)) == STATE_REPLIES
        clock.advance(1 / 60)
    assert len(applied) == moves and answered == 60 * 5
    assert d.stats["replies_dropped"] == 0 and not d.owes_replies


def test_the_reply_budget_is_a_setting_of_the_dispatcher():
    clock = FakeClock()
    d = OscDispatcher(TABLE, state=lambda: STATE, now_ns=clock, reply_rate=1.0,
                      reply_burst=2)
    assert [bool(d.handle_datagram(STATUS, SENDER)) for _ in range(3)] == [True, True, False]
    clock.advance(1.0)
    assert [bool(d.handle_datagram(STATUS, SENDER)) for _ in range(2)] == [True, False]
    assert d.stats["replies_dropped"] == 2


# ---- the parser against python-osc ----------------------------------------------------
@pytest.mark.parametrize("args, tags", [
    ([], ""),
    ([1, -2, 2**31 - 1], "iii"),
    ([0.5, -1.25], "ff"),
    (["", "abc", "four", "ünïcode"], "ssss"),
    ([b"\x00", b"\x01\x02\x03", b"1234"], "bbb"),
    ([True, False, None], "TFN"),
    ([1.5, 2**40], "dh"),
])
def test_the_parser_reads_what_python_osc_writes(args, tags):
    builder = OscMessageBuilder("/encore/test")
    for arg, tag in zip(args, tags, strict=True):
        builder.add_arg(arg, {"d": "d", "h": "h"}.get(tag))
    raw = builder.build().dgram
    assert parse_datagram(raw) == [Message("/encore/test", tags, tuple(args))]
    assert parse_datagram(bundle(raw, raw)) == [Message("/encore/test", tags, tuple(args))] * 2


def test_python_osc_reads_what_the_encoder_writes():
    raw = encode_message("/encore/x", "ifsbdh", [7, 0.25, "chorus", b"\x00\x01", 1e100, 2**40])
    message = OscMessage(raw)
    assert message.address == "/encore/x"
    assert message.params == [7, 0.25, "chorus", b"\x00\x01", 1e100, 2**40]
    assert encode_message("/encore/tempo", "f", [120.0]) == TEMPO_120
    assert encode_message("/encore/xy", "ff", [0.25, 0.75]) == XY
    with pytest.raises(ValueError):
        encode_message("/encore/x", "i", [2**31])
    with pytest.raises(ValueError):
        encode_message("/encore/x", "s", ["a\x00b"])
    with pytest.raises(TypeError):
        encode_message("/encore/x", "s", [3])
    with pytest.raises(ValueError):
        encode_message("/encore/x", "ii", [1])


def test_parse_errors_are_value_errors():
    with pytest.raises(OscParseError):
        parse_datagram(TEMPO_BAD_TAG)
    assert issubclass(OscParseError, ValueError)


# ---- fuzz -----------------------------------------------------------------------------
CORPUS = [TEMPO_120, TEMPO_INT_96, XY, PANIC_PRESS, PANIC_BARE, MUTE_BASS_1F, FORM_LONG,
          STATUS, bundle(TEMPO_120, XY), bundle(bundle(MUTE_BASS_T), FORM_LONG),
          encode_message("/encore/part/*/level", "f", [0.5]),
          encode_message("/encore/walk/{speed,wander}", "i", [1])]


def _fuzz_dispatcher() -> tuple[OscDispatcher, list[Command]]:
    return make(state=lambda: STATE, max_elements=32)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_fuzz_random_bytes_never_raise(data):
    d, applied = _fuzz_dispatcher()
    d.handle_datagram(data, SENDER)
    d.handle_datagram(b"#bundle\x00" + data, SENDER)
    assert d.stats["internal_errors"] == 0
    assert all(valid(c) for c in applied)


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "value"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0, 0x2C, 0x2F, 0x7F, 0x80, 0xFF, ord("f"),
                                             ord("i"), ord("s"), ord("["), ord("*")]))
        elif kind == "cut":
            data = data[:at]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "value" and len(data) >= 4:  # any last argument: NaN, huge, negative
            data[-4:] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=4))
def test_fuzz_mutated_datagrams_never_raise_and_apply_only_valid_commands(datagrams):
    d, applied = _fuzz_dispatcher()
    for data in datagrams:
        replies = d.handle_datagram(data, SENDER)
        assert all(isinstance(r, bytes) for r in replies)
    assert d.stats["internal_errors"] == 0
    assert all(valid(c) for c in applied), applied


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(TABLE.addresses),
       st.lists(st.one_of(st.integers(-2**31, 2**31 - 1), st.floats(width=32),
                          st.text(st.characters(blacklist_characters="\x00",
                                                blacklist_categories=("Cs",)), max_size=8),
                          st.booleans()), max_size=3))
def test_fuzz_any_arguments_to_any_address(address, args):
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    d, applied = _fuzz_dispatcher()
    d.handle_datagram(builder.build().dgram, SENDER)
    assert d.stats["internal_errors"] == 0 and d.stats["bad_parse"] == 0
    assert all(valid(c) for c in applied)


_SEGMENT = st.text(alphabet="ab*?[]!-", max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(_SEGMENT, min_size=1, max_size=3), st.lists(st.text("ab", max_size=6),
                                                            min_size=1, max_size=3))
def test_address_patterns_agree_with_fnmatch_within_segments(pattern_parts, parts):
    pattern, address = "/" + "/".join(pattern_parts), "/" + "/".join(parts)
    expected = len(pattern_parts) == len(parts) and all(
        fnmatch.fnmatchcase(t, p) for p, t in zip(pattern_parts, parts, strict=True))
    if "[" in pattern or "]" in pattern:  # fnmatch reads a lone [ or ] as a literal
        return
    assert address_matches(pattern, address) == expected


def test_address_patterns():
    assert address_matches("/encore/part/[a-c]*/level", "/encore/part/bass/level")
    assert address_matches("/encore/part/[!a-c]*/level", "/encore/part/melody/level")
    assert not address_matches("/encore/part/[!a-c]*/level", "/encore/part/bass/level")
    assert address_matches("/encore/walk/{speed,wander}", "/encore/walk/wander")
    assert not address_matches("/encore/*", "/encore/walk/speed")  # * stays in its segment
    assert not address_matches("/encore/{a,b", "/encore/a")
    started = time.perf_counter()
    assert not address_matches("/" + "*a" * 100 + "b", "/" + "a" * 150)
    assert time.perf_counter() - started < 0.05
    assert address_matches("/" + "{a,b}" * 10, "/" + "a" * 10)  # not expanded to 1024 spellings
    assert [c.address for c in TABLE.match("/encore/status/*")] == []  # labels are not inputs


# ---- the table, its documents and the settings ---------------------------------------
def test_the_table_has_the_promised_controls():
    expected = {
        "/encore/tempo": ("f", ((40.0, 240.0),), "bar"),
        "/encore/walk/speed": ("f", ((0.0, 1.0),), "bar"),
        "/encore/walk/temperature": ("f", ((0.0, 2.0),), "bar"),
        "/encore/walk/wander": ("f", ((0.0, 1.0),), "bar"),
        "/encore/walk/drift": ("", (), "bar"),
        "/encore/walk/glide": ("", (), "bar"),
        "/encore/walk/jump": ("", (), "bar"),
        "/encore/walk/freeze": ("i", ((0, 1),), "bar"),
        "/encore/xy": ("ff", ((0.0, 1.0), (0.0, 1.0)), "bar"),
        "/encore/section/next": ("", (), "bar"),
        "/encore/section/previous": ("", (), "bar"),
        "/encore/form": ("s", (None,), "bar"),
        "/encore/master/level": ("f", ((0.0, 1.0),), "now"),
        "/encore/panic": ("", (), "now"),
        "/encore/status": ("", (), "now"),
        "/encore/hello": ("", (), "now"),
        "/encore/lyrics/theme": ("s", (None,), "bar"),
        "/encore/lyrics/new": ("", (), "bar"),
        "/encore/voice/level": ("f", ((0.0, 1.0),), "now"),
        "/encore/voice/mute": ("i", ((0, 1),), "now"),
    }
    for part in PARTS:
        expected[f"/encore/part/{part}/mute"] = ("i", ((0, 1),), "bar")
        expected[f"/encore/part/{part}/level"] = ("f", ((0.0, 1.0),), "beat")
    for address, (types, ranges, lands) in expected.items():
        control = TABLE[address]
        assert (control.types, control.ranges, control.lands) == (types, ranges, lands)
    assert {c.address for c in TABLE if c.widget == "label"} == {
        "/encore/status/bar", "/encore/status/section", "/encore/status/health",
        "/encore/status/lyric"}


def test_targets_that_are_patch_keys_share_their_ranges():
    from engine.patch import Patch

    checked = 0
    for control in TABLE:
        node, field = Patch(), None
        for name in control.target.split("."):
            fields = {f.name: f for f in dataclasses.fields(node)} \
                if dataclasses.is_dataclass(node) else {}
            if name not in fields:
                break
            field, node = fields[name], getattr(node, name)
        else:
            if dataclasses.is_dataclass(node):  # "form" names a whole section
                continue
            expected = (0, 1) if isinstance(node, bool) else field.metadata["range"]
            assert control.ranges == (expected,), control.address
            checked += 1
    # tempo, speed, temperature, wander, lyrics theme, voice level and mute; mute and
    # level of each part
    assert checked == 7 + 2 * len(PARTS)


def test_the_osc_map_lists_every_address():
    text = osc_map_markdown(TABLE)
    for control in TABLE:
        assert f"| `{control.address}` |" in text
    assert "| `/encore/tempo` | a number 40..240 | bar | fader | `song.tempo` |" in text
    layout = json.loads(osc_table_json(TABLE))
    assert [c["address"] for c in layout["controls"]] == list(TABLE.addresses)
    assert layout["controls"][0]["ranges"] == [[40.0, 240.0]]


def test_a_broken_table_is_refused():
    tempo = TABLE["/encore/tempo"]
    with pytest.raises(ValueError, match="twice"):
        OscTable([tempo, tempo])
    for bad in (dict(address="encore"), dict(address="/encore/*"), dict(types="x"),
                dict(ranges=()), dict(ranges=((2.0, 1.0),)), dict(lands="soon"),
                dict(widget="knob"), dict(widget="button")):
        with pytest.raises(ValueError):
            dataclasses.replace(tempo, **bad)


def test_controls_explain_refusals():
    with pytest.raises(CommandError) as caught:
        TABLE["/encore/xy"].accept("fs", (0.5, "x"))
    assert caught.value.reason == "bad_types"
    assert str(caught.value) == "/encore/xy argument 2 must be a number, got 'x' (string)"
    assert TABLE["/encore/xy"].accept("if", (1, 0.5)) == (1.0, 0.5)
    assert isinstance(TABLE["/encore/tempo"], Control)


def test_osc_settings_read_like_a_patch_section():
    from engine.patch import setting

    assert OscSettings() == OscSettings("127.0.0.1", 9000, (), True, 0)
    for f in dataclasses.fields(OscSettings):
        assert set(f.metadata) == set(setting(0).metadata), f.name
    assert list(OscSettings().problems()) == []
    problems = dict(OscSettings(host="my-laptop", allow=("192.168.1.300",)).problems())
    assert set(problems) == {"host", "allow"}
    assert "0.0.0.0" in problems["host"] and "192.168.1.0/24" in problems["allow"]
    d = OscDispatcher.from_settings(OscSettings(allow=("10.0.0.1",), reply_port=9001),
                                    lambda c: None)
    assert not d.is_allowed("10.0.0.2") and d.reply_address(("10.0.0.1", 5)) == (
        "10.0.0.1", 9001)


# ---- a real socket --------------------------------------------------------------------
async def _eventually(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_udp_round_trip_on_localhost():
    async def main() -> None:
        applied: list[Command] = []
        dispatcher = OscDispatcher(TABLE, applied.append, state=lambda: STATE)
        async with OscServer(OscSettings(port=0), dispatcher) as server:
            host, port = server.address
            assert host == "127.0.0.1" and port > 0
            client = SimpleUDPClient(host, port)
            try:
                client.send_message("/encore/tempo", 120.0)
                await _eventually(lambda: applied)
                assert applied[0].target == "song.tempo" and applied[0].values == (120.0,)
                assert dispatcher.clients == (("127.0.0.1", client._sock.getsockname()[1]),)

                assert server.send_feedback({"song.tempo": 120.0, "status.bar": 3}) == 2
                first = await asyncio.to_thread(client.receive, 2.0)
                second = await asyncio.to_thread(client.receive, 2.0)
                assert decoded([first, second]) == {"/encore/tempo": [120.0],
                                                    "/encore/status/bar": ["3"]}

                client.send_message("/encore/status", None)  # a request: replies come back
                replies = [await asyncio.to_thread(client.receive, 2.0) for _ in range(19)]
                assert decoded(replies)["/encore/tempo"] == [112.0]

                client.send_message("/encore/tempo", "fast")
                await _eventually(lambda: dispatcher.stats["bad_types"] == 1)
                assert server.stats["received"] == 3 and server.stats["send_errors"] == 0
            finally:
                client.close()
        assert server.address is None
        server.close()  # twice is fine

    asyncio.run(main())


def test_feedback_off_sends_nothing_and_the_allow_list_holds_on_the_socket():
    async def main() -> None:
        applied: list[Command] = []
        dispatcher = OscDispatcher(TABLE, applied.append, allow=("10.9.9.9",))
        async with OscServer(OscSettings(port=0, feedback=False), dispatcher) as server:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(TEMPO_120, server.address)
                await _eventually(lambda: dispatcher.stats["not_allowed"] == 1)
            assert applied == [] and dispatcher.clients == ()
            assert server.send_feedback(STATE) == 0

    asyncio.run(main())


def test_a_port_in_use_is_refused_with_a_fix():
    async def main() -> None:
        async with OscServer(OscSettings(port=0), OscDispatcher()) as first:
            taken = OscServer(OscSettings(port=first.address[1]), OscDispatcher())
            with pytest.raises(OSError, match=r"\[osc\] port"):
                await taken.start()

    asyncio.run(main())


async def _heartbeat(lags: list[float], stop: asyncio.Event) -> None:
    """How late the loop wakes a 2 ms sleep: how long something held it (as in
    test_osc_fuzz.py)."""
    while not stop.is_set():
        began = time.monotonic()
        await asyncio.sleep(0.002)
        lags.append(time.monotonic() - began - 0.002)


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


def test_a_status_flood_on_the_socket_is_answered_within_the_budget():
    """2000 ``/encore/status`` requests as fast as the loop reads them, a valid tempo among
    them: the tempo is applied, the answers stay within the budget (one more, the answer
    owed, comes when the budget allows), the rest is counted, and the loop is not held."""
    flood = 2000
    burst = 32  # datagrams between waits for the server to read them (no kernel drops)

    async def main() -> None:
        applied: list[Command] = []
        dispatcher = OscDispatcher(TABLE, applied.append, state=lambda: STATE, **NO_WORK_LIMIT)
        lags: list[float] = []
        stop = asyncio.Event()
        async with OscServer(OscSettings(port=0), dispatcher) as server:
            beat = asyncio.ensure_future(_heartbeat(lags, stop))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                got: list[bytes] = []
                began = time.monotonic()
                for n in range(flood + 1):
                    sock.sendto(STATUS if n != flood // 2 else TEMPO_120, server.address)
                    if n % burst == burst - 1 or n == flood:
                        await _eventually(lambda n=n: server.stats["received"] == n + 1)
                        got += _drain(sock)
                elapsed = time.monotonic() - began
                await asyncio.sleep(2 / REPLY_RATE)  # the answer owed comes meanwhile
                got += _drain(sock)
            stop.set()
            await beat
        answers = len(got) / STATE_REPLIES
        print(f"\n{flood} status requests in {elapsed:.2f} s: {answers:g} answers "
              f"({len(got)} datagrams), {dispatcher.stats['replies_dropped']} held back; loop "
              f"held at most {max(lags) * 1000:.1f} ms")
        assert [c.target for c in applied] == ["song.tempo"]  # commands are never limited
        assert answers == int(answers)
        # requests that reach the loop together (the receiver thread hands them over at
        # most 25 times a second) are answered once; past the budget they are held back and
        # counted, and the answer owed still comes
        assert 1 <= answers <= budget(elapsed + 2 / REPLY_RATE) + 1
        assert dispatcher.stats["good"] == flood + 1
        assert not dispatcher.owes_replies
        assert server.stats["sent"] == len(got) and server.stats["send_errors"] == 0
        assert max(lags) < 0.1, f"the loop was held {max(lags) * 1000:.0f} ms"

    asyncio.run(main())
