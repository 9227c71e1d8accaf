"""The stage dashboard on a real show on JACK (no mocks): it shows the show's state, and its
keys reach the show through the same command path a tablet's messages take.

The show runs in this process on the test's event loop, as ``encore live`` runs it; its
parts go to a virtual JACK MIDI port (nothing needs to listen: the sender's lateness is
stamped as it sends). The dashboard's key handler is called from another thread, as the
dashboard's own thread calls it; in one test keys are typed into a pseudo-terminal and
the frames are drawn by the dashboard's drawing process (into a file, as on a terminal),
as ``encore live --dashboard`` draws them.
"""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import re
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from engine.live.dashboard import Dashboard, project, trail_grid
from engine.live.show import Show
from engine.patch import load_patch

pytest.importorskip("jack")

TEMPO = 240.0  # a bar a second
PARTS = ("melody", "bass", "drums", "chords")
PATCH = """
[song]
title = "Dashboard test"
tempo = 240.0
model = "tiny_trio"

[humanize]
timing_ms = 0.0

[midi]
backend = "virtual"

[live]
internal_synth = false

[osc]
port = 0

[form]
sections = ["verse", "chorus"]
loop_from = 0

[form.lengths]
verse = 4
chorus = 4

[lyrics]
source = "markov"
theme = "night"
phrase_bars = 1
"""


def make_show(tmp_path: Path, model_dir: Path, dashboard: list[Dashboard]) -> Show:
    path = tmp_path / "stage.toml"
    parts = "".join(f'[parts.{part}]\nchannel = {channel}\nport = "encore-dash-test"\n\n'
                    for part, channel in zip(PARTS, (1, 2, 10, 3), strict=True))
    path.write_text(PATCH + parts)
    patch = load_patch(path)
    return Show(patch, model_dir=model_dir, record_dir=tmp_path / "set", audio=False,
                osc=True, on_bar=lambda show, bar: dashboard[0].on_bar(show, bar))


