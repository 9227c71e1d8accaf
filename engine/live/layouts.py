"""Tablet layouts generated from the OSC address table, so they never drift from it.

    from engine.live.layouts import write_layout
    write_layout("open-stage-control")     # -> encore.json, an Open Stage Control session
    write_layout("touchosc", "my.tosc")     # -> a TouchOSC document

Every :class:`~engine.live.osc_table.Control` of the table becomes exactly one widget with
its address and range; controls are grouped by their address's parent path (``/encore/walk``,
``/encore/part/bass``, ...), one titled box per group, laid out left to right in rows on a
1280-pixel-wide canvas (:func:`plan`). Add a row to the table and the next generated layout
has it. How each kind of row is drawn:

=========  ==========================================  ==========================================
widget     Open Stage Control (session JSON)            TouchOSC (``.tosc``)
=========  ==========================================  ==========================================
fader      ``fader``, ``range`` = the row's range       ``FADER``, argument scaled to the range
xy         ``xy``, ``rangeX`` / ``rangeY``              ``XY``, x and y scaled to their ranges
button     ``button`` in ``tap`` mode, sends 1          ``BUTTON`` (momentary): 1 press, 0 release
toggle     ``button`` in ``toggle`` mode, on/off =      ``BUTTON`` (toggle on press), an integer
           the range's ends, an integer                 scaled to the range
label      ``text``: shows what the engine sends        ``LABEL``: receives only
text       ``input``: type a string, Enter sends it     ``TEXT``: shows the string the engine
                                                        echoes (TouchOSC has no text entry)
radio      ``input`` (the table does not list the      ``TEXT``, as for text
           choices, so the name is typed)
=========  ==========================================  ==========================================

Formats. Open Stage Control 1.x sessions are JSON: ``{"createdWith": "Open Stage Control",
"version", "type": "session", "content": <root widget>}``; widgets list only the properties
they set, as the app fills in every default when it loads a session (its ``parser``), and
the version is above the last one whose sessions the app converts on load (1.24.2).

TouchOSC (the current app, not Mk1) documents are zlib-compressed XML: ``<lexml
version='3'>`` holding one ``GROUP`` node; each node has ``properties`` (typed: ``b``
bool, ``i`` int, ``f`` float, ``s`` string, ``c`` colour, ``r`` frame), ``values`` (``x``,
``y``, ``text``, ``touch`` with their defaults), ``messages`` (an ``osc`` message: a
constant path partial and one argument partial per value, scaled by ``scaleMin`` /
``scaleMax``, sent and received) and ``children``. Hexler publishes no schema; this one
follows documents saved by the TouchOSC editor (the samples in the tosclib project) and
writes every property those carry, so the editor has nothing to guess. Node IDs are UUIDs
derived from the address, so the same table always gives the same file.

Using them: in Open Stage Control set *send* to the engine's ``host:port`` (e.g.
``192.168.1.10:9000``) and load the session; in TouchOSC open the document and set an OSC
connection to the same host and port. The engine answers every tablet that has spoken,
so press ``hello`` (or move anything) and the widgets show the engine's state.
"""

from __future__ import annotations

import json
import os
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.live.osc_table import MAX_STRING, TABLE, Control
from engine.output_files import free_names, staged

__all__ = [
    "APPS",
    "Cell",
    "Group",
    "open_stage_control_json",
    "open_stage_control_session",
    "plan",
    "touchosc_document",
    "touchosc_xml",
    "write_layout",
]

APPS = ("open-stage-control", "touchosc")
DEFAULT_FILES = {"open-stage-control": "encore.json", "touchosc": "encore.tosc"}
OSC_VERSION = "1.26.0"   # above 1.24.2, the last session version Open Stage Control converts
LEXML_VERSION = "3"      # as the TouchOSC editor writes it

CANVAS_W = 1280
PAD = 10          # inside a group box, and between boxes
GAP = 10          # between cells of a group
TITLE_H = 28
CAPTION_H = 22
SIZES = {"fader": (76, 180), "xy": (180, 180), "button": (104, 56), "toggle": (104, 56),
         "label": (280, 40), "text": (260, 46), "radio": (200, 46)}
