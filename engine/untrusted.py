"""Reading files Encore did not write: within a size, a memory and a time bound, or refused.

Every file a user points Encore at (patches, MIDI, models, checkpoints, voicebanks,
tokenizers, event logs) is data from somewhere else: a download, a USB stick, a file
someone edited. The helpers here are the one way such a file is opened and parsed:

- :func:`check_file` refuses what is not a regular file (a FIFO would block the open for
  ever, ``/dev/zero`` never ends, a folder is no file) *before* opening it, from its
  ``stat``, and :func:`open_file` checks again on the open descriptor (opened without
  blocking), so a file swapped for a FIFO in between is refused too;
- :func:`read_bytes` and :func:`read_text` read at most a stated number of bytes;
  :func:`gunzip` decompresses at most a stated number (a gzip bomb is refused after that
  many, not after filling the memory);
- :func:`parse_json` and :func:`parse_yaml` turn parser failures (deep nesting included)
  into one error; :func:`parse_yaml` also refuses YAML aliases past a small budget and
  documents of too many nodes (the "billion laughs" of YAML);
- :func:`excerpt` shows a value from a file in an error message in a few dozen
  characters, however large the value (a 700 MB ``repr`` is no message).

Every refusal is an :class:`UntrustedFileError` (a ValueError), whose text is
``<file>: <what> (<fix>)``; ``encore`` prints it as ``encore: error: <file>: <what>
(<fix>)`` and exits with status 2.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import zlib
from typing import IO, Any

import yaml

__all__ = ["MiB", "UntrustedFileError", "MissingFileError", "check_file", "open_file",
           "read_bytes", "read_text", "gunzip", "parse_json", "parse_yaml", "excerpt"]

MiB = 2**20
YAML_ALIAS_BUDGET = 100
"""Aliases (``*name``) one YAML document may use. Voicebank files use a handful, if any;
each alias of a nested alias multiplies what a reader walks, so a few dozen lines of them
make billions of nodes to anyone who walks the result."""
YAML_NODE_BUDGET = 1_000_000
"""Values (scalars, lists, mappings) one YAML document may hold, aliases expanded (a large
phoneme dictionary holds a few hundred thousand)."""


class UntrustedFileError(ValueError):
    """A file (or a key in it) that Encore refuses. ``str()`` is ``<file>: <what> (<fix>)``."""

    def __init__(self, path: str | os.PathLike[str], what: str, fix: str = "") -> None:
        self.path = str(path)
        self.what = what
        self.fix = fix
        super().__init__(f"{self.path}: {what}" + (f" ({fix})" if fix else ""))


class MissingFileError(UntrustedFileError, FileNotFoundError):
    """The file is not there (also an OSError, for callers that look for that)."""


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


def check_file(path: str | os.PathLike[str], fix: str = "") -> os.stat_result:
    """The ``stat`` of ``path`` when it is a regular file (symlinks followed); anything else
    (missing, a folder, a FIFO, a device, a socket) is refused without opening it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MissingFileError(path, "no such file", fix) from None
    except OSError as err:
        raise UntrustedFileError(path, f"cannot be read ({err.strerror or err})", fix) from None
    if not stat.S_ISREG(info.st_mode):
        raise UntrustedFileError(path, f"not a file (it is {_kind(info.st_mode)})",
                                 fix or "give the path of a regular file")
    return info


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_file(path: str | os.PathLike[str], fix: str = "") -> IO[bytes]:
    """``path`` opened for reading in binary, after :func:`check_file`; the descriptor is
    opened without blocking and checked again, so nothing but a regular file is read."""
    check_file(path, fix)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise UntrustedFileError(path, f"cannot be opened ({err.strerror or err})", fix) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UntrustedFileError(path, f"not a file (it is {_kind(mode)})",
                                     fix or "give the path of a regular file")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike[str], limit: int, fix: str = "") -> bytes:
    """The whole file, when it is a regular file of at most ``limit`` bytes."""
    with open_file(path, fix) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UntrustedFileError(path, f"larger than {_size(limit)}, more than such a file "
                                       "ever holds", fix or "is it the right file?")
    return data


def read_text(path: str | os.PathLike[str], limit: int, fix: str = "",
              encoding: str = "utf-8") -> str:
    """:func:`read_bytes`, decoded (``encoding``, ``"utf-8-sig"`` skips a byte-order mark)."""
    data = read_bytes(path, limit, fix)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise UntrustedFileError(path, f"not a text file (not UTF-8 at byte {err.start})",
                                 fix or "is it the right file?") from None


