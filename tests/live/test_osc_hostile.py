"""Hostile datagrams cost a bounded amount of work each, change nothing, and cannot hold
the loop; a flood of valid commands lands as the last value per landing point.

Work is counted, not timed: the dispatcher charges every datagram in work units
(``OscDispatcher.last_cost``, of which ``last_match_work`` went to matching address
patterns), and the tests check those counts against bounds computed from the limits, and
count how often a segment pattern is tried against a name (wrapped, not replaced).
"""

from __future__ import annotations

import asyncio
import random
import socket
import string
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.live import osc_table
from engine.live.osc_control import (
    BYTES_PER_UNIT,
    DATAGRAM_COST,
    ELEMENT_COST,
    MAX_CLIENTS,
    MAX_DATAGRAM,
    MAX_DATAGRAM_WORK,
    MAX_ELEMENTS,
    MAX_PATTERNS,
    REFUSAL_COST,
    Command,
    Mailbox,
    OscDispatcher,
    OscServer,
    OscSettings,
    Received,
    encode_message,
)
from engine.live.osc_table import MAX_MATCH_WORK, MAX_PATTERN, TABLE, SegmentPattern, WorkMeter

SENDER = ("10.0.0.5", 9000)
NAMES = sorted({seg for c in TABLE for seg in c.address.split("/")[1:]})
# The most a datagram can be charged: its bytes, every element, the match work (the
# datagram's limit plus the one pattern that crossed it) and a refusal per control a
# message can select (a pattern selects at most every input; a plain address one).
MOST_REFUSALS = MAX_ELEMENTS + MAX_PATTERNS * len(TABLE)
MOST_COST = (DATAGRAM_COST + MAX_DATAGRAM // BYTES_PER_UNIT + ELEMENT_COST * MAX_ELEMENTS
             + MAX_DATAGRAM_WORK + MAX_MATCH_WORK + REFUSAL_COST * MOST_REFUSALS)


def bundle(*elements: bytes) -> bytes:
    return b"#bundle\x00" + struct.pack(">Q", 1) + b"".join(
        struct.pack(">i", len(e)) + e for e in elements)


def nested(depth: int, inner: bytes) -> bytes:
    for _ in range(depth):
        inner = bundle(inner)
    return inner


# ---- hostile generators ---------------------------------------------------------------
_WILD = "*?*?[]{},!-"
_segment = st.one_of(
    st.sampled_from(NAMES),
    st.text(alphabet=_WILD + "aeiolmnrst", min_size=1, max_size=80),
    st.builds(lambda alts, tail: "{" + ",".join(alts) + "}" + tail,
              st.lists(st.text(alphabet="*?aelmnrst", max_size=12), min_size=1, max_size=40),
              st.text(alphabet="*?ael", max_size=20)),
    st.builds(lambda n: "{*,?}" * n + "*", st.integers(1, 40)),
    st.builds(lambda n: "*?" * n + "x", st.integers(1, 120)),
)
# every pattern has a wildcard and an impossible last segment: it can select nothing
_pattern = st.builds(lambda segs, last: ("/" + "/".join(segs) + "/" + last)[:400],
                     st.lists(_segment, min_size=0, max_size=6),
                     st.sampled_from(["*zz*", "{q,zq}", "[!a-z]*", "?????????????*"]))


def _messages(patterns: list[str], value: float) -> list[bytes]:
    return [encode_message(p, "f", [value]) for p in patterns]


_hostile = st.one_of(
    # one long wildcard pattern
    st.builds(lambda p: encode_message(p, "f", [0.5]), _pattern),
    # many patterns in one bundle (up to far more than the limit)
    st.builds(lambda ps: bundle(*_messages(ps, 0.5)), st.lists(_pattern, min_size=1,
                                                                max_size=60)),
    # deep bundles around patterns
    st.builds(lambda d, p: nested(d, encode_message(p, "f", [0.5])), st.integers(1, 12),
              _pattern),
    # huge datagrams: a pattern padded out, many elements, empty bundles
    st.builds(lambda p, n: encode_message(p + "*" * n, "f", [0.5]), _pattern,
              st.integers(0, 70_000)),
    st.builds(lambda n: bundle(*[bundle()] * n), st.integers(100, 3000)),
    st.builds(lambda b: b, st.binary(min_size=0, max_size=2000)),
)


