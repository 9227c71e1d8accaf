"""The event log: one JSON line per bar (and per control change), enough to replay a set.

The first line is a header (``"type": "header"``) with the patch, seed, model and format
version; each bar line (``"type": "bar"``) has the plan (section, pass, motion, z, anchor,
temperature, noise seed) and the arranged notes per part. Lines are flushed as written,
so a log is readable up to its last complete line whatever happens to the process.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from engine.untrusted import MiB, UntrustedFileError, excerpt, read_text

LOG_VERSION = 1


class EventLog:
    """Append-only JSON-lines writer (a context manager)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # "x": a log already there (an earlier set) is refused, never replaced
        self._file: IO[str] | None = self.path.open("x", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: the event log is closed")
        self._file.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")
        self._file.flush()

    def header(self, **fields: Any) -> None:
        self.write({"type": "header", "version": LOG_VERSION} | fields)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- reading a log back: every record checked before any work --------------------------
MAX_LOG_BYTES = 64 * MiB
"""The largest event log read: about 19,000 bars with lyrics (11 hours at 112 BPM)."""
MAX_LINE_BYTES = MiB
"""The longest line (a bar with all its notes is a few kB)."""
MAX_NOTES = 1024       # notes of one part in one bar (16 steps)
MAX_STEP = 64          # a note starts within its bar (16 steps; a segment of 4 bars at most)
MAX_NOTE_STEPS = 512   # and lasts at most this many steps
MAX_VECTOR = 4096      # latent numbers per bar
MAX_LATENT = 1000      # a latent number (they lie within a few units of 0)
MAX_SYLLABLES = 512
MAX_SUNG_BEATS = 64.0  # one sung note at most 16 bars long
PHRASE_REACH_BARS = 64  # a phrase's notes lie within this many bars after its first bar
MAX_TEXT = 2000
MAX_VALUES = 16


class LogError(UntrustedFileError):
    """A record of an event log that cannot be used; names the line."""


FIX = "the log is damaged there; replay, plot and stats read the song.jsonl that `encore " \
      "render` or `encore live` wrote"


def _int(record: dict[str, Any], key: str, low: int, high: int, where: str,
         required: bool = True) -> None:
    value = record.get(key)
    if value is None and not required:
        return
    if type(value) is not int or not low <= value <= high:
        raise LogError(where, f"\"{key}\": {excerpt(value)}; a whole number {low}..{high}", FIX)


def _number(value: Any) -> bool:
    """A finite number of a size a float holds (an int of 400 digits is not)."""
    if type(value) is int:
        return abs(value) < 10**18
    return type(value) is float and math.isfinite(value)


def _text(record: dict[str, Any], key: str, where: str, required: bool = True) -> None:
    value = record.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise LogError(where, f"\"{key}\": {excerpt(value)}; text of at most {MAX_TEXT} "
                              "characters", FIX)


def _vector(record: dict[str, Any], key: str, where: str) -> None:
    value = record.get(key)
    if value is None:
        return
    if not isinstance(value, list) or len(value) > MAX_VECTOR or \
            not all(_number(v) and abs(v) <= MAX_LATENT for v in value):
        raise LogError(where, f"\"{key}\": {excerpt(value)}; a list of at most {MAX_VECTOR} "
                              f"numbers -{MAX_LATENT}..{MAX_LATENT}", FIX)


def _check_bar(record: dict[str, Any], where: str) -> None:
    _int(record, "bar", 0, 10**9, where)
    _text(record, "section", where, required=False)
    _int(record, "pass", 0, 10**6, where, required=False)
    _int(record, "key_shift", -24, 24, where, required=False)
    _vector(record, "z", where)
    _vector(record, "anchor", where)
    if record.get("temperature") is not None and not _number(record["temperature"]):
        raise LogError(where, f"\"temperature\": {excerpt(record['temperature'])}; a number",
                       FIX)
    notes = record.get("notes")
    if notes is None:
        return  # the replay says what is missing, in its own words
    if not isinstance(notes, dict):
        raise LogError(where, f"\"notes\": {excerpt(notes)}; an object of parts", FIX)
    for part, items in notes.items():
        if not isinstance(items, list) or len(items) > MAX_NOTES:
            raise LogError(where, f"part {excerpt(part)}: {excerpt(items)}; a list of at most "
                                  f"{MAX_NOTES} notes", FIX)
        for item in items:
            if not isinstance(item, list) or len(item) != 4 or \
                    not all(type(v) is int for v in item):
                raise LogError(where, f"part {excerpt(part)}: a note that cannot be played "
                                      f"({excerpt(item)} is not four whole numbers); notes are "
                                      "[pitch, velocity, start, end]", FIX)
            pitch, velocity, start, end = item
            if not (0 <= pitch <= 127 and 0 <= velocity <= 127 and 0 <= start < MAX_STEP
                    and start <= end <= start + MAX_NOTE_STEPS):
                raise LogError(where, f"part {excerpt(part)}: a note that cannot be played "
                                      f"({excerpt(item)}: pitch and velocity 0..127, start "
                                      f"0..{MAX_STEP - 1}, end from start to start + "
                                      f"{MAX_NOTE_STEPS})", FIX)


def _check_lyric(record: dict[str, Any], where: str) -> None:
    _int(record, "bar", 0, 10**9, where)
    for key in ("section", "text"):
        _text(record, key, where)
    _text(record, "role", where, required=False)
    first, last = (record["bar"] - 1) * 4.0, (record["bar"] + PHRASE_REACH_BARS) * 4.0
    syllables = record.get("syllables")
    if not isinstance(syllables, list) or not 0 < len(syllables) <= MAX_SYLLABLES:
        raise LogError(where, f"\"syllables\": {excerpt(syllables)}; a list of 1.."
                              f"{MAX_SYLLABLES} syllables", FIX)
    for syllable in syllables:
        if not isinstance(syllable, dict):
            raise LogError(where, f"a syllable {excerpt(syllable)} is not an object", FIX)
        _text(syllable, "text", where)
        _text(syllable, "word", where)
        phonemes, notes = syllable.get("phonemes"), syllable.get("notes")
        if not isinstance(phonemes, list) or len(phonemes) > 64 or \
                not all(isinstance(p, str) and len(p) <= 16 for p in phonemes):
            raise LogError(where, f"\"phonemes\": {excerpt(phonemes)}; a list of phoneme "
                                  "names", FIX)
        if not isinstance(notes, list) or not 0 < len(notes) <= 64:
            raise LogError(where, f"\"notes\": {excerpt(notes)}; a list of 1..64 sung notes",
                           FIX)
        for note in notes:
            if not isinstance(note, list) or len(note) != 3 or \
                    type(note[0]) is not int or not 0 <= note[0] <= 127 or \
                    not _number(note[1]) or not first <= note[1] <= last or \
                    not _number(note[2]) or not 0 < note[2] <= MAX_SUNG_BEATS:
                raise LogError(where, f"a sung note {excerpt(note)}: [pitch 0..127, start in "
                                      f"beats {first:g}..{last:g} (near its bar), duration "
                                      f"0..{MAX_SUNG_BEATS:g} beats]", FIX)


def _check_control(record: dict[str, Any], where: str) -> None:
    _text(record, "target", where)
    values = record.get("values")
    if not isinstance(values, list) or len(values) > MAX_VALUES or not all(
            v is None or isinstance(v, bool | str) or _number(v) for v in values) or \
            any(isinstance(v, str) and len(v) > MAX_TEXT for v in values):
        raise LogError(where, f"\"values\": {excerpt(values)}; a list of at most {MAX_VALUES} "
                              "numbers or texts", FIX)
    _int(record, "after_bar", -1, 10**9, where)
    _int(record, "at_bar", 0, 10**9, where, required=False)


_CHECKS = {"bar": _check_bar, "lyric": _check_lyric, "control": _check_control}


def check_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` when it is a well-formed event-log record (fields of the known types in
    range; other types only need to be objects), else a LogError naming ``where``."""
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise LogError(where, "not an event-log record (a JSON object with a \"type\"); is this "
                              "an Encore event log (song.jsonl)?", FIX)
    check = _CHECKS.get(record["type"])
    if check is not None:
        check(record, where)
    return record


def read_lines(path: str | Path) -> list[str]:
    """The lines of a log file (a regular file of at most :data:`MAX_LOG_BYTES`, UTF-8),
    each at most :data:`MAX_LINE_BYTES`."""
    text = read_text(path, MAX_LOG_BYTES, "an Encore event log is the song.jsonl that "
                                          "`encore render` or `encore live` wrote")
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_BYTES:
            raise LogError(f"{path}:{number}", f"a line of {len(line):,} characters; a log's "
                                               f"lines are at most {MAX_LINE_BYTES:,}", FIX)
    return lines


def parse_line(line: str, where: str) -> Any:
    """One line's JSON; json.JSONDecodeError for a line that is not JSON (a torn last line
    is one), LogError for JSON nested too deeply."""
    try:
        return json.loads(line)
    except RecursionError:
        raise LogError(where, "JSON nested too deeply", FIX) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # json's own limit: an integer of more than 4300 digits
        raise LogError(where, "a number of more than 4300 digits", FIX) from None


def read_records(path: str | Path) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """The one reader of event logs (replay, plot and stats): ``([(where, record)], torn)``.

    Each record is checked (:func:`check_record`); bars come one after another from 0
    with latent vectors of one size; ``where`` is ``path:line`` for messages. A torn last
    line (a crash mid-write) is left out and ``torn`` is True; any other line that is not
    JSON is an error naming it."""
    path = Path(path)
    lines = read_lines(path)
    records: list[tuple[str, dict[str, Any]]] = []
    torn = False
    last_bar, z_size = -1, None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = check_record(parse_line(line, where), where)
        except json.JSONDecodeError as err:
            if number == len(lines) and records:
                torn = True  # everything before it stands
                break
            raise LogError(where, f"not JSON ({err}); is this an Encore event log "
                                  "(song.jsonl)?", FIX) from None
        if record["type"] == "bar":
            if record["bar"] != last_bar + 1:
                raise LogError(where, f"bar {record['bar']} after bar {last_bar}; bars come one "
                                      "after another from 0, each once", FIX)
            last_bar = record["bar"]
            size = len(record.get("z") or [])
            if z_size is not None and size != z_size:
                raise LogError(where, f"a latent vector of {size} numbers after ones of "
                                      f"{z_size}", FIX)
            z_size = size
        records.append((where, record))
    return records, torn


def read_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a log (:func:`read_records`, without where they were)."""
    return iter([record for _, record in read_records(path)[0]])


def read_bars(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, bar records) of a log; the header's patch is checked as a patch."""
    header: dict[str, Any] | None = None
    bars = []
    for record in read_log(path):
        if record.get("type") == "header":
            header = record
        elif record.get("type") == "bar":
            bars.append(record)
    if header is None:
        raise ValueError(f"{path}: no header line; is this an Encore event log (song.jsonl)?")
    for record in bars:
        if "notes" not in record:
            raise LogError(path, f"bar {record['bar']} has no notes", FIX)
    if not bars:
        return header, bars  # the caller says there is nothing to work on
    if not isinstance(header.get("patch"), dict):
        raise LogError(path, "the header has no patch", FIX)
    from engine.patch import build_patch

    patch = build_patch(header["patch"], f"{path} (the header's patch)")  # refused if damaged
    return header | {"patch": patch.to_dict()}, bars
