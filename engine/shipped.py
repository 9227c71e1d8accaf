"""Where the files that come with Encore are: the models and patches, and the trainers.

In a source checkout (and an editable install of one) they are the checkout's own folders,
``models_onnx/``, ``patches/`` and ``export/``. An installed wheel carries the models and
patches inside the package (``engine/_shipped/``) and no trainers: those need PyTorch and run
from a checkout, so the wheel never claims the generic top-level name ``export``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHECKOUT", "checkout_with_trainers", "shipped_folder"]

_PACKAGE = Path(__file__).resolve().parent
CHECKOUT = _PACKAGE.parent
"""The folder above the package: the checkout when running from one."""


def shipped_folder(name: str) -> Path:
    """``models_onnx`` or ``patches``: the checkout's folder when there is one, else the copy
    the installed package carries."""
    in_checkout = CHECKOUT / name
    if in_checkout.is_dir():
        return in_checkout
    return _PACKAGE / "_shipped" / name


def checkout_with_trainers() -> Path | None:
    """The checkout whose ``export/`` package holds the trainers, or None when this is an
    installed wheel."""
    return CHECKOUT if (CHECKOUT / "export" / "__init__.py").is_file() else None