class CountingSegments:
    """Counts every segment pattern tried against a name (the real method runs)."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        real = SegmentPattern.matches

        def counted(pattern: SegmentPattern, name: str, meter: WorkMeter) -> bool:
            self.calls += 1
            return real(pattern, name, meter)

        monkeypatch.setattr(SegmentPattern, "matches", counted)


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_hostile, min_size=1, max_size=4))
def test_hostile_datagrams_cost_bounded_work_and_change_nothing(datagrams):
    applied: list[Command] = []
    d = OscDispatcher(TABLE, applied.append, sender_burst=1e12, all_burst=1e12)
    with pytest.MonkeyPatch.context() as monkeypatch:
        segments = CountingSegments(monkeypatch)
        _throw(d, datagrams, segments)
    assert applied == [] and d.clients == ()
    assert d.stats["good"] == d.stats["released"] == 0
    assert d.stats["internal_errors"] == 0


def _throw(d: OscDispatcher, datagrams: list[bytes], segments: CountingSegments) -> None:
    for data in datagrams:
        before = segments.calls
        assert d.handle_datagram(data, SENDER) == []
        assert d.last_match_work <= MAX_DATAGRAM_WORK + MAX_MATCH_WORK
        assert d.last_cost <= MOST_COST
        # a pattern is tried once per distinct name at each level it reaches, never once
        # per control per pattern
        assert segments.calls - before <= MAX_PATTERNS * len(NAMES)


def test_the_audited_datagram_is_cheap_now():
    """The audit's datagram: ~130 long wildcard patterns in one 34 kB bundle, each
    matched against every control on the loop. Now too large to be read; and the same
    patterns in datagrams under the size limit cost at most the datagram's work limit."""
    rng = random.Random(14)

    def pattern() -> str:
        segs = ["encore"] + ["{" + ",".join("*" + rng.choice("aeiou") + "?" * 2
                                            for _ in range(15)) + "}" for _ in range(3)]
        return ("/" + "/".join(segs))[:250]

    audited = bundle(*_messages([pattern() for _ in range(130)], 1.0))
    assert len(audited) > 30_000
    d = OscDispatcher(TABLE, sender_burst=1e12, all_burst=1e12)
    d.handle_datagram(audited, SENDER)
    assert d.stats["too_large"] == 1 and d.last_cost == DATAGRAM_COST
    for count in (1, 4, MAX_PATTERNS, MAX_PATTERNS + 1, 40):
        smaller = bundle(*_messages([pattern() for _ in range(count)], 1.0))
        if len(smaller) > MAX_DATAGRAM:
            continue
        d.handle_datagram(smaller, SENDER)
        assert d.last_match_work <= MAX_DATAGRAM_WORK + MAX_MATCH_WORK
    assert d.stats["too_complex"] >= 1  # more than MAX_PATTERNS patterns: refused whole
    assert d.stats["good"] == 0 and d.clients == ()


def test_one_pattern_costs_the_same_whatever_the_table_size():
    """Matching goes by the index: a table twice as big (the same names under another
    root) costs a pattern under /encore no more work units."""
    pattern = "/encore/part/*{" + ",".join("yszqxw") + "}/level"
    small = WorkMeter(10**9)
    TABLE.select(pattern, small)
    doubled = osc_table.OscTable(list(TABLE) + [
        osc_table.Control(c.address.replace("/encore/", "/encore2/", 1), c.types, c.ranges,
                          c.target, c.lands, c.help, c.widget, c.replies) for c in TABLE])
    big = WorkMeter(10**9)
    found = doubled.select(pattern, big)
    assert [c.address for c in found] == [f"/encore/part/{p}/level" for p in osc_table.PARTS]
    assert big.used == small.used


