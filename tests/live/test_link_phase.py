"""`encore live` against an independent Ableton Link peer: do its bar lines fall on the
session's?

The peer (``link_peer.py``, a separate process on ``LinkPython-extern``, which shares no
code with Encore) records the MIDI clock Encore sends to a JACK input and puts every tick on
Link's timeline (``midi_stamp.c`` stamps it in C on Link's clock). A downbeat is a tick
whose index since Start is a multiple of 96 (a 4/4 bar); its error is how far it is from
the session's nearest bar line (phase 0 in quantum 4). Ableton's test plan for Link apps
asks for 3 ms.

All Link traffic stays in a network namespace that has only loopback (multicast routed to
``lo``), so no other Link app on the network joins and nothing leaves the machine. That
needs root and ``ip`` (iproute2): without them the tests say so and skip. They also need
the optional packages ``aalink`` (the ``link`` extra, which Encore uses) and
``LinkPython-extern`` (the ``linktest`` extra, the peer), a C compiler for the stamper, and
a JACK server (the fixture starts a dummy one).

One set is played for the module (about a minute): the peer runs at 100 BPM for a while
before Encore joins; later the peer moves to 120 BPM in the middle of a bar; later still a
tablet sets 110 BPM over OSC, which Encore proposes to the session on its next bar line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOLERANCE_MS = 3.0  # Ableton's test plan for Link apps
PEER_BPM, PEER_CHANGE_S, PEER_NEW_BPM = 100.0, 12.1, 120.0
TABLET_BAR, TABLET_BPM = 10, 110.0
SET_S = 34.0  # the peer measures this long after Encore's Start
RUNNING_BEFORE_S = 6.0  # the session runs this long before Encore is started
OSC_PORT = 57120  # the namespace is Encore's alone: any port is free there

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("aalink") is None,
                       reason="aalink is not installed (the optional 'link' extra, GPL-3.0)"),
    pytest.mark.skipif(importlib.util.find_spec("link") is None,
                       reason="LinkPython-extern is not installed (the optional 'linktest' "
                       "extra, GPL-2.0+: pip install 'encore-engine[linktest]')"),
]


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture(scope="module")
def netns() -> str:
    """A network namespace with only loopback up, multicast routed to it."""
    if shutil.which("ip") is None:
        pytest.skip("no 'ip' command (Debian: iproute2): cannot confine Link to loopback")
    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root: Link traffic is not confined "
                    "to loopback, so the test does not run")
    name = f"encore-link-{os.getpid()}"
    steps = [("netns", "add", name),
             ("netns", "exec", name, "ip", "link", "set", "lo", "up", "multicast", "on"),
             ("netns", "exec", name, "ip", "route", "add", "224.0.0.0/4", "dev", "lo")]
    for step in steps:
        done = _ip(*step)
        if done.returncode != 0:
            _ip("netns", "delete", name)
            pytest.skip(f"could not make a network namespace with only loopback for Link "
                        f"(ip {' '.join(step)}: {done.stderr.strip()}); the test does not "
                        "run Link on a real network")
    try:
        yield name
    finally:
        _ip("netns", "delete", name)


@pytest.fixture(scope="module")
def midi_stamp(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build midi_stamp (Debian: gcc)")
    out = tmp_path_factory.mktemp("stamp") / "midi_stamp"
    done = subprocess.run([compiler, "-O2", "-o", str(out), str(HERE / "midi_stamp.c"),
                           "-l:libjack.so.0"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"midi_stamp did not build (needs libjack.so.0): {done.stderr[-400:]}")
    return out


def write_patch(path: Path) -> Path:
    path.write_text(f"""
[song]
tempo = 90.0

[humanize]
timing_ms = 0.0

[midi]
backend = "jack"
clock_out = "encore-linkpeer:input"

[live]
internal_synth = false
link = true
link_wait_s = 2.0

[lyrics]
source = "off"

[voice]
singer = "off"

