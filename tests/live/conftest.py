"""Fixtures for the live engine: a real JACK server, and a JACK MIDI receiver.

``jack_server``: a ``jackd -d dummy -r 48000 -p 64`` started once per session, detached in
its own process group, stopped by PID at the end; a JACK server already running (started
by another test module, or by hand) is used as it is and left running. Skips only when
the ``jackd`` binary is absent (the setup installs jackd2, so CI runs these tests).

``jack_receiver``: a JACK client in this process with one MIDI input, stamping every
event with its frame (``last_frame_time`` + offset in the cycle), and counting the cycles
it missed (JACK drops or repeats MIDI for a client that misses its deadline, so a test
that sees a wrong stream after one knows the overloaded machine is the likely cause).

Only a process callback, never a JACK *notification* callback in Python (xrun, port or
client registration): the server waits for every client to answer a notification while
it registers a new client, and python-rtmidi holds the GIL while it opens one, so a
Python notification callback in the same process deadlocks the server (seen here).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

JACKD_ARGS = ["-d", "dummy", "-r", "48000", "-p", "64"]
START_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 5.0
_PROBE = "import jack; jack.Client('encore-probe', no_start_server=True).close()"


def _jack_server_running() -> bool:
    """Whether a JACK server takes clients; asked in a child process, so that a server
    that hangs fails the tests instead of hanging them."""
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True,
                               timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a JACK server runs but did not take a client within {PROBE_TIMEOUT_S} s "
                    "(one of its clients is stuck?); stop it (pgrep -a jackd) and rerun")
    return probe.returncode == 0


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory) -> Iterator[str]:
    """The name of the way the server was found: "started" or "reused"."""
    jackd = shutil.which("jackd")
    if jackd is None:
        pytest.skip("jackd is not installed (apt-get install jackd2); the JACK MIDI tests "
                    "need a JACK server")
    if _jack_server_running():
        yield "reused"
        return
    log_path: Path = tmp_path_factory.mktemp("jackd") / "jackd.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([jackd, *JACKD_ARGS], stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # setsid: its own group
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _jack_server_running():
            if process.poll() is not None and not _jack_server_running():
                pytest.fail(f"jackd exited with {process.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"jackd did not accept clients within {START_TIMEOUT_S} s:\n"
                            f"{log_path.read_text()}")
            time.sleep(0.1)
        # exited early yet a server answers: another session started one just before us
        yield "started" if process.poll() is None else "reused"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


class JackReceiver:
    """A JACK MIDI input in this process; ``events`` holds ``(frame, bytes)``."""

    def __init__(self, name: str = "encore-test-rx") -> None:
        import jack

        self.client = jack.Client(name, no_start_server=True)
        self.inport = self.client.midi_inports.register("in")
        self.events: list[tuple[int, bytes]] = []
        self.missed_cycles = 0
        self._next_frame: int | None = None
        self._lock = threading.Lock()
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        base = self.client.last_frame_time
        if self._next_frame is not None and base != self._next_frame:
            self.missed_cycles += 1
        self._next_frame = base + frames
        for offset, data in self.inport.incoming_midi_events():
            with self._lock:
                self.events.append((base + offset, bytes(data)))

    @property
    def port_name(self) -> str:
        return self.inport.name

    @property
    def sample_rate(self) -> int:
        return self.client.samplerate

    @property
    def period_s(self) -> float:
        return self.client.blocksize / self.client.samplerate

    def take(self) -> list[tuple[int, bytes]]:
        with self._lock:
            events, self.events = self.events, []
        return events

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


@pytest.fixture
def jack_receiver(jack_server: str) -> Iterator[JackReceiver]:
    receiver = JackReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
