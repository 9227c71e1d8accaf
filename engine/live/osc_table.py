"""THE table of Encore's OSC address space: every address a tablet may send or be sent.

    from engine.live.osc_table import TABLE
    TABLE["/encore/tempo"]          # Control(address="/encore/tempo", types="f", ...)
    TABLE.match("/encore/part/*/mute")  # the four mute toggles (OSC address patterns)
    TABLE["/encore/tempo"].accept("f", (128.0,))   # -> (128.0,), or raises CommandError

Dispatch (:mod:`engine.live.osc_control`), validation (:meth:`Control.accept`), feedback
(the show's state echoed under each control's address), the generated documentation
(:func:`osc_map_markdown`, for ``encore osc-map``; :func:`update_readme` writes it into
the README) and tablet layouts (:func:`osc_table_json`) all derive from :data:`TABLE`; to
add a control, add a row.

A :class:`Control` names what it sets (``target``: the patch key where there is one, such
as ``song.tempo`` or ``parts.bass.level``, else an action such as ``walk.jump``), when the
show lets the change take effect (``lands``: ``now``, on the next ``beat`` or the next
``bar``), and how a tablet should draw it (``widget``). Conventions, as TouchOSC and Open
Stage Control send them:

- a float argument also takes an int (some apps send ints); an int argument also takes a
  whole float (TouchOSC toggles send 1.0 and 0.0) and True/False;
- a ``button`` takes no argument, or one number: 1 on press, 0 on release (TouchOSC push
  buttons); it acts on the press only;
- NaN and infinity are refused, so are strings where numbers are expected, arrays, and
  a wrong number of arguments;
- a ``label`` is read-only: the engine sends it (bar, section, health), tablets show it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal, get_args

__all__ = [
    "MAX_MATCH_WORK",
    "MAX_PATTERN",
    "PARTS",
    "TABLE",
    "AddressIndex",
    "CommandError",
    "Control",
    "Lands",
    "OscTable",
    "PatternTooComplexError",
    "SegmentPattern",
    "Widget",
    "WorkMeter",
    "address_matches",
    "osc_map_markdown",
    "osc_table_json",
    "update_readme",
]

Lands = Literal["now", "beat", "bar"]
Widget = Literal["fader", "xy", "button", "toggle", "label", "radio", "text"]
Range = tuple[float, float] | None

PARTS = ("melody", "bass", "drums", "chords")  # as [parts.<name>] in a patch
MAX_STRING = 64        # characters in a string argument (a form's name)
MAX_PATTERN = 256      # characters in an address pattern with wildcards
MAX_MATCH_WORK = 2048  # work units matching one pattern against the table may take

_NUMBER_TAGS = "ifhd"  # int32, float32, int64, float64
_WILDCARDS = frozenset("*?[]{}")
_TYPE_NAMES = {"f": "a number", "i": "a whole number", "s": "a string"}
_TAG_NAMES = {"i": "int", "f": "float", "h": "int64", "d": "double", "s": "string",
              "S": "symbol", "b": "blob", "t": "timetag", "c": "char", "r": "colour",
              "m": "MIDI message", "T": "true", "F": "false", "N": "nil", "I": "impulse"}


class CommandError(ValueError):
    """A message a control does not take. ``reason`` is a stats key, ``bad_types`` or
    ``out_of_range``; the text says what was expected, what came and how to fix it."""

    def __init__(self, reason: str, text: str):
        self.reason = reason
        super().__init__(text)


@dataclass(frozen=True, slots=True)
class Control:
    """One OSC address: its arguments' OSC type tags and ranges, what it sets, when."""

    address: str
    types: str                    # OSC type tags of the arguments: "f", "ff", "i", "s", ""
    ranges: tuple[Range, ...]     # inclusive (low, high) per argument; None for strings
    target: str                   # what the show applies: a patch key or an action name
    lands: Lands                  # when it takes effect: now, next beat, next bar
    help: str
    widget: Widget                # how a tablet draws it
    replies: bool = False         # the sender is answered with the whole state

    def __post_init__(self) -> None:
        where = f"OSC table: {self.address!r}"
        if not self.address.startswith("/") or _WILDCARDS & set(self.address) or \
                " " in self.address or "#" in self.address:
            raise ValueError(f"{where} is not an OSC address; write e.g. /encore/tempo")
        if set(self.types) - set(_TYPE_NAMES):
            raise ValueError(f"{where}: types {self.types!r} may use only f, i and s")
        if len(self.ranges) != len(self.types):
            raise ValueError(f"{where}: {len(self.types)} types but {len(self.ranges)} ranges")
        for tag, bounds in zip(self.types, self.ranges, strict=True):
            if (tag == "s") != (bounds is None) or (bounds is not None and
                                                   not bounds[0] <= bounds[1]):
                raise ValueError(f"{where}: a number needs a (low, high) range, a string None")
        if self.lands not in get_args(Lands):
            raise ValueError(f"{where}: lands {self.lands!r} is not one of {get_args(Lands)}")
        if self.widget not in get_args(Widget):
            raise ValueError(f"{where}: widget {self.widget!r} is not one of "
                             f"{get_args(Widget)}")
        if self.is_button and self.types:
            raise ValueError(f"{where}: a button takes no arguments (types='')")

    @property
    def is_button(self) -> bool:
        """Acts once per press: no argument, or 1 on press and 0 on release."""
        return self.widget == "button"

    @property
    def is_input(self) -> bool:
        """Tablets may send it (everything but labels)."""
        return self.widget != "label"

    @property
    def has_state(self) -> bool:
        """Has a current value the engine echoes back (everything but buttons)."""
        return not self.is_button

    def accept(self, tags: str, args: Sequence[Any]) -> tuple[Any, ...] | None:
        """The values a message with these OSC type tags and arguments sets.

        ``args`` holds one value per tag (``None`` for the tags that carry none: N, I, [, ]).

        Floats come back as ``float``, ints as ``int``, strings as ``str``; a button's press
        gives ``()`` and its release ``None`` (nothing to do). Raises :class:`CommandError`.
        """
        if not self.is_input:
            raise CommandError("bad_types", f"{self.address} is read-only: the engine sends it")
        if "[" in tags or "]" in tags:
            raise CommandError("bad_types", f"{self.address} takes {self.expects()}, got an array")
        if self.is_button:
            return self._press(tags, args)
        if len(tags) != len(self.types):
            raise CommandError("bad_types", f"{self.address} takes {self.expects()}, got "
                          f"{_describe(tags, args)}")
        values = []
        for n, (want, tag, value, bounds) in enumerate(
                zip(self.types, tags, args, self.ranges, strict=True)):
            values.append(self._one(n, want, tag, value, bounds))
        return tuple(values)

    def expects(self) -> str:
        """The arguments in words, for error messages and documentation."""
        if self.is_button:
            return "no argument, or 1 on press and 0 on release"
        if not self.types:
            return "no argument"
        words = []
        for tag, bounds in zip(self.types, self.ranges, strict=True):
            word = _TYPE_NAMES[tag]
            if bounds is not None:
                word += f" {_number(bounds[0])}..{_number(bounds[1])}"
            words.append(word)
        return " and ".join(words) if len(words) <= 2 else ", ".join(words)

    def _press(self, tags: str, args: Sequence[Any]) -> tuple[()] | None:
        if not tags or tags == "I":
            return ()
        if len(tags) == 1 and tags in "TF":
            return () if tags == "T" else None
        if len(tags) == 1 and tags in _NUMBER_TAGS:
            value = args[0]
            if not math.isfinite(value):
                raise CommandError("out_of_range", f"{self.address} = {value!r} is not a finite "
                              "number; send 1 on press and 0 on release")
            return () if value != 0 else None
        raise CommandError("bad_types", f"{self.address} takes {self.expects()}, got "
                      f"{_describe(tags, args)}")

    def _one(self, n: int, want: str, tag: str, value: Any, bounds: Range) -> Any:
        which = f"{self.address} argument {n + 1}" if len(self.types) > 1 else self.address
        wanted = _TYPE_NAMES[want]
        if want == "s":
            if tag not in "sS":
                raise CommandError("bad_types", f"{which} must be {wanted}, got "
                              f"{_describe(tag, (value,))}")
            if not value or len(value) > MAX_STRING or not value.isprintable():
                raise CommandError("out_of_range", f"{which} = {value[:MAX_STRING]!r} must be 1 to "
                              f"{MAX_STRING} printable characters")
            return value
        if tag in "TF" and want == "i":
            value = int(tag == "T")
        elif tag not in _NUMBER_TAGS:
            raise CommandError("bad_types", f"{which} must be {wanted}, got "
                          f"{_describe(tag, (value,))}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CommandError("out_of_range", f"{which} = {value!r} is not a finite number; "
                          f"send {wanted}")
        if want == "f":
            value = float(value)
        elif isinstance(value, float):
            if not value.is_integer():
                raise CommandError("bad_types", f"{which} = {value!r} must be {wanted} "
                              "(0.0 and 1.0 are taken, not fractions)")
            value = int(value)
        assert bounds is not None
        low, high = bounds
        if not low <= value <= high:
            raise CommandError("out_of_range", f"{which} = {_number(value)} is out of range "
                          f"{_number(low)}..{_number(high)}; send a value between them")
        return value


