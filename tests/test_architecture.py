"""The import graph is the one README's "Architecture" section draws.

Every module under ``engine/`` is parsed (``ast``, nothing is executed) and each of its
imports, at the top or inside a function, is checked against the layers the README
states, lowest first:

- the foundation (the top-level modules ``engine/*.py`` but ``cli.py`` and ``doctor.py``:
  the patch and its settings, the one clock, model look-up, untrusted input, output files)
  imports no engine package;
- ``music`` and ``lyrics`` import only the foundation; ``audio`` adds ``music``; ``voice``
  adds ``lyrics``;
- ``song`` (conductor, render, replay, event log, stamping, plots) adds ``music``,
  ``lyrics``, ``voice`` and ``audio``, never ``live``;
- ``live`` may use all of those; ``doctor`` adds ``live``; only ``cli`` imports ``doctor``,
  and nothing imports ``cli``;
- no engine module imports torch or the ``export`` trainers, and the live engine's I/O
  libraries (sounddevice, rtmidi, Link, the web and DNS-SD servers, the terminal
  dashboard) are imported only in ``live``, ``doctor`` and ``cli``.

``tests/test_layers.py`` checks the same from the other side, by importing: loading the
generation packages loads no live module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
SECTION = "README.md, section \"Architecture\""

FOUNDATION = "foundation"
# layer -> the engine layers it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    FOUNDATION: set(),
    "music": {FOUNDATION},
    "lyrics": {FOUNDATION},
    "audio": {FOUNDATION, "music"},
    "voice": {FOUNDATION, "lyrics"},
    "song": {FOUNDATION, "music", "lyrics", "voice", "audio"},
    "live": {FOUNDATION, "music", "lyrics", "voice", "audio", "song"},
    "doctor": {FOUNDATION, "music", "lyrics", "voice", "audio", "song", "live"},
    "cli": {FOUNDATION, "music", "lyrics", "voice", "audio", "song", "live", "doctor"},
}
NEVER_IN_ENGINE = ("torch", "export")
LIVE_IO = ("sounddevice", "rtmidi", "jack", "aalink", "aiohttp", "zeroconf", "ifaddr", "rich",
           "pythonosc")
MAY_USE_LIVE_IO = {"live", "doctor", "cli"}


def layer_of(module: str) -> str:
    """``engine.song.render`` -> ``song``; ``engine.patch`` -> the foundation."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else FOUNDATION


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file (the module ``module``,
    by default the one at ``path``), lazy ones included."""
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the file's package
                base = package[:len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "engine":  # from engine import live: the package named
                out += [(node.lineno, f"engine.{alias.name}") for alias in node.names]
            else:
                out.append((node.lineno, name))
    return out


def engine_files() -> list[Path]:
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) > 60, "the engine's modules were not found"
    return files


def test_every_layer_is_named_in_the_readme() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Architecture"):]
    section = section[:section.index("\n## ", 1)]
    for layer in ALLOWED:
        if layer != FOUNDATION:
            assert f"`{layer}" in section, f"{SECTION} does not name the {layer!r} layer"
    for path in engine_files():
        name = path.stem if path.stem != "__init__" else path.parent.name
        if name in ("engine", "_shipped", "native"):
            continue
        assert f"`{name}" in section, \
            f"{path.relative_to(ROOT)} is not described in {SECTION}"


def test_engine_imports_follow_the_layers() -> None:
    wrong = []
    for path in engine_files():
        mine = layer_of(module_name(path))
        for line, name in imports(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            top = name.split(".")[0]
            if top in NEVER_IN_ENGINE:
                wrong.append(f"{where}: the runtime never imports {top} (training only)")
            elif top in LIVE_IO and mine not in MAY_USE_LIVE_IO:
                wrong.append(f"{where}: {top} is the live engine's; {mine} may not load it")
            elif top == "engine" and name != "engine":
                theirs = layer_of(name)
                if theirs != mine and theirs not in ALLOWED[mine]:
                    wrong.append(f"{where}: the {mine} layer may import only "
                                 f"{sorted(ALLOWED[mine]) or 'nothing of the engine'}")
    assert not wrong, f"imports against {SECTION}:\n" + "\n".join(wrong)


def test_the_checker_catches_a_wrong_import(tmp_path: Path) -> None:
    """The checks above can fail: a song module importing the live engine is caught."""
    bad = ENGINE / "song" / "render.py"
    source = bad.read_text(encoding="utf-8") + "\nfrom engine.live.show import Show\n" \
        "from engine import live\n"
    copy = tmp_path / "render.py"
    copy.write_text(source, encoding="utf-8")
    found = [name for _, name in imports(copy, "engine.song.render")]
    assert "engine.live.show" in found and "engine.live" in found
    assert layer_of("engine.live") == "live"
    assert layer_of("engine.live.show") not in ALLOWED[layer_of("engine.song.render")]
    assert layer_of("engine.clock") == FOUNDATION and layer_of("engine.doctor") == "doctor"
