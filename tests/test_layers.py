"""The layers hold: generation never loads the live engine.

Every module of ``engine.music``, ``engine.lyrics``, ``engine.voice`` and ``engine.song`` is
imported in a fresh interpreter (so nothing another test imported counts), and the modules
that only the live engine may load are looked for afterwards: ``engine.live`` and the I/O
libraries it drives (sounddevice, rtmidi, JACK, the OSC server).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GENERATION = ("engine.music", "engine.lyrics", "engine.voice", "engine.song")
LIVE_ONLY = ("engine.live", "sounddevice", "rtmidi", "jack", "pythonosc", "socketserver")

_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, sys.argv[1] + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("package", GENERATION)
def test_generation_never_loads_the_live_engine(package: str) -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE, package], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert len(loaded) > 50  # the probe really imported the package's modules
    leaked = [name for name in loaded
              if any(name == bad or name.startswith(bad + ".") for bad in LIVE_ONLY)]
    assert leaked == [], f"importing {package} loaded {leaked}"