def gunzip(path: str | os.PathLike[str], limit: int, fix: str = "",
           compressed_limit: int = 256 * MiB) -> bytes:
    """A gzip file's contents, refused once they pass ``limit`` bytes (a gzip bomb stops
    there, with at most ``limit`` bytes in memory)."""
    data = read_bytes(path, compressed_limit, fix)
    out = bytearray()
    pending = data
    try:
        while pending:
            stream = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing; members in turn
            chunk = pending
            while chunk:
                out += stream.decompress(chunk, limit + 1 - len(out))
                if len(out) > limit:
                    raise UntrustedFileError(
                        path, f"unpacks to more than {_size(limit)}, more than such a file "
                              "ever holds (a gzip bomb?)", fix or "is it the right file?")
                chunk = stream.unconsumed_tail
            if not stream.eof:
                raise UntrustedFileError(path, "a truncated gzip file", fix or
                                         "copy or download it again, whole")
            pending = stream.unused_data.lstrip(b"\x00")
    except zlib.error as err:
        raise UntrustedFileError(path, f"not a gzip file ({err})",
                                 fix or "is it the right file?") from None
    if not data:
        raise UntrustedFileError(path, "empty", fix or "is it the right file?")
    return bytes(out)


def parse_json(text: str | bytes, path: str | os.PathLike[str], fix: str = "") -> Any:
    """JSON from a file; any parser failure (deep nesting, a bad number) is refused."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        what = "nested too deeply" if isinstance(err, RecursionError) else excerpt(str(err), 120)
        raise UntrustedFileError(path, f"not readable JSON ({what})",
                                 fix or "is it the right file?") from None


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there: 10x faster
YAML_MAX_DEPTH = 200
"""Nesting depth of one YAML document (configs nest a few levels)."""


def _yaml_budget(text: str) -> str | None:
    """What is over budget in a YAML document, from its event stream (no document built):
    the values it would expand to, each alias counting what its anchor holds (so a
    "billion laughs" of nested aliases is counted as the billions it makes), the aliases
    and the depth. None when within the budgets."""
    expanded, aliases = 0, 0
    sizes: dict[str, int] = {}
    open_collections: list[tuple[str | None, int]] = []  # (anchor, expanded at its start)
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            expanded += sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            expanded += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            open_collections.append((event.anchor, expanded))
            expanded += 1
            if len(open_collections) > YAML_MAX_DEPTH:
                return f"nested more than {YAML_MAX_DEPTH} levels deep; no such file is"
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            anchor, start = open_collections.pop()
            if anchor:
                sizes[anchor] = expanded - start
        if aliases > YAML_ALIAS_BUDGET:
            return f"more than {YAML_ALIAS_BUDGET} aliases (*name); no such file needs that many"
        if expanded > YAML_NODE_BUDGET:
            return (f"more than {YAML_NODE_BUDGET:,} values once its aliases are expanded: an "
                    "alias bomb?")
    return None


def parse_yaml(text: str, path: str | os.PathLike[str], fix: str = "") -> Any:
    """YAML from a file as plain data (mappings, lists, text, numbers; never Python
    objects), within the budgets of values (aliases expanded), aliases and depth; anything
    else is refused."""
    over = None
    try:
        over = _yaml_budget(text)
        if over is None:
            return yaml.load(text, Loader=_SafeLoader)  # a safe loader (libyaml when there)
    except (yaml.YAMLError, RecursionError, TypeError, ValueError, OverflowError) as err:
        over = "nested too deeply" if isinstance(err, RecursionError) else excerpt(str(err), 160)
    raise UntrustedFileError(path, f"not readable YAML ({over})", fix or "is it the right file?")


def excerpt(value: Any, limit: int = 60) -> str:
    """A short ``repr``-like text of ``value`` (at most about ``limit`` characters), built
    without walking more of it than that: safe for any value read from a file."""
    out: list[str] = []
    budget = [limit]

    def put(text: str) -> bool:
        out.append(text[: max(budget[0], 0)])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(item: Any, depth: int) -> bool:
        if depth > 8:
            return put("...")
        if isinstance(item, dict):
            if not put("{"):
                return False
            for n, (key, val) in enumerate(item.items()):
                if (n and not put(", ")) or not walk(key, depth + 1) or not put(": ") or \
                        not walk(val, depth + 1):
                    return False
            return put("}")
        if isinstance(item, list | tuple):
            if not put("["):
                return False
            for n, val in enumerate(item):
                if (n and not put(", ")) or not walk(val, depth + 1):
                    return False
            return put("]")
        if isinstance(item, str | bytes):
            return put(repr(item[: max(budget[0], 0) + 1]))
        if isinstance(item, int | float | bool) or item is None:
            text = repr(item) if not isinstance(item, int) or abs(item) < 10**30 else \
                f"a {item.bit_length()}-bit number"
            return put(text)
        return put(f"<{type(item).__name__}>")

    complete = walk(value, 0)
    text = "".join(out)
    return text if complete else text + "..."