_UUIDS = uuid.UUID("6f1c2a52-4e0b-4d6c-9a43-2f5e7d0c1b88")  # namespace for node IDs


# ---- the plan both layouts draw -------------------------------------------------------
@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Cell:
    """One control in its group: a caption strip above the widget, frames relative to the
    group's box."""

    control: Control
    caption: str
    caption_frame: Box
    frame: Box


@dataclass(frozen=True)
class Group:
    """A titled box of the controls sharing an address prefix; frame on the canvas."""

    prefix: str
    title: str
    frame: Box
    cells: tuple[Cell, ...]


def plan(table: Iterable[Control] = TABLE, width: int = CANVAS_W) -> list[Group]:
    """Where every control of the table goes: groups by parent address, in table order,
    flowed into rows ``width`` pixels wide. Every control is in exactly one cell."""
    controls = list(table)
    groups: dict[str, list[Control]] = {}
    for control in controls:
        groups.setdefault(control.address.rsplit("/", 1)[0] or "/", []).append(control)
    root = _common_root(list(groups))
    placed: list[Group] = []
    x, y, row_h = PAD, PAD, 0
    for prefix, members in groups.items():
        cells, cx = [], PAD
        for control in members:
            w, h = SIZES[control.widget]
            cells.append(Cell(control, control.address.rsplit("/", 1)[1],
                              Box(cx, TITLE_H, w, CAPTION_H),
                              Box(cx, TITLE_H + CAPTION_H, w, h)))
            cx += w + GAP
        box_w = cx - GAP + PAD
        box_h = TITLE_H + CAPTION_H + max(c.frame.h for c in cells) + PAD
        if x > PAD and x + box_w > width - PAD:
            x, y, row_h = PAD, y + row_h + PAD, 0
        title = prefix[len(root):].strip("/").replace("/", " ") or root.rsplit("/", 1)[-1]
        placed.append(Group(prefix, title or "/", Box(x, y, box_w, box_h), tuple(cells)))
        x += box_w + PAD
        row_h = max(row_h, box_h)
    return placed


def _common_root(prefixes: Sequence[str]) -> str:
    """The longest path all prefixes start with ("/encore" for Encore's table)."""
    split = [p.strip("/").split("/") for p in prefixes]
    common: list[str] = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/" + "/".join(common) if common else ""


def _canvas_height(groups: Sequence[Group]) -> int:
    return max((g.frame.y + g.frame.h for g in groups), default=0) + PAD


def _slug(address: str) -> str:
    return address.strip("/").replace("/", "_") or "root"


# ---- Open Stage Control ---------------------------------------------------------------
def open_stage_control_session(table: Iterable[Control] = TABLE) -> dict[str, Any]:
    """The Open Stage Control session (a dict ready for JSON) for the table."""
    groups = plan(table)
    panels = [_osc_panel(g) for g in groups]
    root = {"type": "root", "id": "root", "widgets": panels, "tabs": [],
            "comments": "Generated by `encore layout open-stage-control` from the OSC "
                        "address table; regenerate it rather than editing it."}
    return {"createdWith": "Open Stage Control", "version": OSC_VERSION, "type": "session",
            "content": root}


def open_stage_control_json(table: Iterable[Control] = TABLE) -> str:
    """:func:`open_stage_control_session` as JSON text."""
    return json.dumps(open_stage_control_session(table), indent=2) + "\n"


def _osc_geometry(box: Box) -> dict[str, Any]:
    return {"left": box.x, "top": box.y, "width": box.w, "height": box.h}


def _osc_panel(group: Group) -> dict[str, Any]:
    slug = _slug(group.prefix)
    widgets: list[dict[str, Any]] = [{
        "type": "text", "id": f"title_{slug}", "default": group.title, "align": "left",
        "address": f"/layout/title/{slug}", "bypass": True, "colorText": "#e0e0e0",
        **_osc_geometry(Box(PAD, 2, group.frame.w - 2 * PAD, TITLE_H - 4))}]
    for cell in group.cells:
        if cell.control.widget not in ("button", "toggle"):  # those carry their own label
            widgets.append({"type": "text", "id": f"caption_{_slug(cell.control.address)}",
                            "default": cell.caption, "address":
                            f"/layout/caption/{_slug(cell.control.address)}", "bypass": True,
                            **_osc_geometry(cell.caption_frame)})
        widgets.append(_osc_widget(cell))
    return {"type": "panel", "id": f"group_{slug}", "widgets": widgets, "tabs": [],
            "scroll": False, "colorBg": "#202428", "comments": group.prefix,
            **_osc_geometry(group.frame)}


