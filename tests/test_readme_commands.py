"""Every command in README.md runs, as a musician would type it, and does what it says.

The commands are read from the README itself: every line of a ```sh block (comments and
line continuations taken out) and every inline code span that starts with ``encore``,
``.venv/bin/``, ``make``, ``jackd``, ``pip`` or ``python``. :data:`TABLE` says how each one
is run. A README command missing from the table fails (add it), and so does a table entry
no longer in the README (remove it), so the two never drift apart.

Each command runs for real, as a subprocess through ``bash -c``, in a fresh folder laid out
like a checkout (``.venv`` and ``benchmarks`` linked in from the repository; ``encore`` on
the PATH as after ``source .venv/bin/activate``). A command runs exactly as written unless
its entry says otherwise (``runs``) and why (``why``): only placeholders (``DIR``, ``NAME``,
``~/my_midi``, ``sets/<set>``; the test makes real small files there, or names them so),
smaller sizes for training and benchmarks, and a free OSC port where the README's 9000 may
be taken on a test machine. The live commands play on the JACK dummy server the README
starts, ``jackd -d dummy -r 48000 -p 256 &``, run as written under a server name of its own
(``JACK_DEFAULT_SERVER``), so a JACK server already running is left alone.

The "newcomer" run is the README's tablet walk-through: the patch from the README's
``[osc]`` block, ``encore live`` with it, a tablet (python-osc) sending what the README says
a tablet sends and receiving the values echoed back, then Ctrl-C; the set's ``song.jsonl``
and ``song.mid`` must hold the tablet's changes. (tests/live/test_show.py drives the show
in-process and stops the CLI by signal without OSC; this is the CLI end to end.)

The README's TOML snippets must each be a valid patch, alone and merged, and the OSC
reference in it must be what ``encore osc-map --readme README.md`` writes now.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mido
import pytest

from engine.live.osc_control import parse_datagram
from engine.live.osc_table import README_BEGIN, README_END, osc_map_markdown
from engine.patch import PatchError, build_patch, parse_patch

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV = REPO / ".venv"
PREFIXES = ("encore ", ".venv/bin/", "make ", "jackd ", "pip ", "python ")
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.M | re.S)
TIMEOUT_S = 300
LIVE_START_S = 90      # start-up of `encore live` (models, the voice timed) on a loaded CI box
JACK_START_S = 10

pytestmark = pytest.mark.skipif(not (VENV / "bin" / "encore").exists(),
                                reason="the README's commands run from .venv (make setup)")


# ---- reading the README -------------------------------------------------------------------
def readme_commands(text: str) -> list[str]:
    """The README's commands, in order, each once, whitespace collapsed."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang != "sh":
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()
            if line:
                found.append(" ".join(line.split()))
    for span in re.findall(r"`([^`]+)`", FENCE.sub("", text)):
        span = " ".join(span.split())
        if span.startswith(PREFIXES):
            found.append(span)
    return list(dict.fromkeys(found))


def toml_blocks(text: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == "toml"]


def toml_block(starting: str) -> str:
    blocks = [b for b in toml_blocks(README.read_text(encoding="utf-8"))
              if b.startswith(starting)]
    assert len(blocks) == 1, f"README.md: expected one ```toml block starting {starting!r}"
    return blocks[0]


