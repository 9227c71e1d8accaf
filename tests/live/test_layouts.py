"""Tablet layouts generated from the OSC address table (engine.live.layouts and ``encore
layout``): every table address once in each layout, with its range and the right kind of
widget; the files parse; a row added to a table shows up in the next layout."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.live.layouts import (
    open_stage_control_session,
    plan,
    touchosc_document,
    write_layout,
)
from engine.live.osc_table import TABLE, Control, OscTable

OSC_KINDS = {"fader": "fader", "xy": "xy", "button": "button", "toggle": "button",
             "label": "text", "text": "input", "radio": "input"}
TOSC_KINDS = {"fader": "FADER", "xy": "XY", "button": "BUTTON", "toggle": "BUTTON",
              "label": "LABEL", "text": "TEXT", "radio": "TEXT"}


# ---- reading the generated files back -------------------------------------------------
def osc_widgets(session: dict[str, Any]) -> list[dict[str, Any]]:
    """Every widget of an Open Stage Control session, depth first."""
    out, stack = [], [session["content"]]
    while stack:
        widget = stack.pop()
        out.append(widget)
        stack.extend(reversed(widget.get("widgets", [])))
        stack.extend(reversed(widget.get("tabs", [])))
    return out


def osc_by_address(session: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for widget in osc_widgets(session):
        if "address" in widget:
            found.setdefault(widget["address"], []).append(widget)
    return found


def tosc_nodes(document: bytes) -> list[ET.Element]:
    root = ET.fromstring(zlib.decompress(document).decode("utf-8"))
    assert root.tag == "lexml"
    return list(root.iter("node"))


def tosc_message(node: ET.Element) -> tuple[str, list[tuple[str, str, float, float]]] | None:
    """(path, [(value key, conversion, scaleMin, scaleMax)]) of a node's OSC message."""
    osc = node.find("messages/osc")
    if osc is None:
        return None
    path = "".join(p.findtext("value") or "" for p in osc.findall("path/partial"))
    args = [(p.findtext("value"), p.findtext("conversion"), float(p.findtext("scaleMin")),
             float(p.findtext("scaleMax"))) for p in osc.findall("arguments/partial")]
    return path, args


def tosc_by_address(document: bytes) -> dict[str, list[tuple[ET.Element, list]]]:
    found: dict[str, list[tuple[ET.Element, list]]] = {}
    for node in tosc_nodes(document):
        message = tosc_message(node)
        if message is not None:
            found.setdefault(message[0], []).append((node, message[1]))
    return found


def prop(node: ET.Element, key: str) -> str | None:
    for p in node.findall("properties/property"):
        if p.findtext("key") == key:
            return p.findtext("value")
    return None


# ---- Open Stage Control ---------------------------------------------------------------
def check_osc(session: dict[str, Any], table: OscTable) -> None:
    assert session["type"] == "session" and session["content"]["type"] == "root"
    found = osc_by_address(session)
    for control in table:
        widgets = found.get(control.address, [])
        assert len(widgets) == 1, f"{control.address}: {len(widgets)} widgets"
        w = widgets[0]
        assert w["type"] == OSC_KINDS[control.widget], control.address
        if control.widget == "fader":
            assert (w["range"]["min"], w["range"]["max"]) == control.ranges[0]
        elif control.widget == "xy":
            assert (w["rangeX"]["min"], w["rangeX"]["max"]) == control.ranges[0]
            assert (w["rangeY"]["min"], w["rangeY"]["max"]) == control.ranges[1]
        elif control.widget == "toggle":
            assert (w["mode"], w["off"], w["on"]) == ("toggle", *control.ranges[0])
        elif control.widget == "button":
            assert w["mode"] == "tap"
            assert control.accept("i", (w["on"],)) == ()  # what it sends is a press
        elif control.widget == "label":
            assert w.get("interaction", False) is False  # read-only
    # nothing else listens or sends on the engine's addresses
    engine_addresses = {a for a in found if a.startswith("/encore")}
    assert engine_addresses == set(table.addresses)
    ids = [w["id"] for w in osc_widgets(session)]
    assert len(ids) == len(set(ids)), "widget ids must be unique (equal ids are clones)"


def test_open_stage_control_has_every_address_once_with_its_range():
    session = json.loads(json.dumps(open_stage_control_session()))  # JSON round trip
    check_osc(session, TABLE)


def test_open_stage_control_file_parses(tmp_path: Path):
    path = write_layout("open-stage-control", tmp_path / "tablet.json")
    session = json.loads(path.read_text(encoding="utf-8"))
    assert session["createdWith"] == "Open Stage Control"
    check_osc(session, TABLE)