async def until(condition: Callable[[], bool], task: asyncio.Task, what: str,
                timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if task.done():
            task.result()
            pytest.fail(f"the show ended before {what}")
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        await asyncio.sleep(0.01)


def rendered(dashboard: Dashboard, width: int = 110) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(dashboard.render())
    return console.export_text()


def test_the_dashboard_shows_the_show_and_its_keys_reach_it(
        jack_server: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    holder: list[Dashboard] = []
    show = make_show(tmp_path, tiny_model_dir, holder)
    screen = io.StringIO()  # the dashboard's thread also draws, on a console of its own
    holder.append(Dashboard(show, keys=False, console=Console(file=screen, force_terminal=True,
                                                              width=110, height=50)))
    dashboard = holder[0]
    texts: dict[str, str] = {}

    async def press(key: str) -> str | None:
        """A key from another thread, as the dashboard's own thread handles it."""
        return await asyncio.to_thread(dashboard.handle_key, key)

    async def scenario() -> None:
        dashboard.start(asyncio.get_running_loop())
        task = asyncio.ensure_future(show.run())
        await until(lambda: show.bar_index >= 4 and bool(show.lyric), task, "4 bars and a line")
        view = dashboard.view()
        texts["first"] = rendered(dashboard)
        texts["view"] = json.dumps({"bar": view.bar, "section": view.section,
                                    "lyric": view.lyric, "trail": len(view.trail)})
        assert abs(view.bar - (show.bar_index + 1)) <= 1, (view.bar, show.bar_index)
        assert view.section == show.section
        assert view.lyric == show.lyric
        assert [p.notes is not None for p in view.parts] == [True] * 4

        # n: next section, a bar command: pending, then applied at the next bar
        applied = show.health.commands_applied
        assert await press("n") is not None
        await until(lambda: any(c.target == "section.next" for c in show.pending)
                    or show.health.commands_applied > applied, task, "the next-section command")
        await until(lambda: show.health.commands_applied > applied, task, "next section applied")

        # f: freeze on, applied on the next bar line; f again: off
        assert not show.conductor.walker.frozen
        applied = show.health.commands_applied
        await press("f")
        await until(lambda: show.conductor.walker.frozen, task, "the walk frozen")
        assert dashboard.view().frozen
        assert "FROZEN" in rendered(dashboard)
        await press("f")
        await until(lambda: not show.conductor.walker.frozen, task, "the walk thawed")
        assert show.health.commands_applied == applied + 2

        # p: panic lands now, on the sender
        panics = show.sender.stats()["panics"]
        applied = show.health.commands_applied
        await press("p")
        await until(lambda: show.health.commands_applied > applied, task, "panic applied")
        await until(lambda: show.sender.stats()["panics"] > panics, task, "the sender's panic")

        dashboard._health_at = float("-inf")  # the health figures now, not a second ago
        texts["later"] = rendered(dashboard)
        assert await press("x") is None  # other keys do nothing

        # q: the show stops
        assert await press("q") is not None
        await asyncio.wait_for(task, timeout=10)
        await asyncio.to_thread(dashboard.stop)

    asyncio.run(scenario())
    assert screen.getvalue().count("ENCORE") >= 4, "the dashboard's thread drew too little"
    text, view = texts["first"], json.loads(texts["view"])
    assert f"bar {view['bar']}" in text
    assert "Dashboard test" in text
    assert "240.0 BPM" in text and "internal clock" in text
    assert view["section"] in text and re.search(r"bar \d+/4 +pass \d+", text)
    assert view["lyric"] and view["lyric"][:40] in text
    assert "night" in text  # the theme
    for part in PARTS:
        assert re.search(rf"{part} +MIDI encore-dash-test +\d+", text), part
    later = texts["later"]
    assert re.search(r"lateness p99 \d+\.\d\d ms; late \d+, dropped \d+", later), later
    assert re.search(r"last bar \d+ ms of a \d+ ms budget", later), later
    assert re.search(r"OSC +good 0, bad 0", later), later
    assert "latent walk" in later and "@" in later
    records = [json.loads(line) for line in
               (tmp_path / "set" / "song.jsonl").read_text().splitlines()]
    controls = [r["address"] for r in records if r.get("type") == "control"]
    assert controls == ["/encore/section/next", "/encore/walk/freeze", "/encore/walk/freeze",
                        "/encore/panic"]


def test_keys_typed_on_a_terminal_reach_the_show_and_the_terminal_is_restored(
        jack_server: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """As ``encore live --dashboard`` runs it: the drawing process draws (into a file, as
    on a terminal), the dashboard's thread reads keys from a pseudo-terminal in cbreak
    mode and puts the terminal's mode back when it stops."""
    holder: list[Dashboard] = []
    show = make_show(tmp_path, tiny_model_dir, holder)
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    screen = tmp_path / "screen"
    holder.append(Dashboard(show, stdin=slave, output=str(screen)))
    dashboard = holder[0]

    async def scenario() -> None:
        task = asyncio.ensure_future(show.run())
        dashboard.start(asyncio.get_running_loop())
        try:
            await until(lambda: show.bar_index >= 2, task, "2 bars")
            assert dashboard.is_running
            mode = termios.tcgetattr(slave)
            assert not mode[3] & termios.ICANON and not mode[3] & termios.ECHO, "not cbreak"
            os.write(master, b"f")
            await until(lambda: show.conductor.walker.frozen, task, "the walk frozen by 'f'")
            os.write(master, b"q")
            await asyncio.wait_for(task, timeout=10)
        finally:
            dashboard.stop()
            if not task.done():
                show.stop()
                await task

    try:
        asyncio.run(scenario())
        assert not dashboard.is_running
        assert termios.tcgetattr(slave) == before, "the terminal's mode was not restored"
    finally:
        os.close(master)
        os.close(slave)
    assert not any(t.name == "encore-dashboard" for t in threading.enumerate())
    assert not [p for p in multiprocessing.active_children()
                if p.name == "encore-dashboard-draw"], "the drawing process outlived it"
    drawn = screen.read_text()
    assert drawn.count("ENCORE") >= 2, "the drawing process drew fewer than two frames"
    assert "FROZEN" in drawn and "\x1b[" in drawn  # drawn as on a terminal
    assert len(dashboard.render_ms) >= 2 and dashboard.errors == 0


def test_the_latent_picture_keeps_its_orientation_and_marks_the_newest_point() -> None:
    rng = np.random.default_rng(0)
    directions = np.linalg.qr(rng.standard_normal((16, 2)))[0].T  # two orthonormal rows
    t = np.linspace(0, 2 * np.pi, 20)
    points = np.outer(3 * np.cos(t), directions[0]) + np.outer(np.sin(t), directions[1])
    trail, anchor, basis = project(points, points.mean(axis=0))
    assert len(trail) == 20 and anchor == pytest.approx((0.0, 0.0), abs=1e-9)
    assert max(abs(v) for xy in trail for v in xy) == pytest.approx(1.0)
    xs = np.array([x for x, _ in trail])
    assert np.corrcoef(xs, np.cos(t))[0, 1] ** 2 > 0.99  # the widest direction is x
    again, _, basis2 = project(points[1:], None, basis)  # a bar later: same orientation
    assert np.all(np.sum(basis * basis2, axis=1) > 0)
    grid = trail_grid(trail, anchor)
    assert "".join(grid).count("@") == 1 and "+" in "".join(grid)
    newest_row = next(i for i, row in enumerate(grid) if "@" in row)
    col = grid[newest_row].index("@")
    x, y = trail[-1]
    assert abs(col - (x + 1) / 2 * (len(grid[0]) - 1)) <= 1


def test_osc_replies_held_back_show_in_the_health_lines() -> None:
    """A client flooding ``/encore/status`` shows as replies held back, in red; a quiet
    OSC line stays as it was."""
    from types import SimpleNamespace

    from engine.live.dashboard import HealthView, _health, _health_lines
    from engine.live.osc_control import OscDispatcher

    dispatcher = OscDispatcher(state=lambda: {"song.tempo": 120.0}, now_ns=lambda: 0)
    status = b"/encore/status\x00\x00,\x00\x00\x00"
    for _ in range(25):
        dispatcher.handle_datagram(status, ("10.0.0.5", 9000))
    from engine.live.show_view import ShowView

    show = SimpleNamespace(health=SimpleNamespace(bars_fallback=0, ports_lost=0),
                           generator=None, clock=None, singing=SimpleNamespace(vocals=None),
                           sender=None, audio_engine=None, dispatcher=dispatcher,
                           ports_gone=set())
    view = _health(ShowView(show))
    assert (view.osc_good, view.osc_bad, view.osc_replies_dropped) == (25, 0, 15)
    osc = next(line for line in _health_lines(view) if line.plain.lstrip().startswith("OSC"))
    assert re.search(r"OSC +good 25, bad 0, replies held back 15", osc.plain), osc.plain
    assert any("red" in str(span.style) for span in osc.spans)
    quiet = next(line for line in _health_lines(HealthView(osc_good=3))
                 if line.plain.lstrip().startswith("OSC"))
    assert "held back" not in quiet.plain and "red" not in str(quiet.spans)