def substitute(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert old in text, f"README.md changed: {old!r} is no longer in {text!r}"
        text = text.replace(old, new)
    return text


# ---- where the commands run ---------------------------------------------------------------
@dataclass
class Workspace:
    """A folder laid out like a checkout, and the environment of a terminal in it."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(cls, root: Path) -> Workspace:
        root.mkdir(parents=True, exist_ok=True)
        for name in (".venv", "benchmarks"):
            if not (root / name).exists():
                (root / name).symlink_to(REPO / name)
        env = dict(os.environ, PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                   VIRTUAL_ENV=str(VENV), PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)
        return cls(root, env)

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def run(self, command: str, *, cwd: Path | None = None, timeout: float = TIMEOUT_S,
            ok: bool = True) -> str:
        """Run ``command`` through bash; its stdout and stderr together."""
        result = subprocess.run(["bash", "-c", command], cwd=cwd or self.root, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if ok:
            assert result.returncode == 0, (f"`{command}` exited {result.returncode}:\n"
                                            f"{result.stdout[-4000:]}")
        return result.stdout


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def default_patch_with_port(port: int) -> str:
    """The shipped default patch with only its OSC port changed."""
    text = (REPO / "patches" / "default.toml").read_text(encoding="utf-8")
    return substitute(text, ("\nport = 9000 ", f"\nport = {port} "))


# ---- the JACK dummy server, as the README starts it -----------------------------------------
JACKD = "jackd -d dummy -r 48000 -p 256 &"
_PROBE = ("import jack; c = jack.Client('encore-readme-probe', no_start_server=True); "
          "print(c.samplerate, c.blocksize); c.close()")


def _probe_jack(env: dict[str, str]) -> str | None:
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                               text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    return probe.stdout.strip() if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def readme_jack(tmp_path_factory) -> Iterator[Workspace]:
    """The README's ``jackd`` line, run as written by bash, with ``JACK_DEFAULT_SERVER``
    naming a server of this test's own; a workspace whose environment points there."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (apt-get install jackd2; the setup does it)")
    ws = Workspace.make(tmp_path_factory.mktemp("jack"))
    ws.env["JACK_DEFAULT_SERVER"] = f"encore-readme-{os.getpid()}"
    log = ws.root / "jackd.log"
    with log.open("wb") as out:  # jackd keeps it: a pipe would never reach its end
        subprocess.run(["bash", "-c", f"{TABLE[JACKD].line(JACKD)} echo $! > jackd.pid"],
                       cwd=ws.root, env=ws.env, stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, start_new_session=True, timeout=10,
                       check=True)
    pid = int((ws.root / "jackd.pid").read_text())
    try:
        deadline = time.monotonic() + JACK_START_S
        while _probe_jack(ws.env) is None:
            assert time.monotonic() < deadline, f"jackd did not start:\n{log.read_text()}"
            time.sleep(0.2)
        yield ws
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def use_readme_jack(ws: Workspace, request: pytest.FixtureRequest) -> str:
    """Point the workspace's programs at the README's JACK server; its name."""
    server = request.getfixturevalue("readme_jack").env["JACK_DEFAULT_SERVER"]
    ws.env["JACK_DEFAULT_SERVER"] = server
    return server


class JackSynths:
    """JACK clients with a MIDI input each, standing in for hardware synths.

    They live in a child process: libjack keeps per-process state, and this test process
    already has clients on the session's other JACK server (tests/live), so opening and
    closing clients of a second server here crashed it (a segfault in deactivate)."""

    _CHILD = ("import sys, jack\n"
              "clients = []\n"
              "for name in sys.argv[2:]:\n"
              "    c = jack.Client(name, servername=sys.argv[1], no_start_server=True)\n"
              "    c.midi_inports.register('in'); c.activate(); clients.append(c)\n"
              "print('ready', flush=True)\n"
              "sys.stdin.read()\n"
              "for c in clients:\n"
              "    c.deactivate(); c.close()\n")

    def __init__(self, names: tuple[str, ...], server: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", self._CHILD, server, *names],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"the stand-in synths did not start (got {line!r})")

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---- runs shared by several commands ----------------------------------------------------
@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Workspace:
    """The README's render command, run once: stats and plot read what it wrote."""
    ws = Workspace.make(tmp_path_factory.mktemp("render"))
    output = ws.run(TABLE[RENDER].line(RENDER))
    assert "8 bars" in output, output
    return ws


@dataclass
class LiveSet:
    output: str
    returncode: int
    set_dir: Path
    echoed: dict[str, list[tuple]]


@pytest.fixture(scope="module")
def live_set(readme_jack: Workspace, tmp_path_factory) -> LiveSet:
    """The README's tablet walk-through, once: replay reads the set it recorded."""
    ws = Workspace.make(tmp_path_factory.mktemp("newcomer"))
    ws.env["JACK_DEFAULT_SERVER"] = readme_jack.env["JACK_DEFAULT_SERVER"]
    port = free_udp_port("0.0.0.0")
    ws.write("patches/my_patch.toml", substitute(
        toml_block("[osc]"), ("port = 9000", f"port = {port}"),
        ('allow = ["192.168.1.20"]', 'allow = ["127.0.0.1"]')))
    with LiveProcess(TABLE[LIVE].line(LIVE), ws) as live:
        live.wait_for(r"OSC on ", "the OSC server")
        echoed = tablet_session(port, live)
        live.interrupt()
    sets = sorted((ws.root / "sets").iterdir())
    assert len(sets) == 1, sets
    return LiveSet(live.output, live.returncode, sets[0], echoed)


class LiveProcess:
    """``encore live`` in its own process group, its output read as it comes."""

    def __init__(self, command: str, ws: Workspace, *, tty: int | None = None) -> None:
        self.command = command
        streams = {"stdin": tty, "stdout": tty, "stderr": tty} if tty is not None else {
            "stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE,
            "stderr": subprocess.STDOUT}
        self.process = subprocess.Popen(["bash", "-c", command], cwd=ws.root, env=ws.env,
                                        start_new_session=True, **streams)
        self.chunks: list[str] = []
        self._reader: threading.Thread | None = None
        if tty is None:
            self.read_from(self.process.stdout.fileno())

    def read_from(self, fd: int) -> None:
        """Keep reading ``fd`` (a pipe, or a pty's master) in a thread, so the process
        never blocks on a full pipe."""
        def read() -> None:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # a pty whose terminal side is closed
                    return
                if not data:
                    return
                self.chunks.append(data.decode("utf-8", "replace"))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.chunks)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def wait_for(self, pattern: str, what: str, timeout: float = LIVE_START_S) -> None:
        """Until the output matches the regular expression ``pattern``."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output):
            if self.process.poll() is not None:
                pytest.fail(f"`{self.command}` exited {self.process.returncode} before "
                            f"{what}:\n{self.output[-4000:]}")
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.output}"
            time.sleep(0.05)

    def wait_until(self, done: Callable[[], bool], what: str,
                   timeout: float = LIVE_START_S) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert self.process.poll() is None, f"exited before {what}:\n{self.output[-4000:]}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.output}"
            time.sleep(0.1)

    def interrupt(self, timeout: float = 60) -> None:
        """Ctrl-C: SIGINT to the whole process group, as a terminal sends it."""
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout)

    def __enter__(self) -> LiveProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self._reader is not None:
            self._reader.join(5)


# What the README says a tablet sends (step 4 of "Connecting a tablet").
TABLET_SENDS = (("/encore/tempo", 120.0), ("/encore/section/next", None),
                ("/encore/part/bass/mute", 1))


def tablet_session(port: int, live: LiveProcess, timeout: float = 30) -> dict[str, list]:
    """Say hello, wait until the set plays its second bar (the engine's feedback says
    which), send the README's messages and ``/encore/status``, and collect what comes
    back until the changes are echoed (they land on the next bar line)."""
    from pythonosc.udp_client import SimpleUDPClient

    tablet = SimpleUDPClient("127.0.0.1", port)
    echoed: dict[str, list[tuple]] = {}

    def receive_until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"no {what} within {timeout} s: {echoed}"
            data = tablet.receive(0.5)
            if not data:
                assert live.process.poll() is None, f"encore live stopped:\n{live.output}"
                continue
            for message in parse_datagram(data):
                echoed.setdefault(message.address, []).append(message.args)

    try:
        tablet.send_message("/encore/hello", None)
        receive_until(lambda: any(int(bar) >= 1 for bar, in
                                  echoed.get("/encore/status/bar", [])), "second bar")
        for address, value in TABLET_SENDS:
            tablet.send_message(address, value)
        tablet.send_message("/encore/status", None)
        receive_until(lambda: (120.0,) in echoed.get("/encore/tempo", []) and
                      (1,) in echoed.get("/encore/part/bass/mute", []), "echo of the changes")
    finally:
        tablet._sock.close()
    return echoed


# ---- the runners --------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """How the test runs one README command.

    ``runs``: the command line run, when it is not the README's own (``{set}`` is filled
    in at run time); ``why``: the reason, required then. ``setup``
    makes the files the command needs in the workspace; ``check`` looks at its output and
    what it wrote. ``runner`` replaces the plain run (a subprocess in a fresh workspace);
    ``same_as`` names another README command whose run covers this one.
    """

    runs: str = ""
    why: str = ""
    setup: Callable[[Workspace, pytest.FixtureRequest], None] | None = None
    check: Callable[[str, Workspace], None] | None = None
    runner: Callable[[str, Run, Workspace, pytest.FixtureRequest], None] | None = None
    same_as: str = ""
    jack: bool = False  # runs with the README's JACK dummy server up

    def line(self, command: str) -> str:
        """The command line run for the README's ``command``."""
        return self.runs or command