# ---- TouchOSC -------------------------------------------------------------------------
def check_tosc(document: bytes, table: OscTable) -> None:
    found = tosc_by_address(document)
    for control in table:
        nodes = found.get(control.address, [])
        assert len(nodes) == 1, f"{control.address}: {len(nodes)} nodes"
        node, args = nodes[0]
        assert node.get("type") == TOSC_KINDS[control.widget], control.address
        osc = node.find("messages/osc")
        assert osc.findtext("receive") == "1"  # the engine's echo lands on it
        assert osc.findtext("send") == ("1" if control.is_input else "0"), control.address
        if control.widget in ("fader", "xy", "toggle"):
            assert [(lo, hi) for *_, lo, hi in args] == list(control.ranges)
        if control.widget == "toggle":
            assert prop(node, "buttonType") in ("1", "2") and args[0][1] == "INTEGER"
        if control.widget == "button":
            assert prop(node, "buttonType") == "0"
            assert control.accept("i", (int(args[0][3]),)) == ()  # full press is a press
        if control.widget in ("label", "text", "radio"):
            assert args == [("text", "STRING", 0.0, 1.0)]
    assert {a for a in found if a.startswith("/encore")} == set(table.addresses)
    ids = [n.get("ID") for n in tosc_nodes(document)]
    assert len(ids) == len(set(ids))


def test_touchosc_has_every_address_once_with_its_range():
    check_tosc(touchosc_document(), TABLE)


def test_touchosc_file_parses_and_is_stable(tmp_path: Path):
    path = write_layout("touchosc", tmp_path)
    assert path == tmp_path / "encore.tosc"
    data = path.read_bytes()
    text = zlib.decompress(data).decode("utf-8")
    assert text.startswith("<?xml") and "<lexml version=\"3\">" in text
    check_tosc(data, TABLE)
    assert touchosc_document() == data  # the same table gives the same bytes
    top = tosc_nodes(data)[0]
    assert top.get("type") == "GROUP"
    assert all(n.find("properties") is not None and n.find("values") is not None
               for n in tosc_nodes(data))


# ---- geometry and regeneration --------------------------------------------------------
def test_plan_puts_every_control_in_one_cell_and_boxes_do_not_overlap():
    groups = plan(TABLE)
    cells = [c.control.address for g in groups for c in g.cells]
    assert sorted(cells) == sorted(TABLE.addresses)
    frames = [g.frame for g in groups]
    for i, a in enumerate(frames):
        assert a.x >= 0 and a.x + a.w <= 1280, a
        for b in frames[i + 1:]:
            apart = (a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y
                     or b.y + b.h <= a.y)
            assert apart, (a, b)
    for g in groups:
        for c in g.cells:  # inside its box
            assert c.frame.x + c.frame.w <= g.frame.w and c.frame.y + c.frame.h <= g.frame.h
    parts = {g.prefix: [c.caption for c in g.cells] for g in groups}
    assert parts["/encore/part/bass"] == ["mute", "level"]
    assert [g.title for g in groups][:2] == ["encore", "walk"]


def with_rows(*extra: Control) -> OscTable:
    return OscTable([*TABLE, *extra])


def test_a_row_added_to_the_table_appears_in_both_layouts():
    new = Control("/encore/fx/drive", "f", ((0.0, 11.0),), "fx.drive", "beat",
                  "How hard the amp is driven.", "fader")
    tap = Control("/encore/fx/stutter", "", (), "fx.stutter", "beat", "Stutter now.",
                  "button")
    table = with_rows(new, tap)
    session, document = open_stage_control_session(table), touchosc_document(table)
    check_osc(session, table)
    check_tosc(document, table)
    assert osc_by_address(session)["/encore/fx/drive"][0]["range"] == {"min": 0.0, "max": 11.0}
    assert tosc_by_address(document)["/encore/fx/drive"][0][1] == [("x", "FLOAT", 0.0, 11.0)]
    assert "fx" in [g.title for g in plan(table)]
    # and the layouts of the shipped table do not have it
    assert "/encore/fx/drive" not in osc_by_address(open_stage_control_session())
    assert "/encore/fx/drive" not in tosc_by_address(touchosc_document())


def test_a_removed_row_disappears():
    table = OscTable(c for c in TABLE if c.address != "/encore/panic")
    assert "/encore/panic" not in osc_by_address(open_stage_control_session(table))
    assert "/encore/panic" not in tosc_by_address(touchosc_document(table))


# ---- the command ----------------------------------------------------------------------
def test_encore_layout_writes_both(tmp_path: Path, capsys):
    assert main(["layout", "open-stage-control", "-o", str(tmp_path / "a.json")]) == 0
    assert main(["layout", "touchosc", "-o", str(tmp_path / "b.tosc")]) == 0
    check_osc(json.loads((tmp_path / "a.json").read_text()), TABLE)
    check_tosc((tmp_path / "b.tosc").read_bytes(), TABLE)
    assert "a.json" in capsys.readouterr().out


def test_unknown_app_is_refused_with_the_choices(tmp_path: Path):
    with pytest.raises(ValueError, match="open-stage-control, touchosc"):
        write_layout("lemur", tmp_path / "x")
    with pytest.raises(SystemExit):
        main(["layout", "lemur"])


def test_out_may_name_a_folder(tmp_path: Path):
    assert write_layout("touchosc", tmp_path) == tmp_path / "encore.tosc"
    new_folder = f"{tmp_path / 'tablets'}/"
    assert write_layout("open-stage-control", new_folder) == \
        tmp_path / "tablets" / "encore.json"
    assert (tmp_path / "tablets" / "encore.json").is_file()
