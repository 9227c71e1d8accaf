"""Pictures of a set (engine.song.plot, ``encore plot``, ``encore render --plot``): the PCA
projection on points with known answers, the lyric placement, then real PNGs of a short
render's log."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.song.event_log import EventLog
from engine.song.plot import _place_lyrics, pca_2d, plot_log
from engine.song.render import RenderResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- PCA ------------------------------------------------------------------------------
def test_points_on_a_line_project_onto_a_line_with_their_distances():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    direction /= np.linalg.norm(direction)
    t = rng.uniform(-5, 5, size=30)
    points = 3.0 + t[:, None] * direction  # a line through (3, 3, ..., 3)
    coords, explained = pca_2d(points)
    assert np.allclose(coords[:, 1], 0, atol=1e-9)
    assert explained == pytest.approx([1.0, 0.0], abs=1e-12)
    # the first coordinate is the position along the line, up to sign, centred
    assert np.allclose(np.abs(coords[:, 0]), np.abs(t - t.mean()))
    assert np.allclose(np.abs(np.subtract.outer(coords[:, 0], coords[:, 0])),
                       np.abs(np.subtract.outer(t, t)))


def test_components_come_in_order_of_variance():
    rng = np.random.default_rng(1)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    scales = np.array([0.1, 4.0, 0.2, 1.5, 0.05, 0.3])  # largest on axis 1, then axis 3
    points = (rng.normal(size=(4000, 6)) * scales) @ rotation.T + 7.0
    coords, explained = pca_2d(points)
    variance = (scales ** 2) / (scales ** 2).sum()
    assert explained == pytest.approx([variance[1], variance[3]], rel=0.1)
    assert explained[0] > explained[1] > 0
    assert coords[:, 0].var() > coords[:, 1].var()
    assert abs(np.corrcoef(coords.T)[0, 1]) < 1e-9  # uncorrelated components
    assert np.allclose(coords.mean(axis=0), 0, atol=1e-9)
    # the first component is the direction the data was stretched along
    direction = rotation[:, 1]
    assert abs(np.corrcoef(coords[:, 0], (points - points.mean(0)) @ direction)[0, 1]) > 0.99


def test_projection_does_not_depend_on_translation_or_row_order():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(20, 5)) * [3, 1, 1, 0.5, 0.1]
    coords, _ = pca_2d(points)
    moved, _ = pca_2d(points + 100.0)
    order = rng.permutation(20)
    shuffled, _ = pca_2d(points[order])
    assert np.allclose(coords, moved)
    assert np.allclose(coords[order], shuffled)  # signs are fixed, not left to the SVD


def test_degenerate_inputs():
    coords, explained = pca_2d(np.ones((5, 3)))
    assert not coords.any() and not explained.any()
    coords, _ = pca_2d(np.array([[1.0, 2.0, 3.0]]))
    assert coords.shape == (1, 2) and not coords.any()
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        pca_2d(np.zeros(4))


# ---- lyric placement ------------------------------------------------------------------
def lyric(bar: int, text: str, bars: float = 2.0) -> dict:
    beat = bar * 4
    return {"type": "lyric", "bar": bar, "text": text,
            "syllables": [{"notes": [[60, beat, 1.0]]},
                          {"notes": [[62, beat + 4 * bars - 1.0, 1.0]]}]}


def test_lyric_lines_are_wrapped_to_their_bars_and_never_overlap():
    lines = [lyric(b, f"line {b} of the song that goes on and on") for b in range(0, 40, 2)]
    boxes, left_out = _place_lyrics(lines, in_per_bar=0.35)
    assert left_out == 0 and len(boxes) == len(lines)
    for (start, _, row, wrapped), line in zip(boxes, lines, strict=True):
        assert start == line["bar"] and 0 <= row < 3
        assert " ".join(wrapped) == line["text"]
        assert max(len(w) for w in wrapped) < len(line["text"])  # it was wrapped
    for row in range(3):
        spans = sorted((s, e) for s, e, r, _ in boxes if r == row)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_lyric_lines_are_thinned_where_bars_are_too_narrow():
    lines = [lyric(b, "words", bars=0.5) for b in range(200)]
    boxes, left_out = _place_lyrics(lines, in_per_bar=0.02)
    assert left_out > 0 and left_out + len(boxes) == 200
    for row in range(3):
        spans = sorted((s, e) for s, e, r, _ in boxes if r == row)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


# ---- PNGs of a real log ---------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def not_blank(path: Path) -> bool:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))[..., :3]
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    return len(colours) > 20


@pytest.fixture
def log_copy(rendered: RenderResult, tmp_path: Path) -> Path:
    """The session render's log, copied so that plots land in this test's folder."""
    path = tmp_path / "set" / "song.jsonl"
    path.parent.mkdir()
    shutil.copy(rendered.log, path)
    return path


def test_plot_log_writes_two_sensible_pngs_next_to_the_log(log_copy: Path):
    plots = plot_log(log_copy)
    assert plots.pianoroll == log_copy.parent / "pianoroll.png"
    assert plots.latent == log_copy.parent / "latent.png"
    width, height = png_size(plots.pianoroll)
    assert 800 <= width <= 2000 and 400 <= height <= 1500  # 8 bars: the minimum width
    width, height = png_size(plots.latent)
    assert 500 <= width <= 1500 and 400 <= height <= 1500
    assert not_blank(plots.pianoroll) and not_blank(plots.latent)


def test_a_longer_set_gives_a_wider_roll_up_to_a_cap(log_copy: Path, tmp_path: Path):
    lines = log_copy.read_text().splitlines()
    header, bars = lines[0], [ln for ln in lines[1:] if '"type":"bar"' in ln]
    assert len(bars) == 8

    def long_log(n: int) -> Path:
        out = tmp_path / f"long{n}" / "song.jsonl"
        out.parent.mkdir()
        records = []
        for k in range(n):
            record = json.loads(bars[k % 8])
            record["bar"] = k
            records.append(json.dumps(record))
        out.write_text("\n".join([header, *records]) + "\n")
        return out

    w8, _ = png_size(plot_log(log_copy).pianoroll)
    w64, h64 = png_size(plot_log(long_log(64)).pianoroll)
    w400, _ = png_size(plot_log(long_log(400)).pianoroll)
    assert w8 < w64 < w400
    assert w64 > 2.5 * h64  # a wide strip, not a poster
    assert w64 == pytest.approx((64 * 0.35 + 1.6) * 110, abs=2)
    assert w400 == pytest.approx(48 * 110, abs=2)  # capped


def test_a_log_without_bars_is_refused_clearly(tmp_path: Path, capsys):
    log = tmp_path / "song.jsonl"
    with EventLog(log) as events:
        events.header(bpm=120.0, seed=1, model="tiny_trio")
    with pytest.raises(ValueError, match="no bar records.*nothing to plot"):
        plot_log(log)
    assert not (tmp_path / "pianoroll.png").exists()
    with pytest.raises(SystemExit) as info:
        main(["plot", str(log)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("encore: error:") and "no bar records" in err


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"type": "bar", "bar": 0}\n')
    with pytest.raises(ValueError, match="no header"):
        plot_log(path)


def test_encore_plot_writes_to_the_folder_asked(log_copy: Path, tmp_path: Path, capsys):
    out = tmp_path / "pictures"
    assert main(["plot", str(log_copy), "-o", str(out)]) == 0
    assert png_size(out / "pianoroll.png")[0] > 0 and png_size(out / "latent.png")[0] > 0
    assert str(out / "pianoroll.png") in capsys.readouterr().out


def test_render_with_plot_writes_the_pngs_next_to_the_song(short_patch_file: Path,
                                                          tiny_model_dir: Path,
                                                          tmp_path: Path):
    assert main(["render", "--patch", str(short_patch_file), "--bars", "4", "--no-audio",
                 "--model-dir", str(tiny_model_dir), "-o", str(tmp_path), "--plot"]) == 0
    for name in ("song.mid", "song.jsonl", "pianoroll.png", "latent.png"):
        assert (tmp_path / name).is_file(), name
    assert png_size(tmp_path / "pianoroll.png")[0] >= 8 * 110  # the minimum width
