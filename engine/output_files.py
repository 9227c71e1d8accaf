"""Writing what a command makes without ever destroying what is already there.

Every command that writes files a user keeps (``render -o``, ``live --record``, ``replay
-o``, ``plot``, ``layout -o``, ``convert``, ``export``, ``train --out``) goes through
this module:

- :func:`claim` decides where the files go. When none of them exists in the folder, there;
  when the folder was the command's default (``out/``, ``replay/``, ``sets/...``), the first
  free ``<folder>_2``, ``<folder>_3``, ... (said on stderr); when the user named the folder
  and a file is in the way, the command is refused with a message naming it: a set, a model
  or any output is never overwritten.
- :func:`staged` writes the files into a hidden folder inside the target and moves each
  into place only when the whole command succeeded; a command that fails leaves the
  target as it found it (the hidden folder is removed). A name that appears in the target
  meanwhile is not replaced either (the move is a hard link, which never replaces).

A live recording is not staged: its files must be valid up to the last bar if the
machine dies mid-set, so they are written in place, into a folder :func:`claim` checked.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputExistsError", "claim", "free_names", "staged"]

NEVER = ("Encore never overwrites a set, a model or an output: give another folder, or "
         "move the old files away first")


class OutputExistsError(FileExistsError):
    """A file the command would write is already there; nothing was written."""

    def __init__(self, path: Path, fix: str = NEVER) -> None:
        self.path = path
        super().__init__(f"{path}: already exists ({fix})")


def _in_the_way(folder: Path, names: Iterable[str]) -> list[Path]:
    return [folder / name for name in names if os.path.lexists(folder / name)]


def claim(folder: str | os.PathLike[str], names: Iterable[str], *, named: bool,
          fix: str = NEVER) -> Path:
    """The folder to write ``names`` into: ``folder`` when none of them is there; else,
    when ``named`` (the user gave this folder), refuse with :class:`OutputExistsError`;
    else the first ``<folder>_N`` (N = 2, 3, ...) without them, said on stderr."""
    folder, names = Path(folder), list(names)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, not a folder (give a folder for the "
                                 "output)")
    taken = _in_the_way(folder, names)
    if not taken:
        return folder
    if named:
        raise OutputExistsError(taken[0], fix)
    n = 2
    while _in_the_way(candidate := folder.with_name(f"{folder.name}_{n}"), names) or \
            candidate.is_file():
        n += 1
    print(f"{taken[0]} is from an earlier run; writing to {candidate}/ instead (Encore never "
          "overwrites an output)", file=sys.stderr)
    return candidate


def free_names(folder: Path, names: list[str]) -> dict[str, str]:
    """``names`` as they are when none is in ``folder``, else each with the first free
    ``_N`` before its suffix (the same N for all): ``pianoroll_2.png``, ``latent_2.png``."""
    if not _in_the_way(folder, names):
        return {name: name for name in names}
    n = 2
    while True:
        renamed = {name: f"{Path(name).stem}_{n}{Path(name).suffix}" for name in names}
        if not _in_the_way(folder, renamed.values()):
            return renamed
        n += 1


def _move_new(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, never replacing ``target`` (FileExistsError)."""
    try:
        os.link(source, target)  # atomic, and refuses an existing target
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (a FAT USB stick)
        if os.path.lexists(target):
            raise FileExistsError(target) from None
        os.rename(source, target)
    else:
        source.unlink()


@contextmanager
def staged(folder: str | os.PathLike[str], names: Iterable[str],
           fix: str = NEVER) -> Iterator[Path]:
    """Yield a private folder to write ``names`` into; when the block ends without an
    error, each of them that was written is moved into ``folder`` (refused, before
    anything is written, when one is there already). On an error the private folder is
    removed and ``folder`` is left as it was (removed again when this created it empty)."""
    folder, names = Path(folder), list(names)
    taken = _in_the_way(folder, names)
    if taken:
        raise OutputExistsError(taken[0], fix)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".encore-partial-", dir=folder))
    try:
        yield stage
        moved: list[Path] = []
        try:
            for name in names:
                source = stage / name
                if source.is_file():
                    _move_new(source, folder / name)
                    moved.append(folder / name)
        except FileExistsError:
            for path in moved:  # all or nothing
                path.unlink()
            raise OutputExistsError(folder / name, fix) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            try:
                folder.rmdir()  # only when still empty: the command failed
            except OSError:
                pass