def plain(command: str, run: Run, ws: Workspace, request: pytest.FixtureRequest) -> None:
    if run.jack:
        use_readme_jack(ws, request)
    if run.setup is not None:
        run.setup(ws, request)
    output = ws.run(run.line(command))
    if run.check is not None:
        run.check(output, ws)


def expect(*texts: str) -> Callable[[str, Workspace], None]:
    def check(output: str, ws: Workspace) -> None:
        for text in texts:
            assert text in output, f"{text!r} not in:\n{output[-4000:]}"
    return check


def files(*paths: str, says: str = "") -> Callable[[str, Workspace], None]:
    def check(output: str, ws: Workspace) -> None:
        for path in paths:
            assert (ws.root / path).is_file() and (ws.root / path).stat().st_size > 0, (
                f"{path} was not written:\n{output[-4000:]}")
        if says:
            assert says in output, output[-4000:]
    return check


def run_rendered(command: str, run: Run, ws: Workspace, request) -> None:
    rendered = request.getfixturevalue("rendered")
    if command != RENDER:
        output = rendered.run(run.line(command))
        run.check(output, rendered)
        return
    out = rendered.root / "out"
    for name in ("song.mid", "song.wav", "song.jsonl"):
        assert (out / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (out / "song.jsonl").read_text().splitlines()]
    assert sum(r.get("type") == "bar" for r in records) == 8
    assert any(r.get("type") == "lyric" for r in records), "no lyric line in 8 bars"


def run_newcomer(command: str, run: Run, ws: Workspace, request) -> None:
    live = request.getfixturevalue("live_set")
    assert live.returncode == 0, live.output[-4000:]
    assert "stopped: {" in live.output and "Traceback" not in live.output, live.output
    health = ast.literal_eval(live.output.split("stopped: ", 1)[1].splitlines()[0])
    assert health["osc"]["good"] >= len(TABLET_SENDS) + 2 and health["osc"]["not_allowed"] == 0
    assert health["commands_applied"] >= len(TABLET_SENDS)
    # the tablet got every control's value back: its changes, and the state it asked for
    assert (120.0,) in live.echoed["/encore/tempo"]
    assert (1,) in live.echoed["/encore/part/bass/mute"]
    assert "/encore/status/section" in live.echoed and "/encore/walk/speed" in live.echoed
    # the set's log and MIDI file hold the tablet's changes
    records = [json.loads(line) for line in (live.set_dir / "song.jsonl").read_text().splitlines()]
    controls = {r["address"]: r for r in records if r.get("type") == "control"}
    assert controls["/encore/tempo"]["values"] == [120.0]
    assert controls["/encore/part/bass/mute"]["values"] == [1]
    assert "/encore/section/next" in controls
    tempo_bar = controls["/encore/tempo"]["at_bar"]
    assert any(r.get("type") == "bar" and r["bar"] >= tempo_bar for r in records), (
        "the set stopped before the tempo change landed")
    song = mido.MidiFile(live.set_dir / "song.mid")
    tempos = [round(mido.tempo2bpm(m.tempo), 3) for m in song if m.type == "set_tempo"]
    assert tempos[0] == 112.0 and 120.0 in tempos, tempos
    muted_from = (controls["/encore/part/bass/mute"]["after_bar"] + 1) * 4 * song.ticks_per_beat
    bass_channel = 2 - 1  # [parts.bass] channel in the default patch
    ticks, late_bass = 0, []
    for message in song.tracks[0]:
        ticks += message.time
        if message.type == "note_on" and message.velocity and message.channel == bass_channel \
                and ticks > muted_from + song.ticks_per_beat // 8:
            late_bass.append(ticks)
    assert late_bass == [], f"bass notes after the mute: {late_bass}"


