"""Run a reader on a hostile file in a child process, under a memory and a time limit.

A reader that blows up must fail its test, not the machine: the child imports what it
needs, then limits its own address space to what it has mapped so far plus
:data:`MEMORY_BYTES` (1 GiB), and the parent kills it after ``timeout`` seconds. The
child's verdict comes back on its last line of stdout:

- ``REFUSED <type> <seconds>`` and the message: the reader raised a ValueError or OSError
  (what ``encore`` prints as ``encore: error: ...``, exit 2);
- ``ACCEPTED <seconds>``: the reader returned;
- anything else (a traceback of another type, a MemoryError, a signal, a timeout) is a
  failure of the rule "refused within 5 s and 1 GB, never a traceback, hang or crash".
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEMORY_BYTES = 2**30
QUICK_S = 5.0
"""A refusal takes less than this (the rule); the child is killed at ``timeout``."""

CHILD = '''
import os, resource, sys, time, traceback
sys.path.insert(0, {repo!r})
{imports}

def _limit():
    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) * 1024 for line in status
                      if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + {memory}, mapped + {memory}))

_limit()
_started = time.perf_counter()
try:
{body}
except (ValueError, OSError) as _err:
    _message = str(_err)
    print("\\nREFUSED", type(_err).__name__, f"{{time.perf_counter() - _started:.3f}}")
    print(_message[:4000])
    print("MESSAGE-LENGTH", len(_message))
    sys.exit(0)
except BaseException:
    traceback.print_exc()
    sys.exit(3)
print("\\nACCEPTED", f"{{time.perf_counter() - _started:.3f}}")
'''


@dataclass
class Outcome:
    verdict: str        # "REFUSED" or "ACCEPTED"
    error_type: str
    seconds: float
    message: str
    output: str


class Bounded:
    """A child started by :func:`start_bounded`; :meth:`result` waits for its verdict."""

    def __init__(self, code: str, timeout: float, cwd: Path | None) -> None:
        env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                            "PYTHONWARNINGS": "ignore"}
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=self.out,
                                        stderr=self.err, text=True, env=env, cwd=cwd)

    def result(self) -> Outcome:
        """Fail the test unless the child returned or raised a ValueError/OSError."""
        try:
            self.process.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the reader hung: killed after {self.timeout:.0f} s\n"
                        f"{self._read(self.out)[-4000:]}")
        stdout, stderr = self._read(self.out), self._read(self.err)
        output = stdout + stderr
        if self.process.returncode != 0:
            code = self.process.returncode
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            shown = "\n".join(line[:300] for line in output.splitlines())  # no 100 kB values
            pytest.fail(f"the reader crashed ({how}):\n{shown[-6000:]}")
        lines = stdout.rstrip().splitlines()
        start = max(i for i, line in enumerate(lines)
                    if line.startswith(("REFUSED", "ACCEPTED")))
        head = lines[start].split()
        if head[0] == "ACCEPTED":
            return Outcome("ACCEPTED", "", float(head[1]), "", output)
        message = "\n".join(lines[start + 1:-1])
        return Outcome("REFUSED", head[1], float(head[2]), message, output)

    @staticmethod
    def _read(file) -> str:
        file.seek(0)
        text = file.read()
        file.close()
        return text


def start_bounded(imports: str, body: str, *, timeout: float = 60.0,
                  memory: int = MEMORY_BYTES, cwd: Path | None = None) -> Bounded:
    """Start ``body`` (Python, after ``imports``) in a child under the limits, and return at
    once: several children can run side by side (the machine's cores), each waited for by
    its own test (:meth:`Bounded.result`)."""
    code = CHILD.format(repo=str(REPO), imports=textwrap.dedent(imports), memory=memory,
                        body=textwrap.indent(textwrap.dedent(body), "    "))
    return Bounded(code, timeout, cwd)


def run_bounded(imports: str, body: str, *, timeout: float = 60.0,
                memory: int = MEMORY_BYTES, cwd: Path | None = None) -> Outcome:
    """Run ``body`` (Python, after ``imports``) in a child under the limits; fail the test
    unless it returned or raised a ValueError/OSError."""
    return start_bounded(imports, body, timeout=timeout, memory=memory, cwd=cwd).result()


def refused_bounded(imports: str, body: str, *expected: str, timeout: float = 60.0,
                    cwd: Path | None = None) -> Outcome:
    """:func:`run_bounded`, which must refuse quickly, with every text of ``expected`` in a
    message of at most a few lines."""
    outcome = run_bounded(imports, body, timeout=timeout, cwd=cwd)
    assert outcome.verdict == "REFUSED", f"accepted:\n{outcome.output[-3000:]}"
    for text in expected:
        assert text in outcome.message, f"{text!r} not in {outcome.message!r}"
    assert len(outcome.message) < 2000, f"a message of {len(outcome.message)} characters"
    assert outcome.seconds < QUICK_S, f"the refusal took {outcome.seconds:.1f} s"
    return outcome


EACH_REFUSED = f'''
import time as _time

def each_refused(calls, *expected):
    """Run every (label, call) of ``calls``: each must raise a ValueError or OSError within
    {QUICK_S} s whose message holds every text of ``expected`` (``{{label}}`` filled in);
    anything else is an AssertionError, which fails the run."""
    for label, call in calls:
        started = _time.perf_counter()
        try:
            call()
        except (ValueError, OSError) as err:
            message = str(err)
        else:
            raise AssertionError(f"{{label}}: accepted")
        took = _time.perf_counter() - started
        assert took < {QUICK_S}, f"{{label}}: the refusal took {{took:.1f}} s"
        assert len(message) < 2000, f"{{label}}: a message of {{len(message)}} characters"
        for text in expected:
            text = text.format(label=label)
            assert text in message, f"{{label}}: {{text!r}} not in {{message!r}}"
'''


def all_refused(imports: str, body: str, *, timeout: float = 120.0) -> Outcome:
    """:func:`run_bounded` of a ``body`` that calls ``each_refused(calls, *expected)``."""
    outcome = run_bounded(EACH_REFUSED + textwrap.dedent(imports), body, timeout=timeout)
    assert outcome.verdict == "ACCEPTED", outcome.output[-4000:]
    return outcome


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A FIFO no one writes to: opening it for reading blocks for ever."""
    return make_fifo(tmp_path / "fifo")


FUZZ_PRELUDE = '''
import signal
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

class _Slow(BaseException):
    pass

def _alarm(*_):
    raise _Slow("one example took more than {per_example} s: a hang")

signal.signal(signal.SIGALRM, _alarm)

def fuzz(examples):
    """Decorator: a hypothesis test run here, each example under the alarm; a ValueError
    or OSError is the reader refusing (fine), any other exception fails the run."""
    def wrap(test):
        def bounded(*args, **kwargs):
            signal.alarm({per_example})
            try:
                test(*args, **kwargs)
            except (ValueError, OSError):
                pass
            finally:
                signal.alarm(0)
        bounded.__name__ = test.__name__
        bounded.__signature__ = __import__("inspect").signature(test)
        return settings(max_examples=examples, deadline=None, derandomize=True,
                        database=None, phases=[Phase.explicit, Phase.generate],
                        suppress_health_check=list(HealthCheck))(bounded)
    return wrap
'''


def fuzz_bounded(imports: str, body: str, *, per_example: int = 20, timeout: float = 300.0,
                 cwd: Path | None = None) -> Outcome:
    """Run a hypothesis fuzz (``body`` defines ``@given(...) @fuzz(N) def test(...)`` and
    calls it) in a child under the memory limit; every example returns or is refused."""
    outcome = run_bounded(FUZZ_PRELUDE.format(per_example=per_example)
                          + textwrap.dedent(imports), body,
                          timeout=timeout, cwd=cwd)
    assert outcome.verdict == "ACCEPTED", outcome.output[-4000:]
    return outcome


@pytest.fixture(scope="session")
def bounded():
    """The helpers above, for the test modules (imported by pytest as conftest only)."""
    from types import SimpleNamespace

    return SimpleNamespace(run=run_bounded, start=start_bounded, refused=refused_bounded,
                           fuzz=fuzz_bounded,
                           all_refused=all_refused,
                           fifo=make_fifo, quick_s=QUICK_S)
