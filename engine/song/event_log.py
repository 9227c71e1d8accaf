"""The event log: one JSON line per bar (and per control change), enough to replay a set.

The first line is a header (``"type": "header"``) with the patch, seed, model and format
version; each bar line (``"type": "bar"``) has the plan (section, pass, motion, z, anchor,
temperature, noise seed) and the arranged notes per part. Lines are flushed as written,
so a log is readable up to its last complete line whatever happens to the process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

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


def read_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a log; a torn last line (a crash mid-write) is skipped, any other bad line
    is an error naming the line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                return
            raise ValueError(f"{path}:{number}: not an Encore event log line ({err})") from err


def read_bars(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, bar records) of a log."""
    header: dict[str, Any] | None = None
    bars = []
    for record in read_log(path):
        if record.get("type") == "header":
            header = record
        elif record.get("type") == "bar":
            bars.append(record)
    if header is None:
        raise ValueError(f"{path}: no header line; is this an Encore event log (song.jsonl)?")
    return header, bars