def test_a_pattern_over_its_work_budget_is_refused_not_run():
    """A pattern that would select real controls but costs more than its budget (four
    26-way choices in a row, tried on every name under /encore) is refused whole."""
    pattern = "/encore/" + ("{" + ",".join(string.ascii_lowercase) + "}") * 4 + "*"
    assert len(pattern) <= MAX_PATTERN
    cheaper = "/encore/" + ("{" + ",".join(string.ascii_lowercase) + "}") * 2 + "*"
    assert TABLE.match(cheaper)  # the same, shorter, selects controls
    meter = WorkMeter(MAX_MATCH_WORK)
    with pytest.raises(osc_table.PatternTooComplexError):
        TABLE.select(pattern, meter)
    assert meter.used <= MAX_MATCH_WORK + 64  # it stopped within a step of its limit
    applied: list[Command] = []
    d = OscDispatcher(TABLE, applied.append, sender_burst=1e12, all_burst=1e12)
    d.handle_datagram(encode_message(pattern, "i", [0]), SENDER)
    assert d.stats["too_complex"] == 1 and applied == [] and d.clients == ()


def test_a_sender_over_its_budget_is_dropped_unread_and_another_still_lands():
    clock = [0]
    applied: list[Command] = []
    d = OscDispatcher(TABLE, applied.append, now_ns=lambda: clock[0],
                      sender_rate=1000, sender_burst=2000, all_rate=10**6, all_burst=10**6)
    junk = bundle(*_messages(["/encore/*/{a,b,c}*zz"] * MAX_PATTERNS, 0.5))
    for _ in range(200):
        d.handle_datagram(junk, ("10.0.0.66", 1))
    dropped = d.stats["over_budget"]
    assert dropped > 150  # the flooder's budget is spent after a few
    d.handle_datagram(encode_message("/encore/tempo", "f", [100.0]), SENDER)
    assert [c.values for c in applied] == [(100.0,)]  # the tablet's own budget is whole
    clock[0] += int((MOST_COST / 1000 + 1) * 1e9)  # once its debt is paid: budget again
    d.handle_datagram(encode_message("/encore/tempo", "f", [101.0]), ("10.0.0.66", 1))
    assert d.stats["over_budget"] == dropped and applied[-1].values == (101.0,)


def test_the_mailbox_keeps_the_last_value_per_target_and_is_bounded():
    box = Mailbox()
    wakes = 0
    for n in range(300):
        level = Command("parts.bass.level", (n / 299,), "beat", "/encore/part/bass/level", n)
        mute = Command("parts.bass.mute", (n % 2,), "bar", "/encore/part/bass/mute", n)
        wakes += box.put(Received(("10.0.0.1", 1000 + n), [level, mute], n == 7, True, n))
    assert wakes == 1  # the loop is woken once until it takes
    commands, senders = box.take()
    assert [(c.target, c.values) for c in commands] == [("parts.bass.level", (1.0,)),
                                                        ("parts.bass.mute", (1,))]
    assert box.coalesced == 2 * 299
    assert len(senders) <= 2 * MAX_CLIENTS
    assert box.take() == ([], [])


def test_300_level_datagrams_on_the_socket_land_as_a_few_commands_the_last_value_last():
    """The receiver thread coalesces between two looks of the loop: 300 fader moves sent
    at once reach ``apply`` as a few commands, the last one with the last value."""

    async def main() -> None:
        applied: list[Command] = []
        dispatcher = OscDispatcher(TABLE, applied.append)
        async with OscServer(OscSettings(port=0), dispatcher) as server:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
                for n in range(300):
                    sock.sendto(encode_message("/encore/part/bass/level", "f", [n / 299]),
                                server.address)
                    if n % 50 == 49:
                        await asyncio.sleep(0.005)
                deadline = time.monotonic() + 5
                while server.stats["received"] < 300 or not applied or \
                        applied[-1].values != (1.0,):
                    assert time.monotonic() < deadline, (server.stats, applied[-1:])
                    await asyncio.sleep(0.01)
        assert dispatcher.stats["good"] == 300
        assert len(applied) < 100 and applied[-1].values == (1.0,)
        assert dispatcher.stats["coalesced"] == 300 - len(applied)
        assert dispatcher.clients == (("127.0.0.1", port),)

    asyncio.run(main())