def _osc_widget(cell: Cell) -> dict[str, Any]:
    c = cell.control
    common = {"id": _slug(c.address), "address": c.address, "comments": c.help,
              **_osc_geometry(cell.frame)}
    if c.widget == "fader":
        low, high = c.ranges[0]
        return {"type": "fader", **common, "range": {"min": low, "max": high},
                "typeTags": "f", "pips": True, "decimals": 2}
    if c.widget == "xy":
        (x0, x1), (y0, y1) = c.ranges
        return {"type": "xy", **common, "rangeX": {"min": x0, "max": x1},
                "rangeY": {"min": y0, "max": y1}, "typeTags": "ff", "pips": True}
    if c.widget == "button":
        return {"type": "button", **common, "mode": "tap", "on": 1, "off": 0,
                "typeTags": "i", "label": cell.caption}
    if c.widget == "toggle":
        low, high = c.ranges[0]
        return {"type": "button", **common, "mode": "toggle", "on": high, "off": low,
                "typeTags": "i", "label": cell.caption}
    if c.widget == "label":
        return {"type": "text", **common, "default": "-", "align": "left", "wrap": "soft"}
    # text and radio: a string typed on the tablet's keyboard, sent on Enter
    return {"type": "input", **common, "typeTags": "s", "align": "left",
            "maxLength": MAX_STRING}


# ---- TouchOSC -------------------------------------------------------------------------
_COLOURS = {"fader": (0.25, 0.55, 1.0, 1.0), "xy": (0.6, 0.4, 1.0, 1.0),
            "button": (1.0, 0.6, 0.2, 1.0), "toggle": (0.3, 0.8, 0.4, 1.0),
            "label": (0.3, 0.3, 0.3, 1.0), "text": (0.35, 0.35, 0.35, 1.0),
            "radio": (0.35, 0.35, 0.35, 1.0)}
_TOSC_TYPES = {"fader": "FADER", "xy": "XY", "button": "BUTTON", "toggle": "BUTTON",
               "label": "LABEL", "text": "TEXT", "radio": "TEXT"}


def touchosc_xml(table: Iterable[Control] = TABLE) -> str:
    """The TouchOSC document's XML (before compression) for the table."""
    groups = plan(table)
    lexml = ET.Element("lexml", version=LEXML_VERSION)
    root = _node(lexml, "GROUP", "encore", "layout:root",
                 Box(0, 0, CANVAS_W, _canvas_height(groups)), colour=(0.08, 0.08, 0.1, 1.0),
                 interactive=False)
    ET.SubElement(root, "messages")
    children = ET.SubElement(root, "children")
    for group in groups:
        box = _node(children, "GROUP", _slug(group.prefix), f"layout:group:{group.prefix}",
                    group.frame, colour=(0.14, 0.15, 0.17, 1.0), interactive=False)
        ET.SubElement(box, "messages")
        kids = ET.SubElement(box, "children")
        _label(kids, f"title_{_slug(group.prefix)}", group.title,
               Box(PAD, 2, group.frame.w - 2 * PAD, TITLE_H - 4), size=16)
        for cell in group.cells:
            if cell.control.widget not in ("button", "toggle"):
                _label(kids, f"caption_{_slug(cell.control.address)}", cell.caption,
                       cell.caption_frame, size=12)
            _tosc_control(kids, cell)
    body = ET.tostring(lexml, encoding="unicode")
    return "<?xml version='1.0' encoding='UTF-8'?>" + body


def touchosc_document(table: Iterable[Control] = TABLE) -> bytes:
    """The ``.tosc`` file's bytes: :func:`touchosc_xml` compressed with zlib."""
    return zlib.compress(touchosc_xml(table).encode("utf-8"), 9)