class OscTable(Sequence[Control]):
    """The controls in order, looked up by exact address or by OSC address pattern."""

    def __init__(self, controls: Iterable[Control]):
        self._controls = tuple(controls)
        self._by_address: dict[str, Control] = {}
        for control in self._controls:
            if control.address in self._by_address:
                raise ValueError(f"OSC table: {control.address} is listed twice")
            self._by_address[control.address] = control
        self._inputs = tuple(c for c in self._controls if c.is_input)
        self._index = AddressIndex(self._inputs)

    def __len__(self) -> int:
        return len(self._controls)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._by_address[key]
        return self._controls[key]

    def __iter__(self) -> Iterator[Control]:
        return iter(self._controls)

    def __contains__(self, key: object) -> bool:
        return key in self._by_address or key in self._controls

    def __repr__(self) -> str:
        return f"OscTable({len(self)} controls)"

    def get(self, address: str) -> Control | None:
        return self._by_address.get(address)

    def match(self, pattern: str) -> list[Control]:
        """The controls an incoming address selects: itself, or every input matching an
        OSC address pattern (``*``, ``?``, ``[a-z]``, ``[!a]``, ``{melody,bass}``); none
        for a pattern too costly to match (see :meth:`select`)."""
        try:
            return self.select(pattern, WorkMeter())
        except PatternTooComplexError:
            return []

    def select(self, pattern: str, meter: WorkMeter) -> list[Control]:
        """:meth:`match`, spending the work on ``meter``: an exact address is one dict
        look-up (one unit); a pattern is matched once against the compiled
        :class:`AddressIndex`. Raises :class:`PatternTooComplexError` past the meter's limit."""
        if not _WILDCARDS & set(pattern):
            meter.spend(1)
            control = self._by_address.get(pattern)
            return [control] if control is not None else []
        return self._index.select(pattern, meter)

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(c.address for c in self._controls)


