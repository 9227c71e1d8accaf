#!/usr/bin/env bash
# Run the engine's models on an NVIDIA GPU: replace the CPU ONNX Runtime with onnxruntime-gpu.
# The two packages install the same `onnxruntime` module, so they must not sit side by side
# (`encore doctor` warns when they do). pip cannot express "instead of", hence this script.
# Needs CUDA and cuDNN versions that the onnxruntime-gpu release supports.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -e '.[gpu]'                # the package and onnxruntime-gpu
"${PIP[@]}" uninstall -y onnxruntime            # the CPU build (same module folder) ...
"${PIP[@]}" install --force-reinstall --no-deps 'onnxruntime-gpu>=1.18'  # ... so restore it
"$VENV/bin/python" -c 'import onnxruntime as ort; print("onnxruntime", ort.__version__, ort.get_available_providers())'
echo "check with: $VENV/bin/encore doctor (each model line names the provider it got)"
