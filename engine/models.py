"""Where models are found and how an ONNX Runtime session is opened: one owner for both.

    for folder in model_dirs(args.model_dir): ...       # --model-dir, $ENCORE_MODELS, shipped
    session = open_session(path, threads=1)             # CUDA when present, else CPU

Every runner (MusicVAE, GPT-2 lyrics, DiffSinger voicebanks) looks for models through
:func:`model_dirs` and opens its graphs through :func:`open_session`, so a folder list in
``$ENCORE_MODELS`` (``a:b``, joined by ``os.pathsep``) and the execution-provider choice mean
the same for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import onnxruntime as ort

from engine.shipped import shipped_folder
from engine.untrusted import UntrustedFileError, check_file

__all__ = ["MAX_MODEL_BYTES", "MODELS_ENV", "SHIPPED_MODELS", "check_model_file",
           "choose_providers", "model_dirs", "open_session", "session_options"]

StrPath = str | PathLike[str]

MODELS_ENV = "ENCORE_MODELS"
"""Environment variable: a folder (or several, joined by ``os.pathsep``) of models."""
SHIPPED_MODELS = shipped_folder("models_onnx")
"""The models that come with Encore."""
MAX_MODEL_BYTES = 2**31
"""The largest ONNX file opened: protobuf's own limit (2 GiB; weights past it live in
external data files). The graphs Encore ships are a few MB, a voicebank's up to a few
hundred."""


def model_dirs(model_dir: StrPath | None = None) -> list[Path]:
    """Where models are looked for, in order: ``model_dir``, each folder of $ENCORE_MODELS,
    then the shipped ones."""
    dirs = [] if not model_dir else [Path(model_dir)]
    dirs += [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    dirs.append(SHIPPED_MODELS)
    return dirs


def choose_providers(providers: Sequence[str] | None = None) -> list[str]:
    """The providers to ask for: ``providers`` as given, else CUDA when available, else CPU."""
    if providers is not None:
        return list(providers)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = 1, *, spinning: bool = True) -> ort.SessionOptions:
    """Every graph optimisation, one inter-op thread, ``threads`` intra-op threads (None:
    ONNX Runtime's choice), and only errors logged. ``spinning=False``: idle threads sleep
    instead of spinning, which leaves the cores to the show's other threads and workers (on a
    busy machine spinning made 2-thread GPT-2 steps 7-10x slower)."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 (or None), got {threads}")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def check_model_file(path: StrPath) -> None:
    """Refuse ``path`` unless it is a regular file of at most :data:`MAX_MODEL_BYTES` (from
    its ``stat``, nothing read): what :func:`open_session` checks before ONNX Runtime opens
    a graph, and what a command checks of every graph it will open before it opens any."""
    size = check_file(path, "give the path of an .onnx file").st_size
    if size > MAX_MODEL_BYTES:
        raise UntrustedFileError(path, f"{size / 2**30:.1f} GiB, larger than the "
                                 f"{MAX_MODEL_BYTES >> 30} GiB of any graph Encore runs",
                                 "is it the right file?")


def open_session(path: StrPath, *, threads: int | None = 1,
                 providers: Sequence[str] | None = None,
                 spinning: bool = True) -> ort.InferenceSession:
    """An ONNX Runtime session for ``path``.

    ``path`` must be a regular file of at most :data:`MAX_MODEL_BYTES`, checked before ONNX
    Runtime opens it (a FIFO would hang the open, a device or a huge file would fill the
    memory): :class:`~engine.untrusted.UntrustedFileError` otherwise (a ValueError; a
    missing file is a :class:`~engine.untrusted.MissingFileError`, also a
    FileNotFoundError). ONNX Runtime's own exceptions (Fail, InvalidGraph, ...) pass
    through: each runner turns them into its own error, which names how to make a model it
    can read."""
    check_model_file(path)
    return ort.InferenceSession(str(path), sess_options=session_options(threads, spinning=spinning),
                                providers=choose_providers(providers))