[osc]
port = {OSC_PORT}
""")
    return path


def in_netns(netns: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *command]


def bars_pushed(log: Path) -> int:
    if not log.exists():
        return 0
    return sum('"type":"bar"' in line.replace(" ", "") for line in log.open())


class LinkSet:
    """What one set left: the peer's measurement, Encore's event log and output."""

    def __init__(self, peer: dict, events: list[dict], output: str) -> None:
        self.peer = peer
        self.events = events
        self.output = output
        q = peer["quantum"]
        self.downbeats = []  # (bar, Link us, error ms, session bpm)
        for tick in peer["ticks"]:
            if tick["index"] % 96 == 0:
                error = ((tick["phase"] + q / 2) % q) - q / 2
                self.downbeats.append((tick["index"] // 96, tick["us"],
                                       error * 60000 / tick["bpm"], tick["bpm"]))

    def change_us(self, bpm: float) -> float:
        """When the peer saw the session move to ``bpm`` (Link keeps whole us a beat)."""
        return next(at for at, _beat, tempo in self.peer["timelines"]
                    if abs(tempo - bpm) < 1e-3)

    def report(self) -> str:
        return "\n".join(f"bar {bar}: {err:+.3f} ms at {bpm:g} BPM"
                         for bar, _, err, bpm in self.downbeats) + (
            f"\nlost ticks {self.peer['lost_ticks']}; encore: {self.output[-1500:]}")


@pytest.fixture(scope="module")
def link_set(netns: str, midi_stamp: Path, jack_server: str, tmp_path_factory) -> LinkSet:
    tmp = tmp_path_factory.mktemp("linkset")
    ready, result = tmp / "ready", tmp / "peer.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    peer = subprocess.Popen(
        in_netns(netns, sys.executable, str(HERE / "link_peer.py"), "--stamp", str(midi_stamp),
                 "--out", str(result), "--bpm", str(PEER_BPM), "--seconds", str(SET_S),
                 "--tempo", f"{PEER_CHANGE_S}:{PEER_NEW_BPM}", "--ready", str(ready)),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    encore = None
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert peer.poll() is None, f"the Link peer ended: {peer.communicate()[0]}"
            assert time.monotonic() < deadline, "the Link peer did not come up in 15 s"
            time.sleep(0.05)
        time.sleep(RUNNING_BEFORE_S)  # a session that has been running for a while
        log = tmp / "set" / "song.jsonl"
        encore_out = (tmp / "encore.out").open("w")
        encore = subprocess.Popen(
            in_netns(netns, sys.executable, "-m", "engine.cli", "live", "--patch",
                     str(write_patch(tmp / "link.toml")), "--no-audio", "--record",
                     str(tmp / "set")),
            cwd=ROOT, env=env, stdout=encore_out, stderr=subprocess.STDOUT,
            start_new_session=True)
        while bars_pushed(log) < TABLET_BAR:  # then the tablet asks for another tempo
            assert encore.poll() is None, \
                f"encore live ended: {(tmp / 'encore.out').read_text()[-3000:]}"
            assert time.monotonic() < deadline + 120, "encore live played no bars"
            time.sleep(0.05)
        subprocess.run(in_netns(netns, sys.executable, "-c",
                                "from pythonosc.udp_client import SimpleUDPClient as C; "
                                f"C('127.0.0.1', {OSC_PORT}).send_message('/encore/tempo', "
                                f"{TABLET_BPM})"), check=True, timeout=20)
        peer_out = peer.communicate(timeout=SET_S + 120)[0]
        assert peer.returncode == 0, peer_out
        os.killpg(encore.pid, signal.SIGINT)
        encore.wait(timeout=30)
        output = (tmp / "encore.out").read_text()
        assert encore.returncode == 0, output[-3000:]
    finally:
        for process in (peer, encore):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    events = [json.loads(line) for line in log.open()]
    return LinkSet(json.loads(result.read_text()), events, output)

def test_encore_joins_a_running_session_on_its_bar_lines(link_set: LinkSet) -> None:
    peer, downbeats = link_set.peer, link_set.downbeats
    print(link_set.report())  # pytest -s shows every downbeat
    join = next(e for e in link_set.events if e.get("type") == "link" and e["what"] == "join")
    assert join["peers"] >= 1 and peer["peers"] >= 1, "the two apps never saw each other"
    assert join["bpm"] == pytest.approx(PEER_BPM), "Encore did not take the session's tempo"
    assert peer["started_us"] - peer["timelines"][0][0] > RUNNING_BEFORE_S * 1e6
    change = link_set.change_us(PEER_NEW_BPM)
    before = [d for d in downbeats if 1 <= d[0] and d[1] < change]
    assert len(before) >= 3, link_set.report()
    assert all(abs(err) < TOLERANCE_MS for _, _, err, _ in before), link_set.report()
    assert all(bpm == pytest.approx(PEER_BPM) for *_, bpm in before)


def test_a_peer_tempo_change_is_locked_again_within_a_bar(link_set: LinkSet) -> None:
    """The bar under way (and one already stamped ahead) ends where the old tempo put it;
    the bar after it is fitted, so from the second bar line after the change on, every
    downbeat is on the session's again."""
    change = link_set.change_us(PEER_NEW_BPM)
    tablet = link_set.change_us(TABLET_BPM)
    after = [d for d in link_set.downbeats if change < d[1] < tablet]
    assert len(after) >= 4, link_set.report()
    assert all(abs(err) < TOLERANCE_MS for _, _, err, _ in after[2:]), link_set.report()
    off = [d for d in after if abs(d[2]) >= TOLERANCE_MS]
    assert len(off) <= 1, link_set.report()  # only the first bar line after the change
    tempo = [e for e in link_set.events if e.get("type") == "link" and e["what"] == "tempo"]
    assert tempo and tempo[0]["bpm"] == pytest.approx(PEER_NEW_BPM)


def test_a_tablet_tempo_goes_to_the_session_on_a_bar_line(link_set: LinkSet) -> None:
    """Encore proposes the tablet's tempo to the session on the bar line where its own
    clock changes: the session follows with no downbeat off, before or after."""
    tablet = link_set.change_us(TABLET_BPM)  # the peer saw the session change to it
    proposed = [e for e in link_set.events if e.get("type") == "link"
                and e["what"] == "proposed tempo"]
    assert proposed and proposed[0]["bpm"] == pytest.approx(TABLET_BPM)
    around = [d for d in link_set.downbeats if d[1] > link_set.change_us(PEER_NEW_BPM)][2:]
    assert any(d[1] > tablet for d in around) and any(d[1] < tablet for d in around)
    assert all(abs(err) < TOLERANCE_MS for _, _, err, _ in around), link_set.report()
    nearest = min(abs(d[1] - tablet) for d in around)
    assert nearest < 20_000, "the session's tempo changed away from Encore's bar line"
    assert [d[3] for d in around][-1] == pytest.approx(TABLET_BPM)
    realigns = [e for e in link_set.events if e.get("type") == "link"
                and e["what"] == "realign"]
    assert not realigns, realigns