# ---- OSC address patterns -------------------------------------------------------------
class PatternTooComplexError(CommandError):
    """An address pattern refused for what matching it would cost (``too_complex``): longer
    than :data:`MAX_PATTERN` characters, or more than its work budget against the table."""

    def __init__(self, text: str):
        super().__init__("too_complex", text)


class WorkMeter:
    """Counts the work units a match takes (one unit: one NFA state advanced over one
    character, or one character of a pattern compiled) and raises
    :class:`PatternTooComplexError` past ``limit``."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int = MAX_MATCH_WORK):
        self.limit = limit
        self.used = 0

    def spend(self, units: int) -> None:
        self.used += units
        if self.used > self.limit:
            raise PatternTooComplexError(f"an address pattern that costs more than {self.limit} "
                                    "work units to match; send plain addresses or simple "
                                    "patterns such as /encore/part/*/mute")


_STAR = ("*",)
_ANY = ("?",)
_State = tuple[int, int, int]  # (item, alternative of a {a,b} item or -1, characters into it)


class SegmentPattern:
    """One path segment of an address pattern, compiled once into items (a literal
    character, ``?``, ``*``, a ``[set]``, a ``{a,b}`` choice) and matched by simulating
    its NFA: the work is at most (pattern length) x (name length), never exponential, and
    ``{a,b}{c,d}...`` is never expanded into its spellings."""

    __slots__ = ("_accept", "_start", "items", "max_len", "min_len", "stars")

    def __init__(self, items: Sequence[tuple[Any, ...]]):
        self.items = tuple(items)
        self.stars = any(item is _STAR for item in self.items)
        self.min_len = sum(0 if item is _STAR else min(map(len, item[1])) if item[0] == "{"
                           else 1 for item in self.items)
        self.max_len = sum(max(map(len, item[1])) if item[0] == "{" else 1
                           for item in self.items if item is not _STAR)
        self._accept: _State = (len(self.items), -1, 0)
        self._start = self._closure([(0, -1, 0)], WorkMeter(1 << 62))

    @classmethod
    def compile(cls, part: str) -> SegmentPattern | None:
        """The segment compiled, or None when it is malformed (an unclosed ``[`` or ``{``,
        a ``{`` inside braces, a stray ``]`` or ``}``): a malformed pattern matches nothing."""
        items: list[tuple[Any, ...]] = []
        i = 0
        while i < len(part):
            ch = part[i]
            if ch == "{":
                end = part.find("}", i)
                if end < 0 or "{" in part[i + 1:end]:
                    return None
                items.append(("{", tuple(dict.fromkeys(part[i + 1:end].split(",")))))
                i = end + 1
                continue
            if ch == "[":
                end = part.find("]", i + 1)
                if end < 0:
                    return None
                items.append(_char_class(part[i + 1:end]))
                i = end + 1
                continue
            if ch in "}]":
                return None
            item = _STAR if ch == "*" else _ANY if ch == "?" else ("=", ch)
            if not (item is _STAR and items and items[-1] is _STAR):  # ** is *
                items.append(item)
            i += 1
        return cls(items)

    def matches(self, name: str, meter: WorkMeter) -> bool:
        """Whether the segment pattern selects ``name``; spends the work on ``meter``."""
        meter.spend(1)
        if self.min_len > len(name) or (not self.stars and self.max_len < len(name)):
            return False
        states = self._start
        for ch in name:
            meter.spend(len(states))
            moved: list[_State] = []
            for i, alt, k in states:
                if i == len(self.items):
                    continue
                item = self.items[i]
                if item is _STAR:
                    moved.append((i, -1, 0))
                elif item[0] == "{":
                    if alt >= 0 and k < len(item[1][alt]) and item[1][alt][k] == ch:
                        moved.append((i, alt, k + 1))
                elif _one_char(item, ch):
                    moved.append((i + 1, -1, 0))
            if not moved:
                return False
            states = self._closure(moved, meter)
        return self._accept in states

    def _closure(self, states: Iterable[_State], meter: WorkMeter) -> frozenset[_State]:
        """The states reachable without reading a character (past a ``*``, into and out of
        a ``{a,b}`` choice)."""
        out: set[_State] = set()
        stack = list(states)
        while stack:
            state = stack.pop()
            if state in out:
                continue
            out.add(state)
            i, alt, k = state
            if i == len(self.items):
                continue
            item = self.items[i]
            if item is _STAR:
                stack.append((i + 1, -1, 0))
            elif item[0] == "{":
                if alt < 0:
                    stack.extend((i, a, 0) for a in range(len(item[1])))
                elif k == len(item[1][alt]):
                    stack.append((i + 1, -1, 0))
        meter.spend(len(out))
        return frozenset(out)


def _char_class(body: str) -> tuple[Any, ...]:
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    spans = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            spans.append((body[i], body[i + 2]))
            i += 3
        else:
            spans.append((body[i], body[i]))
            i += 1
    return ("[", negate, tuple(spans))


def _one_char(item: tuple[Any, ...], ch: str) -> bool:
    if item[0] == "=":
        return item[1] == ch
    if item is _ANY:
        return True
    _, negate, spans = item
    return any(low <= ch <= high for low, high in spans) != negate


class _Node:
    """A level of the address index: the next segments, and the control ending here."""

    __slots__ = ("children", "control")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.control: Control | None = None


class AddressIndex:
    """The input addresses as a tree of segments (``encore`` > ``part`` > ``bass`` >
    ``level``), built once. A pattern is matched against it level by level: each segment
    pattern is compiled once and tried on each distinct name at that level among the
    branches still selected, not pattern-by-pattern against every control; a pattern with
    a number of segments no address has costs nothing more."""

    def __init__(self, controls: Iterable[Control]):
        self.root = _Node()
        self.order: dict[str, int] = {}
        self.depths: set[int] = set()
        for n, control in enumerate(controls):
            node = self.root
            segments = control.address.split("/")[1:]
            for segment in segments:
                node = node.children.setdefault(segment, _Node())
            node.control = control
            self.order[control.address] = n
            self.depths.add(len(segments))

    def select(self, pattern: str, meter: WorkMeter) -> list[Control]:
        """The controls an address pattern selects, in table order; spends the work on
        ``meter`` (raises :class:`PatternTooComplexError` past its limit or for a pattern over
        :data:`MAX_PATTERN` characters)."""
        if len(pattern) > MAX_PATTERN:
            raise PatternTooComplexError(f"an address pattern of {len(pattern)} characters; the "
                                    f"limit is {MAX_PATTERN}")
        segments = pattern.split("/")[1:]
        meter.spend(1 + len(pattern) // 16)
        if len(segments) not in self.depths:
            return []
        nodes = [self.root]
        for segment in segments:
            if not _WILDCARDS & set(segment):
                nodes = [n.children[segment] for n in nodes if segment in n.children]
            else:
                meter.spend(len(segment))
                compiled = SegmentPattern.compile(segment)
                if compiled is None:
                    return []
                names = {name for n in nodes for name in n.children}
                chosen = {name for name in names if compiled.matches(name, meter)}
                nodes = [child for n in nodes for name, child in n.children.items()
                         if name in chosen]
            if not nodes:
                return []
        found = [n.control for n in nodes if n.control is not None]
        return sorted(found, key=lambda c: self.order[c.address])


def address_matches(pattern: str, address: str) -> bool:
    """Whether an OSC 1.0 address pattern selects ``address``.

    ``?`` is one character, ``*`` any run of characters, ``[abc]``/``[a-z]``/``[!a]`` one of
    (or none of) a set, ``{melody,bass}`` one of the strings; none of them crosses a ``/``.
    Matching is linear in each length (an NFA, no backtracking, no expansion of braces);
    malformed patterns match nothing, patterns over :data:`MAX_PATTERN` characters or
    :data:`MAX_MATCH_WORK` units too.
    """
    if len(pattern) > MAX_PATTERN:
        return False
    pattern_parts, address_parts = pattern.split("/"), address.split("/")
    if len(pattern_parts) != len(address_parts):
        return False
    meter = WorkMeter()
    try:
        for part, text in zip(pattern_parts, address_parts, strict=True):
            compiled = SegmentPattern.compile(part)
            if compiled is None or not compiled.matches(text, meter):
                return False
    except PatternTooComplexError:
        return False
    return True


# ---- the address space ----------------------------------------------------------------
def _controls() -> Iterator[Control]:
    def fader(address: str, low: float, high: float, target: str, lands: Lands,
              help: str) -> Control:
        return Control(address, "f", ((low, high),), target, lands, help, "fader")

    def button(address: str, target: str, lands: Lands, help: str,
               replies: bool = False) -> Control:
        return Control(address, "", (), target, lands, help, "button", replies)

    def toggle(address: str, target: str, lands: Lands, help: str) -> Control:
        return Control(address, "i", ((0, 1),), target, lands, help, "toggle")

    def label(address: str, target: str, help: str) -> Control:
        return Control(address, "s", (None,), target, "now", help, "label")

    yield fader("/encore/tempo", 40.0, 240.0, "song.tempo", "bar",
                "Tempo in beats per minute.")
    yield fader("/encore/walk/speed", 0.0, 1.0, "walk.step_size", "bar",
                "How far the latent walk moves each bar (its step size).")
    yield fader("/encore/walk/temperature", 0.0, 2.0, "walk.temperature", "bar",
                "Decoding temperature: 0 plays the likeliest notes, higher is looser.")
    yield fader("/encore/walk/wander", 0.0, 1.0, "walk.wander", "bar",
                "Stay near the section's anchor (0) or wander away from it (1).")
    yield button("/encore/walk/drift", "walk.drift", "bar",
                 "Back to the slow drift around the section's anchor.")
    yield button("/encore/walk/glide", "walk.glide", "bar",
                 "Glide to a fresh point over the next few bars.")
    yield button("/encore/walk/jump", "walk.jump", "bar",
                 "Jump to a fresh point at the next bar.")
    yield toggle("/encore/walk/freeze", "walk.freeze", "bar",
                 "1 holds the walk where it is (the bar's point repeats); 0 lets it move.")
    yield Control("/encore/xy", "ff", ((0.0, 1.0), (0.0, 1.0)), "walk.xy", "bar",
                  "X/Y pad over two latent directions; (0.5, 0.5) is the anchor itself.",
                  "xy")
    yield button("/encore/section/next", "section.next", "bar",
                 "Go to the next section of the form.")
    yield button("/encore/section/previous", "section.previous", "bar",
                 "Go back to the previous section of the form.")
    yield Control("/encore/form", "s", (None,), "form", "bar",
                  "Switch to another form of the patch by name (a [form.others.<name>] "
                  "table, or the main form's name): at the next section boundary it plays "
                  "from its first section. The engine echoes the form playing.",
                  "radio")
    yield Control("/encore/lyrics/theme", "s", (None,), "lyrics.theme", "bar",
                  "What the lines are about: a word or short prompt (\"\" lets the lyricist "
                  "roam). Lines written from the next bar on follow it.", "text")
    yield button("/encore/lyrics/new", "lyrics.renew", "bar",
                 "New words: the chorus is written afresh the next time it comes.")
    for part in PARTS:
        yield toggle(f"/encore/part/{part}/mute", f"parts.{part}.mute", "bar",
                     f"1 mutes the {part} (it is still generated, so unmuting is seamless).")
        yield fader(f"/encore/part/{part}/level", 0.0, 1.0, f"parts.{part}.level", "beat",
                    f"Mix level of the {part}; 0 is silent.")
    yield fader("/encore/voice/level", 0.0, 1.0, "voice.level", "now",
                "Level of the singing voice (from the next phrase on).")
    yield toggle("/encore/voice/mute", "voice.mute", "now",
                 "1 silences the voice (lines are still written and logged).")
    yield fader("/encore/master/level", 0.0, 1.0, "master.level", "now",
                "Master output level.")
    yield button("/encore/panic", "panic", "now",
                 "All notes off on every output, now.")
    yield button("/encore/status", "status", "now",
                 "Asks for the state: every control's value and the labels come back.",
                 replies=True)
    yield button("/encore/hello", "hello", "now",
                 "Registers this tablet for feedback (so does any message) and answers "
                 "with the state.", replies=True)
    yield label("/encore/status/bar", "status.bar", "The bar playing, counted from 1.")
    yield label("/encore/status/section", "status.section", "The section playing.")
    yield label("/encore/status/lyric", "status.lyric", "The lyric line last written.")
    yield label("/encore/status/health", "status.health",
                "Timing health: ok, or what went wrong (late events, underruns).")


TABLE = OscTable(_controls())


# ---- documentation and layouts --------------------------------------------------------
def osc_map_markdown(table: Iterable[Control] = TABLE) -> str:
    """The address space as Markdown: for ``encore osc-map`` and the README."""
    out = [
        "### OSC map",
        "",
        "Send to the port in the patch's `[osc]` section (default 9000). A change lands "
        "`now`, on the next `beat` or at the next `bar`. Floats also take ints, toggles "
        "take 0/1 as ints or floats, buttons take no argument or TouchOSC's 1 (press) / "
        "0 (release) and act on the press. Address patterns work: "
        "`/encore/part/*/mute 1` mutes every part. Every tablet that has sent anything "
        "gets each control's value echoed back under its own address, so faders show "
        "the truth; `/encore/status` asks for it now.",
        "",
        "| address | arguments | lands | widget | target | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for c in table:
        args = "(sent by the engine): a string" if not c.is_input else c.expects()
        does = c.help + (" Replies with the state." if c.replies and "state" not in c.help
                         else "")
        out.append(f"| `{c.address}` | {args} | {c.lands} | {c.widget} | `{c.target}` | "
                   f"{does.replace('|', '/')} |")
    return "\n".join(out) + "\n"


README_BEGIN = "<!-- osc-map:begin (generated by encore osc-map --readme README.md) -->"
README_END = "<!-- osc-map:end -->"


def update_readme(path: str | PathLike[str], table: Iterable[Control] = TABLE) -> bool:
    """Rewrite the OSC map between :data:`README_BEGIN` and :data:`README_END` in a Markdown
    file (``encore osc-map --readme README.md``); True when the file changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{path}: no OSC map markers; put the lines {README_BEGIN} and "
                         f"{README_END} where the map goes")
    start, end = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    new = text[:start] + "\n\n" + osc_map_markdown(table) + "\n" + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def osc_table_json(table: Iterable[Control] = TABLE) -> str:
    """The address space as JSON, for building tablet layouts (TouchOSC, Open Stage
    Control): ``{"version": 1, "controls": [{address, types, ranges, target, lands,
    widget, help, input, feedback, replies}, ...]}``."""
    controls = [{
        "address": c.address,
        "types": c.types,
        "ranges": [list(r) if r is not None else None for r in c.ranges],
        "target": c.target,
        "lands": c.lands,
        "widget": c.widget,
        "help": c.help,
        "input": c.is_input,
        "feedback": c.has_state,
        "replies": c.replies,
    } for c in table]
    return json.dumps({"version": 1, "controls": controls}, indent=2) + "\n"


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _describe(tags: str, args: Sequence[Any]) -> str:
    if not tags:
        return "no argument"
    words = []
    for tag, value in zip(tags, args, strict=True):  # one value per tag, None if none
        if tag in "sS":
            shown = repr(value if len(value) <= 24 else value[:21] + "...")
            words.append(f"{shown} ({_TAG_NAMES[tag]})")
        elif tag in _NUMBER_TAGS:
            words.append(f"{_number(value)} ({_TAG_NAMES[tag]})")
        else:
            words.append(_TAG_NAMES.get(tag, "an array" if tag in "[]" else f"type {tag!r}"))
    return ", ".join(words)
