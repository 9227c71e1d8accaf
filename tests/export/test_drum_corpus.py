"""Tests for the project-authored drum groove library and its window generator."""

from __future__ import annotations

import numpy as np
import pytest

from engine.music.encoding import DRUM_CLASSES, decode_drums, encode_drums
from export.drum_corpus import (
    DEFAULT_PATH,
    Groove,
    corpus_summary,
    generate_drum_windows,
    generate_drum_windows_with_fills,
    load_grooves,
)

BARS = 4


@pytest.fixture(scope="module")
def grooves() -> list[Groove]:
    return load_grooves()


def _bars(windows: np.ndarray) -> np.ndarray:
    return windows.reshape(windows.shape[0], -1, 16)


def test_file_parses_with_enough_grooves_and_fills(grooves: list[Groove]) -> None:
    beats = [g for g in grooves if not g.is_fill]
    fills = [g for g in grooves if g.is_fill]
    assert len(beats) >= 30
    assert len(fills) >= 8
    assert len({g.name for g in grooves}) == len(grooves)
    assert len({tuple(g.steps.tolist()) for g in grooves}) == len(grooves)
    header = DEFAULT_PATH.read_text().splitlines()[:10]
    assert any("Apache-2.0" in line for line in header)


def test_every_groove_is_one_bar_of_valid_classes(grooves: list[Groove]) -> None:
    for g in grooves:
        assert g.steps.shape == (16,), g.name
        assert g.steps.dtype == np.int64, g.name
        assert ((g.steps >= 0) & (g.steps < DRUM_CLASSES)).all(), g.name
        assert g.steps.any(), g.name


def test_known_pattern_is_encoded_as_expected(grooves: list[Groove]) -> None:
    rock = next(g for g in grooves if g.name == "rock_backbeat")
    kick, snare, hat = 1, 2, 4
    expected = [kick | hat, 0, hat, 0, snare | hat, 0, hat, 0,
                kick | hat, 0, hat, 0, snare | hat, 0, hat, 0]
    assert rock.steps.tolist() == expected


def test_summary_counts(grooves: list[Groove]) -> None:
    summary = corpus_summary()
    assert summary["grooves"] == sum(not g.is_fill for g in grooves)
    assert summary["fills"] == sum(g.is_fill for g in grooves)
    assert summary["styles"] == len({g.style for g in grooves if not g.is_fill}) >= 15
    assert summary["licence"] == "Apache-2.0"


def test_windows_shape_range_and_determinism() -> None:
    a = generate_drum_windows(64, BARS, np.random.default_rng(7))
    b = generate_drum_windows(64, BARS, np.random.default_rng(7))
    c = generate_drum_windows(64, BARS, np.random.default_rng(8))
    assert a.shape == (64, BARS * 16) and a.dtype == np.int64
    assert ((a >= 0) & (a < DRUM_CLASSES)).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("bars", [1, 2, 16])
def test_no_silent_bar(bars: int) -> None:
    windows = generate_drum_windows(200, bars, np.random.default_rng(bars))
    assert (_bars(windows).max(axis=-1) > 0).all()


def test_fills_end_some_windows(grooves: list[Groove]) -> None:
    fill_halves = {tuple(g.steps[8:].tolist()) for g in grooves if g.is_fill}
    windows, fills = generate_drum_windows_with_fills(400, BARS, np.random.default_rng(3))
    share = fills[:, -1].mean()
    assert 0.12 < share < 0.38
    assert not fills[:, :-1].any()  # inner phrase fills only for windows of 8+ bars
    last = _bars(windows)[:, -1]
    assert all(tuple(bar[8:].tolist()) in fill_halves for bar in last[fills[:, -1]])
    always, _ = generate_drum_windows_with_fills(20, 2, np.random.default_rng(3), fill_prob=1.0)
    assert all(tuple(bar[8:].tolist()) in fill_halves for bar in _bars(always)[:, -1])
    _, never = generate_drum_windows_with_fills(50, BARS, np.random.default_rng(3), fill_prob=0.0)
    assert not never.any()
    _, single = generate_drum_windows_with_fills(50, 1, np.random.default_rng(3), fill_prob=1.0)
    assert not single.any()


def test_windows_mostly_stay_in_one_groove(grooves: list[Groove]) -> None:
    library = np.stack([g.steps for g in grooves if not g.is_fill])
    windows, fills = generate_drum_windows_with_fills(200, BARS, np.random.default_rng(11))
    shares = []
    for bars, is_fill in zip(_bars(windows), fills, strict=True):
        played = bars[~is_fill]
        nearest = (played[:, None, :] != library[None]).sum(axis=-1).argmin(axis=-1)
        shares.append(np.bincount(nearest).max() / len(nearest))
    assert np.mean(shares) > 0.75


def test_round_trip_through_notes() -> None:
    windows = generate_drum_windows(50, BARS, np.random.default_rng(1))
    for window in windows:
        notes = decode_drums(window)
        np.testing.assert_array_equal(encode_drums(notes, len(window)), window)


def _write(tmp_path, body: str):
    path = tmp_path / "grooves.toml"
    path.write_text(body)
    return path


def _table(name: str, kind: str = "groove", **rows: str) -> str:
    lines = [f"[[{kind}]]", f'name = "{name}"', 'style = "rock"']
    lines += [f'{drum} = "{row}"' for drum, row in rows.items()]
    return "\n".join(lines) + "\n"


def test_unknown_drum_names_the_groove(tmp_path) -> None:
    path = _write(tmp_path, _table("bad_one", kick="x...x...x...x...", cowbell="x...x..."))
    with pytest.raises(ValueError, match="bad_one.*cowbell"):
        load_grooves(path)


def test_wrong_length_names_the_groove_and_key(tmp_path) -> None:
    body = _table("ok", kick="x...x...x...x...")
    body += _table("too_short", "fill", snare="x...x...x...x..")
    path = _write(tmp_path, body)
    with pytest.raises(ValueError, match="too_short.*snare"):
        load_grooves(path)


def test_bad_character_and_empty_groove(tmp_path) -> None:
    path = _write(tmp_path, _table("weird", kick="x...o...x...x..."))
    with pytest.raises(ValueError, match="weird.*kick"):
        load_grooves(path)
    path = _write(tmp_path, _table("silent", kick="................"))
    with pytest.raises(ValueError, match="silent"):
        load_grooves(path)


def test_custom_grooves_are_used(tmp_path) -> None:
    path = _write(tmp_path, _table("only", kick="x..............."))
    custom = load_grooves(path)
    windows = generate_drum_windows(30, 2, np.random.default_rng(0), grooves=custom)
    assert (_bars(windows).max(axis=-1) > 0).all()
    assert generate_drum_windows(0, 2, np.random.default_rng(0)).shape == (0, 32)
    with pytest.raises(ValueError):
        generate_drum_windows(1, 0, np.random.default_rng(0))
