"""engine/lyrics/huge_pages.py: which regions are taken, and advising never changes memory."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.lyrics import huge_pages as hp

MAPS = """\
55d0c0000000-55d0c4000000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0004000000 rw-p 00000000 00:00 0
7f1000000000-7f1000800000 rw-p 00000000 00:00 0
7f2000000000-7f2004000000 r--p 00000000 08:01 1234                       /usr/lib/x.so
7f3000000000-7f3004000000 rw-p 00000000 08:01 1235                       /tmp/weights.bin
7f4000000000-7f4004000000 r-xp 00000000 00:00 0
7ffd00000000-7ffd04000000 rw-p 00000000 00:00 0                          [stack]
"""


def test_only_big_writable_anonymous_regions_and_the_heap_are_taken(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(MAPS)
    assert hp.anonymous_regions(maps) == {(0x55D0C0000000, 0x55D0C4000000),
                                          (0x7F0000000000, 0x7F0004000000)}
    assert hp.anonymous_regions(tmp_path / "missing") == set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's madvise")
def test_advising_a_region_keeps_what_it_holds() -> None:
    size = 8 * hp.HUGE_PAGE
    region = mmap.mmap(-1, size)
    data = np.frombuffer(region, np.uint8)
    data[:] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    expected = data.copy()
    start = data.ctypes.data
    advised = hp.huge_pages({(start, start + size)})
    # whole 2 MiB pages inside the region, or 0 where transparent huge pages are off
    assert advised in {0, size, size - hp.HUGE_PAGE}
    assert np.array_equal(data, expected)
    assert hp.huge_pages(set()) == 0
    del data
    region.close()


def test_nothing_is_done_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hp.sys, "platform", "darwin")
    assert hp.huge_pages({(0, 64 << 20)}) == 0
