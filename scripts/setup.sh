#!/usr/bin/env bash
# Set up Encore on Debian/Ubuntu: system packages, .venv, and the package with its extras.
# Idempotent and quick when already done: apt runs only when a package is missing, pip
# only when pyproject.toml is newer than the stamp file .venv/.encore-installed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libfluidsynth3 fluidsynth timgm6mb-soundfont libportaudio2 jackd2 sox espeak-ng g++ gcc
    flite  # the fallback singer's teacher (CMU slt voice, BSD-style licence): engine/voice/teachers.py
    freedoom  # band-music MIDI (BSD-3-Clause) read by export/freedoom_corpus.py
    chromium chromium-driver)  # the stage page's browser tests
VENV=.venv
STAMP="$VENV/.encore-installed"

say() { printf 'setup: %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null; then
        say "missing system packages (${missing[*]}) and no apt-get: install them by hand" >&2
        exit 1
    fi
    if [[ $(id -u) -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null; then
        SUDO=(sudo)
    else
        say "need root or sudo to install: ${missing[*]}" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- virtualenv ------------------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    PYTHON=
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
    if [[ -z $PYTHON ]]; then
        say "need Python >= 3.11 (python3 is $(python3 --version 2>&1 || echo missing))" >&2
        exit 1
    fi
    say "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV" || {
        say "python -m venv failed: on Debian install python3-venv" >&2
        exit 1
    }
fi

# --- the package (torch is pinned ==2.13.0 in pyproject.toml: CPU wheel, never unpinned) --
if [[ -f $STAMP && $STAMP -nt pyproject.toml ]]; then
    say "up to date"
else
    say "installing encore-engine[export,test] into $VENV"
    "$VENV/bin/python" -m pip install -q -e '.[export,test]'
    touch "$STAMP"
fi

# --- the native audio core (C, links only libm; rebuilt when its source is newer) --------
# Without it the live audio falls back to the Python callback, and `encore doctor` says so.
if ! "$VENV/bin/python" -m engine.live.audio_core; then
    say "the native audio core did not build: the live audio will use the Python callback" >&2
fi
