"""A path that is no regular file (a FIFO, a device, a folder) is refused before it is
opened, by every reader, and through ``encore`` with exit status 2.

Opening a FIFO that no one writes to blocks for ever, and ``/dev/zero`` never ends: each
reader runs in a child that is killed after a minute, so a hang fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# (reader, the code that reads PATH, the import it needs)
READERS = {
    "patch": ("from engine.patch import load_patch", "load_patch(PATH)"),
    "midi": ("from engine.music.midi_io import read_midi", "read_midi(PATH)"),
    "markov": ("from engine.lyrics.markov import MarkovLyricist", "MarkovLyricist.load(PATH)"),
    "event_log_replay": ("from engine.song.replay import read_set", "read_set(PATH)"),
    "event_log_stats": ("from engine.song.stats import song_stats", "song_stats(PATH)"),
    "event_log_plot": ("from engine.song.event_log import read_bars", "read_bars(PATH)"),
    "gpt2_config": ("from engine.lyrics.gpt2_runner import read_config\n"
                    "from pathlib import Path",
                    "read_config(Path(PATH).parent)"),
    "voicebank_yaml": ("from engine.voice.voicebank import load_voicebank\n"
                       "from pathlib import Path", "load_voicebank(Path(PATH).parent)"),
    "checkpoint": ("from export.musicvae import load_checkpoint", "load_checkpoint(PATH)"),
    "hf_config": ("from export.gpt2_onnx import check_hf_folder\nfrom pathlib import Path",
                  "check_hf_folder(Path(PATH).parent)"),
}
NAMES = {"gpt2_config": "encore_gpt2.json", "voicebank_yaml": "dsconfig.yaml",
         "hf_config": "config.json"}
NEEDS_TORCH = {"checkpoint", "hf_config"}


def _special(kind: str, folder: Path, name: str) -> Path:
    path = folder / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        if not Path("/dev/zero").exists():
            pytest.skip("no /dev/zero here")
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_special_file_is_refused_before_it_is_opened(tmp_path: Path, bounded, reader: str,
                                                       kind: str) -> None:
    if reader in NEEDS_TORCH:
        pytest.importorskip("torch")
    imports, call = READERS[reader]
    path = _special(kind, tmp_path, NAMES.get(reader, f"input.{reader}"))
    outcome = bounded.run(imports, f"PATH = {str(path)!r}\n{call}")
    assert outcome.verdict == "REFUSED", outcome.output[-2000:]
    assert str(path) in outcome.message or str(path.parent) in outcome.message, outcome.message


@pytest.mark.parametrize("argv", [["stats"], ["plot"], ["replay", "--no-audio"]])
def test_a_fifo_log_is_refused_by_encore_with_status_2(tmp_path: Path, argv: list[str]) -> None:
    import subprocess
    import sys

    fifo = tmp_path / "song.jsonl"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "engine.cli", *argv, str(fifo)],
                          capture_output=True, text=True, timeout=60,
                          env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"encore: error: {fifo}: not a file (it is a FIFO)"), \
        done.stderr
    assert "Traceback" not in done.stderr
