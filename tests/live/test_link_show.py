"""A real show locked to a Link session whose tempo another app changes mid-bar: the notes
it has queued move with the clock (the session is made in code here; the real one, against
an independent peer, is test_link_phase.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter

import pytest

from engine.live import sync
from engine.live.show import Show
from engine.live.sync import SessionTimeline
from tests.live import test_show
from tests.live.test_show import Stage, assert_on_the_grid, sounding

MS = 1_000_000
S = 1_000_000_000
receiver = test_show.receiver  # the JACK receiver fixture


class MidBarSession:
    """Stands in for :class:`~engine.live.sync.LinkSync` in a real show (the real session,
    against an independent peer, is test_link_phase.py): a session at the show's tempo
    (240 BPM: a bar a second) that another app moves to 300 BPM half way into the show's
    bar 2."""

    made: list[MidBarSession] = []

    def __init__(self, quantum: float = 4, bpm: float = 120.0, **_settings) -> None:
        self.lines = [SessionTimeline(time.monotonic_ns(), 0.0, 240.0, float(quantum))]
        self.playing = False
        self.num_peers = 1
        MidBarSession.made.append(self)

    async def wait_for_peers(self, timeout_s: float) -> int:
        # bar 0 goes on the first line after the show's start delay (0.5 s) from now
        first = self.lines[0].line_at_or_after(time.monotonic_ns() + 500 * MS + 2 * MS)
        self.lines.append(self.lines[0].retimed(300.0, first + 2 * S + S // 2))
        return 1

    def timeline(self) -> SessionTimeline:
        now = time.monotonic_ns()
        return [line for line in self.lines if line.t_ns <= now][-1]

    def session_at(self, t_ns: int) -> SessionTimeline:
        return [line for line in self.lines if line.t_ns <= t_ns][-1]

    def set_tempo(self, bpm: float) -> None:
        raise AssertionError("the show proposed a tempo nobody asked for")

    def on_start_stop(self, callback) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_show_moves_the_notes_it_queued_when_the_session_changes_tempo_mid_bar(
        receiver, tiny_model_dir, tmp_path, monkeypatch) -> None:
    """A real show, its notes through the MIDI sender to a JACK port: when the session's
    tempo changes in the middle of bar 2, the rest of bar 2 (and bar 3, if it was queued
    already) is retimed, and every note-on arrives where the clock's final tempo map puts
    its beat, bar 3 on the session's bar line, no note left hanging."""
    monkeypatch.setattr(sync, "LinkSync", MidBarSession)
    stage = Stage(tmp_path, tiny_model_dir, bars=5, osc=False)
    patch = dataclasses.replace(stage.patch, live=dataclasses.replace(
        stage.patch.live, link=True, link_wait_s=0.0))
    stage.show = Show(patch, model_dir=tiny_model_dir, record_dir=tmp_path / "set",
                      audio=False, osc=False, bars=5, on_bar=stage._on_bar)

    async def scenario() -> None:
        await stage.start()

    asyncio.run(scenario())
    events = receiver.settle()
    show, clock = stage.show, stage.show.clock
    session = MidBarSession.made[-1]
    change = session.lines[-1].t_ns
    assert clock.bar_start_ns(2) < change < clock.bar_start_ns(3)
    assert show.link_lock.retimes == 1 and show.sender.stats()["retimes"] == 1
    assert show.sender.stats()["retimed"] > 0
    for bar in (1, 2, 3, 4):  # on the session's lines, before the change and after
        t = clock.bar_start_ns(bar)
        assert abs(t - session.session_at(t).nearest_line(t)) < MS, bar
    assert clock.bpm_at(4 * 4) == pytest.approx(300.0)
    assert sounding(events) == Counter(), "notes left hanging"
    assert_on_the_grid(stage, events, receiver)
    records = [json.loads(line) for line in (tmp_path / "set" / "song.jsonl").open()]
    tempo = [r for r in records if r.get("type") == "link" and r["what"] == "tempo"]
    assert len(tempo) == 1 and tempo[0]["bar"] == 3 and tempo[0]["retimed"]
