"""The voice live: lines written bars ahead, sung by the real fallback singer (espeak-ng and
WORLD) in its worker process, placed in the vocal ring of a real JACK audio callback
(the dummy server) before they are due, never late."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from engine.live import audio_core
from engine.live.show import Show
from engine.patch import parse_patch

PATCH = """
[song]
tempo = 150.0
model = "tiny_trio"

[form]
sections = ["verse", "chorus"]
loop_from = 0

[form.lengths]
verse = 2
chorus = 2

[lyrics]
source = "markov"
theme = "river"
phrase_bars = 1

[voice]
singer = "fallback"

[osc]
port = 0
"""


LOOP_HELD_MS = 250.0  # the show pushes a bar 250 ms ahead: a loop held longer is late
SINGER_RTF = 0.5  # a one-bar line written a bar or two ahead: slower than this misses


def blame_a_late_machine(show: Show, error: AssertionError, *, killed: bool = False) -> None:
    """Phrases missed while the machine did not keep up: the show's own figures say so
    (its loop held past the push lead, a bar pushed after its line, the singer timed
    slower than ``SINGER_RTF`` at start): an expected failure, with the figures. Otherwise,
    or when a phrase failed (beyond the one a killed worker fails), a real failure."""
    health = show.health
    voice = health.voice
    rtf = float(show.singing.vocals.info.get("rtf", 0.0)) if show.singing.vocals else 0.0
    figures = (f"loop held up to {health.loop_lag_ms_max:.0f} ms, bars pushed up to "
               f"{health.push_late_ms_max:.0f} ms after their line, singer real-time factor "
               f"{rtf:.2f} at start (median {voice.get('rtf_median')}), load average "
               f"{os.getloadavg()[0]:.1f}; voice {voice}")
    late = (health.loop_lag_ms_max > LOOP_HELD_MS or health.push_late_ms_max > 0
            or rtf > SINGER_RTF)
    if late and voice.get("failed") <= int(killed) and voice.get("missed", 0) > 0:
        pytest.xfail(f"this machine did not keep up: {figures}: {error}")
    raise AssertionError(f"{error} ({figures})") from error


def test_phrases_are_sung_ahead_of_their_beat_on_jack(jack_server: str, tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    patch = parse_patch(PATCH)
    show = Show(patch, model_dir=tiny_model_dir, record_dir=tmp_path / "set", audio=True,
                osc=False, bars=10)
    health = asyncio.run(show.run())
    voice = health.voice
    records = [json.loads(line) for line in
               (tmp_path / "set" / "song.jsonl").read_text().splitlines()]
    lines = [r for r in records if r.get("type") == "lyric"]
    assert [r["singer"] for r in records if r.get("type") == "voice"] == ["fallback"]
    assert voice["failed"] == 0, voice
    try:
        assert voice["sung"] >= 3, voice
    except AssertionError as error:
        blame_a_late_machine(show, error)
    # the stopped: line names the audio path (the native core wherever it builds)
    assert health.audio["path"] == ("core" if audio_core.load()[0] is not None else "python")
    # what was sung reached the ring in time: nothing was written into the past
    ring = show.audio_engine.vocals
    assert ring.frames_written > 0
    assert ring.underflows == 0 and ring.overflows == 0
    assert voice["margin_ms_min"] > 0
    assert (voice["margin_ms_min"] <= voice["margin_ms_p10"] <= voice["margin_ms_median"]
            <= voice["margin_ms_p90"] <= voice["margin_ms_max"])
    # every line written was either sung or counted as missed; nothing vanished
    assert voice["submitted"] + (voice["missed"] if voice["submitted"] < len(lines) else 0) \
        >= voice["sung"]
    assert voice["sung"] + voice["missed"] + voice["failed"] <= len(lines)


def test_a_killed_voice_worker_is_restarted_and_the_set_keeps_singing(
        jack_server: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """kill -9 of the voice worker between phrases: the next phrase finds the pool broken,
    the worker is started again, and later lines are sung; the band never stops."""
    import os
    import signal

    patch = parse_patch(PATCH)
    show = Show(patch, model_dir=tiny_model_dir, record_dir=tmp_path / "set", audio=True,
                osc=False, bars=16)
    killed: list[int] = []
    sung_before: list[int] = []

    def kill_at_bar_4(show: Show, _bar) -> None:
        if show.bar_index == 4 and not killed and show.vocals is not None:
            for pid in show.vocals._pool.pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            sung_before.append(show.vocals.health.sung)

    show.on_bar = kill_at_bar_4
    health = asyncio.run(show.run())
    voice = health.voice
    assert killed, "the voice worker was not found"
    assert health.bars_played == 16 and health.bars_silent == 0
    assert voice["restarts"] == 1, voice
    try:
        assert voice["sung"] > sung_before[0], voice  # singing came back after the restart
    except AssertionError as error:
        blame_a_late_machine(show, error, killed=True)