def run_stage_page(command: str, run: Run, ws: Workspace, request) -> None:
    """The README's [web] block (a free port) and `encore live --web`; a page (aiohttp's
    WebSocket client, as the browser page speaks) is refused with a wrong PIN, let in with
    the README's, and mutes the bass; Ctrl-C; the set's log holds the touch."""
    use_readme_jack(ws, request)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        web_port = sock.getsockname()[1]
    ws.write("patches/my_patch.toml", f"{toml_block('[web]')}port = {web_port}\n\n"
             "[osc]\nport = 0\n")
    with LiveProcess(run.line(command), ws) as live:
        live.wait_for(r"stage page on ", "the stage page")
        assert re.search(rf"stage page: http://[\d.]+:{web_port}/ \(PIN 4711\)",
                         live.output), live.output
        touched = asyncio.run(page_session(web_port, live))
        live.interrupt()
    assert live.returncode == 0, live.output[-4000:]
    assert "Traceback" not in live.output, live.output
    health = ast.literal_eval(live.output.split("stopped: ", 1)[1].splitlines()[0])
    assert health["web"]["wrong_pin"] == 1 and health["web"]["pages"] == 1
    assert health["web"]["commands"]["good"] == 1
    (set_dir,) = sorted((ws.root / "sets").iterdir())
    records = [json.loads(line) for line in (set_dir / "song.jsonl").read_text().splitlines()]
    controls = [r for r in records if r.get("type") == "control"]
    assert [(c["address"], c["values"]) for c in controls] == [("/encore/part/bass/mute", [1])]
    assert controls[0]["after_bar"] >= touched["bar"] - 1


async def page_session(port: int, live: LiveProcess, timeout: float = 60) -> dict:
    """What the stage page does: hello with the PIN, read frames, touch the bass mute."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/ws"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200 and "stage.js" in await response.text()
        async with session.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"type": "hello", "pin": "0000"}))
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4003, msg
        async with session.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"type": "hello", "pin": "4711"}))
            deadline, touched = time.monotonic() + timeout, None
            async for msg in ws:
                assert time.monotonic() < deadline, f"no landed mute:\n{live.output[-4000:]}"
                frame = json.loads(msg.data)
                if frame["type"] != "state" or not frame["started"]:
                    continue
                if touched is None:
                    touched = {"bar": frame["bar"]}
                    await ws.send_str(json.dumps({"type": "osc", "args": [1],
                                                  "address": "/encore/part/bass/mute"}))
                elif frame["values"]["/encore/part/bass/mute"] == 1 and not frame["pending"]:
                    return touched
    pytest.fail(f"the page was closed:\n{live.output[-4000:]}")


def run_replay(command: str, run: Run, ws: Workspace, request) -> None:
    live = request.getfixturevalue("live_set")
    shutil.copytree(live.set_dir, ws.root / "sets" / live.set_dir.name)
    output = ws.run(run.runs.format(set=live.set_dir.name))
    assert "replayed" in output and "of a live set" in output, output
    replay = ws.root / "sets" / live.set_dir.name / "replay"
    assert (replay / "song.mid").stat().st_size > 0 and (replay / "song.wav").stat().st_size > 0


def run_dashboard(command: str, run: Run, ws: Workspace, request) -> None:
    """On a terminal (a pseudo-terminal): wait for the dashboard and a bar, press q."""
    use_readme_jack(ws, request)
    free_default(ws, request)

    def a_bar_is_recorded() -> bool:
        logs = list(ws.root.glob("sets/*/song.jsonl"))
        return bool(logs) and '"type":"bar"' in logs[0].read_text()

    master, slave = os.openpty()
    termios.tcsetwinsize(slave, (40, 120))
    try:
        with LiveProcess(run.line(command), ws, tty=slave) as live:
            os.close(slave)
            slave = -1
            live.read_from(master)
            live.wait_for("ENCORE", "the dashboard")
            live.wait_until(a_bar_is_recorded, "a bar in the set's song.jsonl")
            os.write(master, b"q")
            live.process.wait(60)
        assert live.returncode == 0, live.output[-4000:]
        assert "stopped: {" in live.output and "Traceback" not in live.output, live.output
        assert next(ws.root.glob("sets/*/song.mid")).stat().st_size > 0
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def run_jackd(command: str, run: Run, ws: Workspace, request) -> None:
    """The fixture ran it; the server it started runs at the README's rate and period."""
    readme_jack = request.getfixturevalue("readme_jack")
    assert _probe_jack(readme_jack.env) == "48000 256"


def run_make_test(command: str, run: Run, ws: Workspace, request) -> None:
    """Not run here (it runs these tests): CI runs it, through .ci/run."""
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    steps = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    assert steps == ["make test"], steps
    assert re.search(r"^test: setup\n\t\$\(VENV\)/bin/ruff check \.\n"
                     r"\t\$\(VENV\)/bin/python -m pytest", (REPO / "Makefile").read_text(), re.M)


