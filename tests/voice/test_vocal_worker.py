"""The voice worker's start-up: it times the singer on this machine and, for a DiffSinger
voice, picks diffusion steps it can sing in time, or hands over to the fallback singer.
Run in this process (the functions the worker process runs), on a contract-exact test
voicebank and the real fallback singer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.live import vocal_worker
from engine.patch import build_patch


def start(bank: Path, steps: int = 0) -> dict:
    patch = build_patch({"voice": {"singer": str(bank), "steps": steps}})
    vocal_worker._init(patch.to_dict(), None, 48000)
    return vocal_worker._probe(auto_steps=steps == 0)


def test_a_fast_voice_keeps_the_most_steps_it_can_afford(full_bank: Path) -> None:
    info = start(full_bank)
    assert info["steps"] == vocal_worker.STEP_CHOICES[0]
    assert info["rtf"] > 0 and not info["note"]
    samples, start_s, _rtf, steps = vocal_worker._render(
        vocal_worker.probe_phrase().to_dict(), 120.0)
    assert samples.dtype.name == "float32" and len(samples) > 48000  # at the output rate
    assert start_s < 2.0  # before the first note (beat 4 at 120 BPM = 2 s)


def test_a_voice_too_slow_for_this_machine_hands_over_to_the_fallback(
        full_bank: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vocal_worker, "TARGET_RTF", 0.0)  # no machine is that fast
    monkeypatch.setattr(vocal_worker, "FALLBACK_RTF", 0.0)
    info = start(full_bank)
    assert info["singer"] == "fallback" and "too slow" in info["note"]
    samples, _start, _rtf, steps = vocal_worker._render(
        vocal_worker.probe_phrase().to_dict(), 120.0)
    assert abs(samples).max() > 0.01 and steps is None


def test_a_voice_slower_than_the_target_sings_at_the_fewest_steps(
        full_bank: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vocal_worker, "TARGET_RTF", 0.0)  # slower than the target...
    info = start(full_bank)  # ...but fast enough to keep up at one step
    assert info["singer"] == "Test Singer" and info["steps"] == vocal_worker.STEP_CHOICES[-1]


def test_each_phrase_gets_the_steps_its_deadline_allows(full_bank: Path) -> None:
    start(full_bank)
    plan = vocal_worker.probe_phrase().to_dict()
    now = time.monotonic_ns()
    *_, roomy = vocal_worker._render(plan, 120.0, now + 60 * 10**9)  # a minute ahead
    assert roomy == vocal_worker.STEP_CHOICES[0]
    planner = vocal_worker._PLANNER
    planner.load = 1e6  # the machine is suddenly a million times busier
    *_, squeezed = vocal_worker._render(plan, 120.0, time.monotonic_ns() + 60 * 10**9)
    assert squeezed == 1
    assert planner.load < 1e6  # the render was quick: the load estimate comes down


def test_fixed_steps_are_kept(full_bank: Path) -> None:
    info = start(full_bank, steps=7)
    assert info["steps"] is None  # not chosen: the patch's 7 are used as they are