def _prop(props: ET.Element, kind: str, key: str, value: Any) -> None:
    prop = ET.SubElement(props, "property", type=kind)
    ET.SubElement(prop, "key").text = key
    val = ET.SubElement(prop, "value")
    if kind == "c":
        for name, part in zip("rgba", value, strict=True):
            ET.SubElement(val, name).text = _num(part)
    elif kind == "r":
        for name in "xywh":
            ET.SubElement(val, name).text = str(getattr(value, name))
    elif kind == "b":
        val.text = "1" if value else "0"
    else:
        val.text = _num(value) if isinstance(value, int | float) else str(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _node(parent: ET.Element, kind: str, name: str, key: str, frame: Box,
          colour: tuple[float, ...], interactive: bool = True,
          extra: Sequence[tuple[str, str, Any]] = (),
          values: Sequence[tuple[str, str, bool]] = ()) -> ET.Element:
    """A node with the common properties of every control, ``extra`` ones, and its values
    ``(key, default, locked to default)``; ``touch`` is always there."""
    node = ET.SubElement(parent, "node", ID=str(uuid.uuid5(_UUIDS, key)), type=kind)
    props = ET.SubElement(node, "properties")
    common = [("b", "background", True), ("c", "color", colour), ("f", "cornerRadius", 1),
              ("r", "frame", frame), ("b", "grabFocus", interactive),
              ("b", "interactive", interactive), ("b", "locked", False), ("s", "name", name),
              ("i", "orientation", 0), ("b", "outline", True), ("i", "outlineStyle", 1),
              ("i", "pointerPriority", 0), ("i", "shape", 1), ("b", "visible", True)]
    for kind_, key_, value in sorted([*common, *extra], key=lambda p: p[1]):
        _prop(props, kind_, key_, value)
    vals = ET.SubElement(node, "values")
    for key_, default, locked in sorted([*values, ("touch", "false", False)]):
        value = ET.SubElement(vals, "value")
        ET.SubElement(value, "key").text = key_
        ET.SubElement(value, "locked").text = "0"
        ET.SubElement(value, "lockedDefaultCurrent").text = "1" if locked else "0"
        ET.SubElement(value, "default").text = default
        ET.SubElement(value, "defaultPull").text = "0"
    return node


_TEXT_PROPS = [("i", "font", 0), ("i", "textAlignH", 1), ("i", "textAlignV", 2),
               ("b", "textClip", True), ("c", "textColor", (1.0, 1.0, 1.0, 1.0)),
               ("i", "textLength", 0)]


def _label(parent: ET.Element, name: str, text: str, frame: Box, size: int) -> ET.Element:
    """A static text (a title or a caption): no messages."""
    node = _node(parent, "LABEL", name, f"layout:label:{name}", frame,
                 colour=(0.0, 0.0, 0.0, 0.0), interactive=False,
                 extra=[*_TEXT_PROPS, ("i", "textSize", size)],
                 values=[("text", text, True)])
    ET.SubElement(node, "messages")
    return node


def _partial(parent: ET.Element, kind: str, conversion: str, value: str,
             low: float = 0, high: float = 1) -> None:
    partial = ET.SubElement(parent, "partial")
    ET.SubElement(partial, "type").text = kind
    ET.SubElement(partial, "conversion").text = conversion
    ET.SubElement(partial, "value").text = value
    ET.SubElement(partial, "scaleMin").text = _num(low)
    ET.SubElement(partial, "scaleMax").text = _num(high)


def _osc_message(node: ET.Element, address: str, send: bool,
                 arguments: Sequence[tuple[str, str, float, float]]) -> None:
    """An OSC message on ``address``; ``arguments`` are (value key, conversion, low, high):
    the value (0..1 on the tablet) is scaled to low..high when sent, and back when received.
    """
    osc = ET.SubElement(ET.SubElement(node, "messages"), "osc")
    for tag, text in (("enabled", "1"), ("send", "1" if send else "0"), ("receive", "1"),
                      ("feedback", "0"), ("connections", "11111")):
        ET.SubElement(osc, tag).text = text
    triggers = ET.SubElement(osc, "triggers")
    for key, *_ in arguments:
        trigger = ET.SubElement(triggers, "trigger")
        ET.SubElement(trigger, "var").text = key
        ET.SubElement(trigger, "condition").text = "ANY"
    _partial(ET.SubElement(osc, "path"), "CONSTANT", "STRING", address)
    args = ET.SubElement(osc, "arguments")
    for key, conversion, low, high in arguments:
        _partial(args, "VALUE", conversion, key, low, high)


def _tosc_control(parent: ET.Element, cell: Cell) -> None:
    c = cell.control
    kind, colour = _TOSC_TYPES[c.widget], _COLOURS[c.widget]
    name, key = _slug(c.address), f"control:{c.address}"
    if c.widget == "fader":
        node = _node(parent, kind, name, key, cell.frame, colour,
                     extra=[("b", "bar", True), ("i", "barDisplay", 0), ("b", "cursor", True),
                            ("i", "cursorDisplay", 0), ("b", "grid", True),
                            ("i", "gridSteps", 10), ("i", "response", 0),
                            ("i", "responseFactor", 100)],
                     values=[("x", "0", False)])
        _osc_message(node, c.address, True, [("x", "FLOAT", *c.ranges[0])])
    elif c.widget == "xy":
        node = _node(parent, kind, name, key, cell.frame, colour,
                     extra=[("b", "cursor", True), ("i", "cursorDisplay", 0),
                            ("i", "gridStepsX", 10), ("i", "gridStepsY", 10),
                            ("b", "gridX", True), ("b", "gridY", True), ("b", "lines", True),
                            ("i", "linesDisplay", 0), ("b", "lockX", False),
                            ("b", "lockY", False), ("i", "response", 0),
                            ("i", "responseFactor", 100)],
                     values=[("x", "0.5", False), ("y", "0.5", False)])
        _osc_message(node, c.address, True, [("x", "FLOAT", *c.ranges[0]),
                                             ("y", "FLOAT", *c.ranges[1])])
    elif c.widget in ("button", "toggle"):
        toggle = c.widget == "toggle"
        node = _node(parent, kind, name, key, cell.frame, colour,
                     extra=[("i", "buttonType", 2 if toggle else 0), ("b", "press", True),
                            ("b", "release", True), ("b", "valuePosition", False)],
                     values=[("x", "0", False)])
        low, high = c.ranges[0] if toggle else (0, 1)
        _osc_message(node, c.address, True, [("x", "INTEGER", low, high)])
        # a button has no text of its own: its caption is drawn over it, not touchable
        _label(parent, f"caption_{name}", cell.caption, cell.frame, size=13)
    else:  # label, text, radio: a line of text the engine sends (and echoes)
        node = _node(parent, kind, name, key, cell.frame, colour, interactive=False,
                     extra=[*_TEXT_PROPS, ("i", "textSize", 14)],
                     values=[("text", "-", False)])
        _osc_message(node, c.address, c.is_input, [("text", "STRING", 0, 1)])


# ---- files ----------------------------------------------------------------------------
def write_layout(app: str, out: str | Path | None = None,
                 table: Iterable[Control] = TABLE) -> Path:
    """Write the ``app`` layout of the table to ``out`` (a file, or a folder, existing or
    written with a trailing slash, to put ``encore.json`` / ``encore.tosc`` in; default:
    that name in the current folder). Returns the file's path."""
    if app not in APPS:
        raise ValueError(f"no layout for {app!r}; choose one of {', '.join(APPS)}")
    path = Path(out) if out is not None else Path(DEFAULT_FILES[app])
    named = out is not None
    if path.is_dir() or str(out).endswith(("/", os.sep)):
        path, named = path / DEFAULT_FILES[app], False
    if not named:  # encore_2.json, ... when an earlier layout is there
        path = path.with_name(free_names(path.parent, [path.name])[path.name])
    with staged(path.parent, [path.name], fix="a file is there; give another name (-o FILE), "
                                              "or move it away first") as stage:
        if app == "open-stage-control":
            (stage / path.name).write_text(open_stage_control_json(table), encoding="utf-8")
        else:
            (stage / path.name).write_bytes(touchosc_document(table))
    return path