def run_pip(command: str, run: Run, ws: Workspace, request) -> None:
    output = ws.run(run.runs, cwd=REPO, ok=False)
    offline = re.search(r"(Failed to establish a new connection|Temporary failure in name "
                        r"resolution|Network is unreachable|No matching distribution found "
                        r"for setuptools)[^\n]*", output)
    if offline:
        pytest.skip(f"the package index is unreachable: {offline.group(0)}")
    assert "Would install encore-engine" in output, output[-4000:]
    extra = re.search(r"\[(\w+)\]", command).group(1)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert extra in pyproject["project"]["optional-dependencies"]


def run_hardware_doctor(command: str, run: Run, ws: Workspace, request) -> None:
    """The README's hardware patch, with JACK clients named like its synths."""
    server = use_readme_jack(ws, request)
    ws.write("patches/my_patch.toml", toml_block("[parts.bass]")
             + f"\n[osc]\nport = {free_udp_port()}\n")
    synths = JackSynths(("USB MIDI", "TR-8"), server)
    try:
        output = ws.run(run.line(command))
    finally:
        synths.close()
    for line in ("OK   MIDI port        'USB MIDI' (bass) -> 'USB MIDI:in'",
                 "OK   MIDI port        'TR-8' (drums) -> 'TR-8:in'",
                 "OK   MIDI clock out   'TR-8' -> 'TR-8:in'", "JACK running"):
        assert line in output, output


# ---- setups -------------------------------------------------------------------------------
def free_default(ws: Workspace, request) -> None:
    ws.write("default_free_osc.toml", default_patch_with_port(free_udp_port()))


def tablet_patch(ws: Workspace, request) -> None:
    ws.write("patches/my_patch.toml", toml_block("[osc]"))


def readme_copy(ws: Workspace, request) -> None:
    shutil.copy(README, ws.root / "README.md")


def check_readme_unchanged(output: str, ws: Workspace) -> None:
    assert output.strip() == "README.md: up to date", output
    assert (ws.root / "README.md").read_bytes() == README.read_bytes()


def lyrics_files(ws: Workspace, request) -> None:
    (ws.root / "models_onnx").mkdir()
    (ws.root / "models_onnx" / "lyrics_gpt2").symlink_to(REPO / "models_onnx" / "lyrics_gpt2")
    ws.write("my_lyrics.txt", "the night is long and the road is cold\n"
             "i walk alone beneath the silver moon\n\n"
             "we sing the old songs when the night is young\n"
             "hold me close before the morning comes\n")


def check_lyricist(output: str, ws: Workspace) -> None:
    from engine.lyrics.gpt2_runner import GPT2Lyricist

    assert "exported to models_onnx/my_lyrics" in output, output[-4000:]
    lyricist = GPT2Lyricist.load(ws.root / "models_onnx" / "my_lyrics",
                                 providers=["CPUExecutionProvider"])
    assert lyricist.config


def midi_folder(ws: Workspace, request) -> None:
    """Two small MIDI files, melody and bass, in ~/my_midi (HOME is the workspace)."""
    ws.env["HOME"] = str(ws.root)
    for n in range(2):
        song = mido.MidiFile(ticks_per_beat=480)
        for channel, program, low in ((0, 0, 67), (1, 33, 36)):
            track = mido.MidiTrack([mido.Message("program_change", channel=channel,
                                                 program=program)])
            for step in range(16 * 8):  # 8 bars of 8th notes
                pitch = low + (0, 2, 4, 5, 7, 9, 7, 4)[(step + n) % 8]
                track += [mido.Message("note_on", channel=channel, note=pitch, velocity=90),
                          mido.Message("note_off", channel=channel, note=pitch, time=240)]
            song.tracks.append(track)
        (ws.root / "my_midi").mkdir(exist_ok=True)
        song.save(ws.root / "my_midi" / f"song{n}.mid")


def trio_checkpoint(ws: Workspace, request) -> None:
    """runs/my_trio/last.pt: a tiny trio MusicVAE, as training would leave it."""
    pytest.importorskip("torch")
    from export.musicvae import MusicVAE, MusicVAEConfig, save_checkpoint

    config = MusicVAEConfig(name="my_trio", parts=("melody", "bass", "drums"), bars=2,
                            enc_size=8, z_size=8, dec_size=8, dec_layers=2, conductor_size=8,
                            conductor_layers=2)
    (ws.root / "runs" / "my_trio").mkdir(parents=True)
    save_checkpoint(ws.root / "runs" / "my_trio" / "last.pt", MusicVAE(config), step=0)
    (ws.root / "models_onnx").mkdir()


def check_trio(output: str, ws: Workspace) -> None:
    from engine.music.musicvae_runner import load_model

    model = load_model("my_trio", model_dir=ws.root / "models_onnx",
                       providers=["CPUExecutionProvider"])
    assert model.name == "my_trio"


def gpt2_folder(ws: Workspace, request) -> None:
    """DIR: the tiny GPT-2 Hugging Face folder of tests/conftest.py."""
    (ws.root / "DIR").symlink_to(request.getfixturevalue("tiny_gpt2_hf_dir"))
    (ws.root / "models_onnx").mkdir()


def magenta_folder(ws: Workspace, request) -> None:
    """DIR: a magenta.js melody checkpoint written by tests/export/test_convert_magenta_js.py."""
    import numpy as np

    path = REPO / "tests" / "export" / "test_convert_magenta_js.py"
    spec = importlib.util.spec_from_file_location("readme_magenta_js", path)
    helpers = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = helpers  # its dataclasses look their module up
    spec.loader.exec_module(helpers)
    config, weights = helpers.flat_melody(np.random.default_rng(0))
    helpers.write_checkpoint(ws.root / "DIR", config, weights)
    (ws.root / "models_onnx").mkdir()


