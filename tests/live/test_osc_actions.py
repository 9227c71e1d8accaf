"""The OSC table and its handlers hold to one another, and ``/encore/form`` switches a
running show's form at the next section boundary (an OSC datagram at a real show on the
memory MIDI backend: the form is in the plans, not in the timing)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

from pythonosc.osc_message import OscMessage

from engine.live.osc_actions import ACTIONS
from engine.live.osc_control import encode_message
from engine.live.osc_table import TABLE
from engine.live.show import Show
from engine.patch import parse_patch

TEMPO = 240.0  # a bar a second


def test_every_input_target_has_one_handler_and_every_handler_a_control() -> None:
    # the requests for the state (status, hello) are answered by the dispatcher itself
    targets = {c.target for c in TABLE if c.is_input and not c.replies}
    assert targets - set(ACTIONS) == set(), "controls without a handler"
    assert set(ACTIONS) - targets == set(), "handlers without a control"
    assert all(callable(handler) for handler in ACTIONS.values())


FORM_PATCH = f"""
[song]
tempo = {TEMPO}
model = "tiny_trio"

[humanize]
timing_ms = 0.0

[midi]
backend = "memory"

[live]
internal_synth = false

[lyrics]
source = "off"

[osc]
port = 0
allow = ["127.0.0.1"]

[form]
name = "main"
sections = ["intro", "verse"]
loop_from = 1

[form.lengths]
intro = 2
verse = 2
chorus = 3
bridge = 1

[form.others.short]
sections = ["chorus", "bridge"]
loop_from = 0
""" + "".join(f'[parts.{part}]\nport = "encore-forms"\n\n'
              for part in ("melody", "bass", "drums", "chords"))


def test_a_tablet_switches_the_form_at_the_next_section_boundary(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    patch = parse_patch(FORM_PATCH)
    show = Show(patch, model_dir=tiny_model_dir, record_dir=tmp_path / "set", audio=False,
                osc=True, bars=None)
    replies: list[bytes] = []

    async def until_bar(bar: int, task: asyncio.Task) -> None:
        deadline = time.monotonic() + 60
        while show.bar_index < bar:
            if task.done():
                task.result()
            assert time.monotonic() < deadline, f"bar {bar} not pushed in time"
            await asyncio.sleep(0.005)

    async def scenario() -> None:
        task = asyncio.ensure_future(show.run())
        await until_bar(0, task)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tablet:
            tablet.bind(("127.0.0.1", 0))
            tablet.setblocking(False)
            address = show.osc_server.address
            tablet.sendto(encode_message("/encore/form", "s", ["nope"]), address)
            await until_bar(1, task)  # it landed (a second one would have replaced it)
            tablet.sendto(encode_message("/encore/form", "s", ["short"]), address)
            await until_bar(9, task)
            while True:  # what came back so far (feedback after each bar)
                try:
                    replies.append(tablet.recv(65536))
                except BlockingIOError:
                    break
            tablet.sendto(encode_message("/encore/status", "", []), address)
            await asyncio.sleep(0.2)
            while True:
                try:
                    replies.append(tablet.recv(65536))
                except BlockingIOError:
                    break
        show.bars = show.bar_index + 1
        await task

    asyncio.run(scenario())
    records = [json.loads(line) for line in
               (tmp_path / "set" / "song.jsonl").read_text().splitlines()]
    controls = [r for r in records if r["type"] == "control"]
    bars = [r for r in records if r["type"] == "bar"]
    assert [(c["target"], c["values"]) for c in controls] == [("form", ["nope"]),
                                                               ("form", ["short"])]
    refused, chosen = controls
    assert "no form 'nope'" in refused["refused"] and "main, short" in refused["refused"]
    assert "refused" not in chosen
    assert show.health.commands_applied == 1

    sections = [b["section"] for b in bars]
    main = ["intro", "intro"] + ["verse", "verse"] * 10
    short = (["chorus"] * 3 + ["bridge"]) * 5
    switch = next(n for n, s in enumerate(sections) if s in ("chorus", "bridge"))
    # the main form up to a section boundary of it, no earlier than the first bar planned
    # after the command landed, and no later than the boundary after that
    assert sections[:switch] == main[:switch]
    assert switch % 2 == 0 and switch > chosen["after_bar"] + 1
    assert switch <= chosen["after_bar"] + 2 + patch.live.lookahead_bars + 2
    # then the short form from its first section, looping as it says
    assert sections[switch:] == short[:len(sections) - switch]
    assert [b["bar_in_section"] for b in bars[switch:switch + 4]] == [0, 1, 2, 0]
    assert [b["pass"] for b in bars[switch:switch + 4]] == [0, 0, 0, 0]
    assert bars[switch]["motion"] == "glide"  # into the chorus's anchor, as at any section

    assert show.state()["form"] == "short"
    echoed = [OscMessage(raw).params for raw in replies
              if OscMessage(raw).address == "/encore/form"]
    assert echoed[0] == ["main"] and echoed[-1] == ["short"]
