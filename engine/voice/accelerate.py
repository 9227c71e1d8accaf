"""A faster copy of a voicebank's vocoder: 8-bit weights and activations, made once, cached.

    path = int8_vocoder(bank.vocoder.model, calibration_mels)   # None: could not make one

The NSF-HiFiGAN vocoder costs more than the acoustic model at the few diffusion steps a
live show can afford (on random weights of the published shapes, one CPU thread: about 0.8
CPU-seconds per second of audio, the acoustic model about 0.11 per step). ONNX Runtime's
static 8-bit quantization of its convolutions (per-channel int8 weights, uint8
activations calibrated on mels the bank's own acoustic model sang: ``QLinearConv``, which
runs on the CPU's integer dot-product instructions) makes it about 2.7 times cheaper at
a waveform difference near -39 dB (``benchmarks/bench_voicebank.py --levers`` measures
both on the machine at hand).

The quantized model is written into a cache folder, never into the user's bank:
``$ENCORE_CACHE`` or ``$XDG_CACHE_HOME/encore`` or ``~/.cache/encore``, under
``vocoders/<digest>.int8.onnx`` where the digest covers the vocoder file (its size, time and
first and last MiB) and this module's version. A file that is there is used as it is; it
is written to a temporary name and renamed, so a crash never leaves a half file.

Making one needs the ``onnx`` package (ONNX Runtime's quantization tool reads graphs with
it); without it, or when quantization fails, the caller keeps the float vocoder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CACHE_ENV = "ENCORE_CACHE"
VERSION = "int8-qlinearconv-1"
"""Changes when the way the copy is made changes (old copies are then not used)."""


def cache_dir() -> Path:
    """Where derived models are kept (outside every voicebank)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "encore"


def model_digest(path: Path) -> str:
    """A digest of ``path`` good enough to notice a replaced model: its size, time, and its
    first and last MiB, with :data:`VERSION`."""
    stat = path.stat()
    digest = hashlib.sha256(f"{VERSION}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        if stat.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            digest.update(f.read(1 << 20))
    return digest.hexdigest()[:20]


class _Mels:
    """ONNX Runtime's calibration reader over (mel, f0) pairs."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        self._items = iter([{"mel": mel, "f0": f0} for mel, f0 in pairs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def int8_vocoder(model: Path, calibration: Sequence[tuple[np.ndarray, np.ndarray]], *,
                 folder: Path | None = None) -> Path | None:
    """The cached int8 copy of the vocoder ``model`` (made now from ``calibration``, pairs of
    mel [1, F, bins] and f0 [1, F], when it is not there yet); None when it cannot be made."""
    folder = folder or cache_dir() / "vocoders"
    try:
        target = folder / f"{model_digest(model)}.int8.onnx"
    except OSError as err:
        log.warning("vocoder %s: cannot read it to make a faster copy (%s)", model, err)
        return None
    if target.is_file():
        return target
    if not calibration:
        return None
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as err:  # onnx is not installed
        log.warning("vocoder: no int8 copy (%s); install the onnx package for a vocoder about "
                    "2.7x faster", err)
        return None

    class Reader(_Mels, CalibrationDataReader):
        pass

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            part = Path(scratch) / "vocoder.int8.onnx"
            quantize_static(str(model), str(part), Reader(calibration),
                            quant_format=QuantFormat.QOperator, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            op_types_to_quantize=["Conv"])
            os.replace(part, target)
    except Exception as err:  # noqa: BLE001 - any failure keeps the float vocoder
        log.warning("vocoder %s: no int8 copy (%s: %s); the float vocoder sings", model,
                    type(err).__name__, err)
        return None
    log.info("vocoder %s: int8 copy in %s", model, target)
    return target