# ---- the table ----------------------------------------------------------------------------
RENDER = ".venv/bin/encore render --patch default --bars 64 --seed 3 -o out/"
LIVE = ".venv/bin/encore live --patch patches/my_patch.toml"
FREE_PORT = ("the shipped default patch with only [osc] port set to a free port "
             "(default_free_osc.toml): 9000 may be in use on a test machine")
PIP_DRY_RUN = ("--dry-run --no-deps: resolve the package and its extra without installing "
               "anything; skipped, visibly, when the package index is unreachable")

TABLE: dict[str, Run] = {
    "make render": Run(
        runs=f"make -C {REPO} render OUT=$PWD/out BARS=4",
        why="-C: make runs in the repository; OUT=$PWD/out puts the song in this test's "
            "folder; BARS=4 instead of 64, for time",
        check=files("out/song.mid", "out/song.wav", "out/song.jsonl", says="4 bars")),
    "make test": Run(runner=run_make_test,
                     why="not run here (it runs this test): .ci/run, how CI runs the tests, "
                         "must run exactly `make test`"),
    "make setup": Run(runs=f"make -C {REPO} setup", why="-C: make runs in the repository",
                      check=expect("setup: ")),
    RENDER: Run(runs=RENDER.replace("--bars 64", "--bars 8"), runner=run_rendered,
                why="8 bars instead of 64, for time (enough for the first lyric lines)"),
    ".venv/bin/encore stats out/song.jsonl": Run(
        runner=run_rendered, check=expect("in_key_ratio")),
    "encore plot out/song.jsonl": Run(
        runner=run_rendered, check=files("out/pianoroll.png", "out/latent.png")),
    JACKD: Run(runner=run_jackd, why="runs as written, with JACK_DEFAULT_SERVER set to a "
               "name of this test's own, so a JACK server already running is left alone"),
    ".venv/bin/encore doctor --patch default": Run(
        runs=".venv/bin/encore doctor --patch default_free_osc.toml", why=FREE_PORT,
        setup=free_default, jack=True,
        check=expect("JACK running", "OK   OSC port", ": ready to play")),
    "encore doctor": Run(same_as=".venv/bin/encore doctor --patch default"),
    "encore doctor --patch patches/my_patch.toml": Run(
        runner=run_hardware_doctor,
        why="patches/my_patch.toml is the README's hardware patch, plus a free [osc] port; "
            "JACK clients named USB MIDI and TR-8 stand in for the synths"),
    ".venv/bin/encore devices": Run(jack=True, check=expect("MIDI outputs (jack)",
                                                            "Audio outputs:")),
    "encore devices": Run(jack=True, check=expect("MIDI outputs (jack)", "Audio outputs:")),
    ".venv/bin/encore live --patch default --dashboard": Run(
        runs=".venv/bin/encore live --patch default_free_osc.toml --dashboard",
        why=FREE_PORT + "; on a pseudo-terminal, quit with q once a bar has played",
        runner=run_dashboard),
    LIVE: Run(runner=run_newcomer,
              why="patches/my_patch.toml is the README's [osc] block with a free port and "
                  "the tablet at 127.0.0.1 (the test's tablet is on this computer); stopped "
                  "with Ctrl-C (SIGINT) once the tablet's changes are echoed"),
    ".venv/bin/encore live --patch patches/my_patch.toml --web": Run(
        runner=run_stage_page,
        why="patches/my_patch.toml is the README's [web] block with a free port (and a free "
            "OSC port); a page on this computer gives a wrong PIN, then the README's, mutes "
            "the bass; stopped with Ctrl-C"),
    "encore replay sets/<set>/song.jsonl": Run(
        runs="encore replay sets/{set}/song.jsonl", runner=run_replay,
        why="<set>: the set the tablet walk-through recorded"),
    ".venv/bin/python -m engine.patch patches/my_patch.toml": Run(
        setup=tablet_patch, check=expect("patches/my_patch.toml: ok")),
    "encore layout touchosc -o encore.tosc": Run(check=files("encore.tosc")),
    "encore layout open-stage-control -o encore.json": Run(check=files("encore.json")),
    "encore osc-map": Run(check=expect("| `/encore/tempo` |", "| `/encore/part/bass/mute` |")),
    "encore osc-map --readme README.md": Run(setup=readme_copy, check=check_readme_unchanged),
    "pip install -e '.[dnssd]'": Run(
        runs="pip install --dry-run --no-deps -e '.[dnssd]'", runner=run_pip,
        why=PIP_DRY_RUN),
    "pip install -e '.[export]'": Run(
        runs="pip install --dry-run --no-deps -e '.[export]'", runner=run_pip,
        why=PIP_DRY_RUN),
    "pip install -e '.[bench]'": Run(
        runs="pip install --dry-run --no-deps -e '.[bench]'", runner=run_pip,
        why=PIP_DRY_RUN),
    ".venv/bin/python benchmarks/bench_voice_intelligibility.py": Run(
        runs=".venv/bin/python benchmarks/bench_voice_intelligibility.py --phrases 1 "
             "--repeats 1 --only sung/flite spoken/espeak",
        why="one phrase, one render, two singers (the fallback singer on Flite, espeak-ng "
            "speaking)", check=expect("sung/flite", "PER pooled")),
    "pip install -e '.[link]'": Run(
        runs="pip install --dry-run --no-deps -e '.[link]'", runner=run_pip,
        why=PIP_DRY_RUN),
    ".venv/bin/encore train lyrics --from models_onnx/lyrics_gpt2 --text my_lyrics.txt "
    "--out runs/mine --onnx models_onnx/my_lyrics": Run(
        runs=".venv/bin/encore train lyrics --from models_onnx/lyrics_gpt2 --text "
             "my_lyrics.txt --out runs/mine --onnx models_onnx/my_lyrics --steps 2",
        why="--steps 2 instead of 300; my_lyrics.txt: four lines written by the test; "
            "models_onnx/lyrics_gpt2 is the shipped model",
        setup=lyrics_files, check=check_lyricist),
    "encore convert gpt2 DIR models_onnx/NAME": Run(
        why="DIR: the tiny GPT-2 folder of tests/conftest.py; NAME is taken as the name",
        setup=gpt2_folder, check=files("models_onnx/NAME/model.onnx",
                                       "models_onnx/NAME/tokenizer.json")),
    ".venv/bin/encore train musicvae --preset trio_4bar --midi-dir ~/my_midi --out runs/my_trio "
    "--name my_trio": Run(
        runs=".venv/bin/encore train musicvae --preset trio_4bar --midi-dir ~/my_midi --out "
             "runs/my_trio --name my_trio --max-steps 2 --minutes 0.5 --batch-size 4",
        why="2 steps of batch 4 instead of an hour; ~/my_midi: two 8-bar MIDI files (HOME is "
            "the test's folder)",
        setup=midi_folder, check=files("runs/my_trio/last.pt", "runs/my_trio/metrics.json",
                                       says='"steps": 2,')),
    ".venv/bin/torchrun --standalone --nproc_per_node 2 .venv/bin/encore train musicvae "
    "--preset trio_4bar --midi-dir ~/my_midi --out runs/my_trio --name my_trio": Run(
        runs=".venv/bin/torchrun --standalone --nproc_per_node 2 .venv/bin/encore train "
             "musicvae --preset trio_4bar --midi-dir ~/my_midi --out runs/my_trio --name "
             "my_trio --max-steps 2 --minutes 0.5 --batch-size 4",
        why="2 steps of batch 4 a rank instead of an hour; ~/my_midi: two 8-bar MIDI files",
        setup=midi_folder, check=files("runs/my_trio/last.pt", "runs/my_trio/metrics.json",
                                       says="2 rank(s): batch 4 a rank, effective batch 8")),
    ".venv/bin/torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint "
    "HOST:29500 --rdzv_id my_trio .venv/bin/encore train musicvae --preset trio_4bar "
    "--midi-dir ~/my_midi --out runs/my_trio --name my_trio --device cuda": Run(
        runs=".venv/bin/torchrun --nnodes 1 --nproc_per_node 2 --rdzv_backend c10d "
             "--rdzv_endpoint localhost:0 --rdzv_id my_trio .venv/bin/encore train musicvae "
             "--preset trio_4bar --midi-dir ~/my_midi --out runs/my_trio --name my_trio "
             "--device cpu --max-steps 2 --minutes 0.5 --batch-size 4",
        why="no cluster or GPU here: one machine of the two, 2 CPU processes instead of 4 "
            "GPUs, through the same c10d rendezvous on localhost (port 0: a free one); 2 steps",
        setup=midi_folder, check=files("runs/my_trio/last.pt", "runs/my_trio/metrics.json",
                                       says="2 rank(s): batch 4 a rank, effective batch 8")),
    ".venv/bin/encore export musicvae runs/my_trio/last.pt models_onnx/": Run(
        why="runs/my_trio/last.pt: a tiny trio checkpoint named my_trio made by the test",
        setup=trio_checkpoint, check=check_trio),
    "encore convert magenta-js DIR models_onnx/ --name my_model": Run(
        why="DIR: a small magenta.js melody checkpoint (tests/export/test_convert_magenta_js.py)",
        setup=magenta_folder, check=files("models_onnx/my_model.decoder.onnx")),
    ".venv/bin/python benchmarks/bench_musicvae.py": Run(
        runs=".venv/bin/python benchmarks/bench_musicvae.py --runs 1 --warmup 0",
        why="one timed run, no warm-up", check=expect("ORT unrolled")),
    ".venv/bin/python benchmarks/bench_render.py": Run(
        runs=".venv/bin/python benchmarks/bench_render.py --bars 4 --runs 1",
        why="one render of 4 bars", check=expect("in-key ratio")),
    ".venv/bin/python benchmarks/bench_lyrics_gpt2.py": Run(
        runs=".venv/bin/python benchmarks/bench_lyrics_gpt2.py --shapes shipped --threads 1 "
             "--runs 1 --quick --no-ct2",
        why="the shipped model only, one thread, one run, 8 tokens, without CTranslate2",
        check=expect("ours vs transformers")),
    ".venv/bin/python benchmarks/bench_lyrics_fit.py": Run(
        runs=".venv/bin/python benchmarks/bench_lyrics_fit.py --bars 8 --seeds 1",
        why="8 bars (the first sung ones), one seed", check=expect("gpt2       1     2")),
    ".venv/bin/python benchmarks/bench_soak.py": Run(
        runs=".venv/bin/python benchmarks/bench_soak.py --minutes 0.2",
        why="12 s of song instead of hours (its --live is not run)", check=expect("PASS")),
    ".venv/bin/python -m engine.live.audio_core": Run(check=expect("audio core:")),
    ".venv/bin/python benchmarks/bench_audio_core.py": Run(
        runs=".venv/bin/python benchmarks/bench_audio_core.py --seconds 2 --periods 256 "
             "--loads processes",
        why="2 s a run at one period instead of 30 s at two; one load of the three (two "
            "busy processes: both paths and the C client's floor)",
        check=expect("summary", "busy processes  core", "C client xruns")),
    ".venv/bin/python benchmarks/bench_web_timing.py": Run(
        runs=".venv/bin/python benchmarks/bench_web_timing.py --midi-only --blocks 1 "
             "--block-bars 1",
        why="one bar each way, MIDI only (no synth, no voice)", check=expect("4 pages")),
    ".venv/bin/python benchmarks/bench_voicebank.py": Run(
        runs=".venv/bin/python benchmarks/bench_voicebank.py --small --steps 2 --runs 1 "
             "--seconds 1",
        why="the small shapes, 2 steps, one run of a 1 s phrase", check=expect("RTF")),
    ".venv/bin/python benchmarks/bench_voicebank.py --compare": Run(
        runs=".venv/bin/python benchmarks/bench_voicebank.py --compare --small --steps 1 2 "
             "--runs 1 --seconds 1 --busy 0",
        why="the small shapes, 1 and 2 steps, one run of a 1 s phrase, no busy phase",
        check=expect("signal-to-difference")),
    ".venv/bin/python benchmarks/bench_music_eval.py": Run(
        runs=".venv/bin/python benchmarks/bench_music_eval.py --patches default --seeds 1 "
             "--bars 8 --chorales 2 --folk 2 --drum-windows 10 --band 3",
        why="one 8-bar render of one patch, 2 chorales, 2 folk tunes, 3 Freedoom pieces, "
            "10 drum windows",
        check=expect("Goals (Encore, default)")),
}
RUNS = [command for command, run in TABLE.items() if not run.same_as]


