"""Fixtures of the song tests: a short test patch (file and Patch) and one render of it.

The patch plays the tiny random-weight ``tiny_trio`` (see ``tests/conftest.py``) at 120
BPM (a bar is 2 s) in D major, a key whose register edges (C4, E1) are not in the scale,
with a 2-bar verse and a 2-bar chorus looping, so a few bars already repeat the chorus.
Its words come from the shipped Markov lyricist (the GPT-2 one has tests of its own).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.patch import Patch, load_patch
from engine.song.render import RenderResult, render_song

SHORT_PATCH_TOML = """\
[song]
title = "Test"
tempo = 120.0
key = "D"
mode = "major"
seed = 4
model = "tiny_trio"

[form]
sections = ["verse", "chorus"]
loop_from = 0

[form.lengths]
verse = 2
chorus = 2

[parts.melody]
program = 4
channel = 1

[parts.bass]
program = 38
channel = 2

[parts.drums]
program = 0
channel = 10

[parts.chords]
program = 48
channel = 5

[lyrics]
source = "markov"
theme = "light"
"""

RENDER_BARS = 8
RENDER_SEED = 11


@pytest.fixture(scope="session")
def short_patch_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("patch") / "short.toml"
    path.write_text(SHORT_PATCH_TOML, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def short_patch(short_patch_file: Path) -> Patch:
    return load_patch(short_patch_file, validate_files=True)


@pytest.fixture(scope="session")
def rendered(short_patch: Patch, tiny_model_dir: Path, tmp_path_factory) -> RenderResult:
    """``RENDER_BARS`` bars of the short patch with seed ``RENDER_SEED``, audio included."""
    out = tmp_path_factory.mktemp("render")
    return render_song(short_patch, out, bars=RENDER_BARS, seed=RENDER_SEED,
                       model_dir=tiny_model_dir)


@pytest.fixture(scope="session")
def render_args() -> dict[str, int]:
    """The bars and seed ``rendered`` was made with."""
    return {"bars": RENDER_BARS, "seed": RENDER_SEED}
