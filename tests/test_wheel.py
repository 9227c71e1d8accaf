"""The wheel works where it is installed: it carries the runtime, the shipped models and
patches, and no top-level ``export`` package.

The wheel is built from a copy of the checkout's tracked files (so the build writes nothing
into the checkout), installed with ``--no-deps`` into a fresh virtualenv outside the
checkout whose dependencies come from the project's own ``.venv`` (a ``.pth`` line adds its
site-packages to ``sys.path`` without running its editable-install hook, so ``engine`` can
only come from the wheel), and then ``encore render`` and ``encore doctor`` run from an
empty folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files are the project's")
    done = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [f for f in done.stdout.decode().split("\0") if f]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in _tracked_files():
        if name.split("/")[0] in ("engine", "models_onnx", "patches") or "/" not in name:
            if (REPO / name).is_file():
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(source), "-w", str(out)],
                   check=True, capture_output=True, timeout=600)
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_carries_the_runtime_models_and_patches_and_no_export(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"engine"}
    modules = {n for n in _tracked_files() if n.startswith("engine/")}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    for folder in ("models_onnx", "patches"):
        shipped = {f"engine/_shipped/{n}" for n in _tracked_files()
                   if n.startswith(folder + "/")}
        assert shipped <= names, f"missing from the wheel: {sorted(shipped - names)[:5]}"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    purelib = Path(subprocess.run(
        [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "project_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # pip itself comes from the project's .venv too, run by the new venv's interpreter, so
    # the console script it writes starts that interpreter; --ignore-installed: pip also
    # sees the project's own (editable) install through that path and would otherwise
    # call the wheel "already satisfied" and install nothing
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps",
                    "--ignore-installed", "--no-compile", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return venv, env


def test_an_installed_wheel_renders_and_checks_from_an_empty_folder(installed, tmp_path) -> None:
    venv, env = installed
    encore = venv / "bin" / "encore"
    where = subprocess.run([venv / "bin" / "python", "-c", "import engine; print(engine.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(venv)
    render = subprocess.run([encore, "render", "--bars", "4", "-o", "out"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert render.returncode == 0, render.stderr
    for name in ("song.wav", "song.mid", "song.jsonl"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    doctor = subprocess.run([encore, "doctor"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert "Traceback" not in doctor.stdout + doctor.stderr
    assert "models_onnx" not in doctor.stdout or "_shipped" in doctor.stdout
    train = subprocess.run([encore, "train", "musicvae", "--out", "x"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert train.returncode == 2
    assert "source checkout" in train.stderr