# ---- the tests ----------------------------------------------------------------------------
def test_every_readme_command_is_in_the_table_and_every_entry_in_the_readme() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    missing = [c for c in commands if c not in TABLE]
    stale = [c for c in TABLE if c not in commands]
    assert not missing, ("README.md has commands no test runs; add each to TABLE in "
                         f"tests/test_readme_commands.py with how to run it: {missing}")
    assert not stale, ("TABLE in tests/test_readme_commands.py has commands README.md no "
                       f"longer has; remove them: {stale}")
    for command, run in TABLE.items():
        if run.same_as:
            assert not TABLE[run.same_as].same_as, f"{command}: same_as a same_as"
        elif run.runs and run.runs != command or run.runner is run_make_test:
            assert run.why, f"{command}: runs as {run.runs!r}; say why in `why`"


def test_the_readme_extractor() -> None:
    text = ("```sh\n.venv/bin/encore a --x 1   # comment\n# a comment line\nencore b \\\n"
            "    --y 2\n```\nProse `encore c\nd` and `--flag` and `make render OUT=x`.\n"
            "```toml\n[osc]\n```\n")
    assert readme_commands(text) == [".venv/bin/encore a --x 1", "encore b --y 2",
                                     "encore c d", "make render OUT=x"]


def test_the_readme_begins_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[2] == "```sh" and lines[3].startswith("make render ") and \
        lines[4].startswith("make test "), lines[:6]


def test_the_osc_reference_is_up_to_date() -> None:
    text = README.read_text(encoding="utf-8")
    assert README_BEGIN in text and README_END in text, "README.md lost its osc-map markers"
    between = text[text.index(README_BEGIN) + len(README_BEGIN):text.index(README_END)]
    assert between.strip() == osc_map_markdown().strip(), (
        "the OSC reference in README.md differs from the address table; run: "
        ".venv/bin/encore osc-map --readme README.md")


def test_every_toml_snippet_is_a_valid_patch_alone_and_merged() -> None:
    blocks = toml_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    merged: dict = {}
    for n, block in enumerate(blocks, 1):
        source = f"README.md toml block {n}"
        try:
            parse_patch(block, source=source)
        except PatchError as err:
            pytest.fail(f"{err}\n--- the block:\n{block}")
        _merge(merged, tomllib.loads(block))
    build_patch(merged, "README.md, every toml block merged")


def _merge(into: dict, data: dict) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@pytest.mark.parametrize("command", RUNS, ids=[c if len(c) <= 72 else c[:69] + "..."
                                               for c in RUNS])
def test_readme_command_runs(command: str, tmp_path: Path, request) -> None:
    run = TABLE[command]
    ws = Workspace.make(tmp_path)
    (run.runner or plain)(command, run, ws, request)


def test_the_recorded_tempo_change_sits_on_its_bar(live_set: LiveSet) -> None:
    records = [json.loads(line) for line in
               (live_set.set_dir / "song.jsonl").read_text().splitlines()]
    change = next(r for r in records if r.get("address") == "/encore/tempo")
    song = mido.MidiFile(live_set.set_dir / "song.mid")
    ticks, at = 0, []
    for message in song.tracks[0]:
        ticks += message.time
        if message.type == "set_tempo" and round(mido.tempo2bpm(message.tempo), 3) == 120.0:
            at.append(ticks / song.ticks_per_beat)
    assert at == [4.0 * change["at_bar"]]
