"""Run an exported MusicVAE (ONNX decoder and, optionally, encoder) with ONNX Runtime.

    runner = load_model("trio_4bar")            # models_onnx/trio_4bar.decoder.onnx
    z = runner.sample_z(np.random.default_rng(0))
    bars = runner.decode(z, temperature=0.5, seed=1)   # runner.bars Bars, each carrying z
    mu, sigma = runner.encode(bars)

The graphs are the ones ``export/musicvae_onnx.py`` writes: the decoder takes ``z (B, Z)``,
a 0-d ``temperature`` (0 = argmax) and ``uniform (B, T, D)`` noise, and returns ``events
(B, P, T)`` and ``logits (B, T, D)``; the encoder takes the one-hot ``inputs (B, T, D)``
and returns ``mu`` and ``sigma (B, Z)``. Everything the runner needs (parts, bars, sizes)
comes from the files' ``encore.*`` metadata. The noise is drawn here from
``np.random.default_rng(seed)``, so a seed names one decode on every machine.

No torch here: this module is part of the runtime.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.models import MODELS_ENV, model_dirs, open_session
from engine.music.encoding import (
    PART_DEPTHS,
    decode_drums,
    decode_melody,
    encode_drums,
    encode_melody,
    one_hot,
)
from engine.music.notes import DRUMS, Bar, join_bars, split_into_bars
from engine.untrusted import MissingFileError, UntrustedFileError

log = logging.getLogger(__name__)

StrPath = str | PathLike[str]

SUPPORTED_VERSIONS = frozenset({"1"})
"""``encore.version`` values this runner reads (export.musicvae.FORMAT_VERSION)."""
HOW_TO_MAKE = ("make one with `encore convert magenta-js DIR OUT` (from a magenta.js "
               "checkpoint) or `python -m export.train_musicvae` then `encore export musicvae`")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the runner reads from a model file's ``encore.config`` metadata."""

    name: str
    parts: tuple[str, ...]
    bars: int
    steps_per_bar: int
    z_size: int
    hierarchical: bool

    @property
    def steps(self) -> int:
        return self.bars * self.steps_per_bar

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(PART_DEPTHS[p] for p in self.parts)

    @property
    def depth(self) -> int:
        return sum(self.depths)


def read_info(session: ort.InferenceSession, path: StrPath, kind: str) -> ModelInfo:
    """Check a session's ``encore.*`` metadata and return its model info.

    Raises ValueError when the metadata is missing, of another kind or of an unknown version.
    """
    meta = session.get_modelmeta().custom_metadata_map
    if "encore.config" not in meta or "encore.version" not in meta:
        raise ValueError(f"{path}: not an Encore model (no encore.config / encore.version "
                         f"metadata); {HOW_TO_MAKE}")
    version = meta["encore.version"]
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: Encore model version {version!r}, this runner reads "
                         f"{sorted(SUPPORTED_VERSIONS)}; re-export it with this version "
                         f"of Encore ({HOW_TO_MAKE})")
    if meta.get("encore.kind") != kind:
        raise ValueError(f"{path}: encore.kind is {meta.get('encore.kind')!r}, expected "
                         f"{kind!r}")
    try:
        cfg = json.loads(meta["encore.config"])
        info = ModelInfo(name=str(cfg["name"]), parts=tuple(str(p) for p in cfg["parts"]),
                         bars=int(cfg["bars"]), steps_per_bar=int(cfg["steps_per_bar"]),
                         z_size=int(cfg["z_size"]), hierarchical=int(cfg["conductor_size"]) > 0)
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise ValueError(f"{path}: unreadable encore.config metadata ({err!r}); "
                         f"{HOW_TO_MAKE}") from err
    unknown = [p for p in info.parts if p not in PART_DEPTHS]
    if unknown:
        raise ValueError(f"{path}: unknown parts {unknown} in encore.config; this runner "
                         f"knows {sorted(PART_DEPTHS)}")
    return info


def _check_tensors(path: StrPath, actual: Sequence, expected: dict[str, list], what: str) -> None:
    """Compare a session's inputs or outputs with ``{name: [dim, ...]}`` (None: any size)."""
    found = {t.name: t.shape for t in actual}
    if set(found) != set(expected):
        raise ValueError(f"{path}: {what} are {sorted(found)}, expected {sorted(expected)}")
    for name, dims in expected.items():
        shape = found[name]
        ok = len(shape) == len(dims) and all(
            want is None or not isinstance(got, int) or got == want
            for got, want in zip(shape, dims, strict=True))
        if not ok:
            wanted = ["any" if d is None else d for d in dims]
            raise ValueError(f"{path}: {what[:-1]} {name!r} has shape {shape}, expected {wanted} "
                             f"for this model's encore.config")


def make_session(path: StrPath, providers: Sequence[str] | None = None,
                 threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime session (:func:`engine.models.open_session`) with this runner's errors."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    try:
        return open_session(path, threads=threads, providers=providers)
    except MissingFileError:
        raise FileNotFoundError(f"{path}: no such model file") from None
    except UntrustedFileError:  # not a regular file, or too large: says so itself
        raise
    except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph)
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such model file") from err
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({err}); {HOW_TO_MAKE}") from err


class MusicVAERunner:
    """Decode (and encode) MusicVAE segments with ONNX Runtime sessions."""

    def __init__(self, decoder_path: StrPath, encoder_path: StrPath | None = None, *,
                 providers: Sequence[str] | None = None, threads: int = 1):
        self.decoder_path = Path(decoder_path)
        self.encoder_path = None if encoder_path is None else Path(encoder_path)
        self._decoder = make_session(self.decoder_path, providers, threads)
        self.info = read_info(self._decoder, self.decoder_path, "musicvae.decoder")
        info = self.info
        _check_tensors(self.decoder_path, self._decoder.get_inputs(),
                       {"z": [None, info.z_size], "temperature": [],
                        "uniform": [None, info.steps, info.depth]}, "inputs")
        _check_tensors(self.decoder_path, self._decoder.get_outputs(),
                       {"events": [None, len(info.parts), info.steps],
                        "logits": [None, info.steps, info.depth]}, "outputs")
        self._encoder = None
        if self.encoder_path is not None:
            self._encoder = make_session(self.encoder_path, providers, threads)
            enc_info = read_info(self._encoder, self.encoder_path, "musicvae.encoder")
            if enc_info != info:
                raise ValueError(f"{self.encoder_path}: encoder config {enc_info} does not match "
                                 f"the decoder's {info} ({self.decoder_path})")
            _check_tensors(self.encoder_path, self._encoder.get_inputs(),
                           {"inputs": [None, info.steps, info.depth]}, "inputs")
            _check_tensors(self.encoder_path, self._encoder.get_outputs(),
                           {"mu": [None, info.z_size], "sigma": [None, info.z_size]}, "outputs")
        self.provider = self._decoder.get_providers()[0]
        log.info("MusicVAE %s (%s, %d bars, z %d) on %s", info.name, "+".join(info.parts),
                 info.bars, info.z_size, self.provider)

    def __repr__(self) -> str:
        return (f"MusicVAERunner({self.info.name!r}, parts={self.parts}, bars={self.bars}, "
                f"provider={self.provider!r})")

    # ---- what the model is ----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def parts(self) -> tuple[str, ...]:
        return self.info.parts

    @property
    def bars(self) -> int:
        """Bars in one segment (one decode of one z)."""
        return self.info.bars

    @property
    def steps(self) -> int:
        return self.info.steps

    @property
    def z_size(self) -> int:
        return self.info.z_size

    @property
    def has_encoder(self) -> bool:
        return self._encoder is not None

    # ---- decoding -------------------------------------------------------------------
    def sample_z(self, rng: np.random.Generator, batch: int | None = None) -> np.ndarray:
        """A draw from the prior N(0, I): ``(Z,)``, or ``(batch, Z)`` when batch is given."""
        shape = (self.z_size,) if batch is None else (batch, self.z_size)
        return rng.standard_normal(shape).astype(np.float32)

    def uniform(self, batch: int, seed: int) -> np.ndarray:
        """The decoder's noise for ``seed``: ``(batch, T, D)`` float32 in [0, 1)."""
        rng = np.random.default_rng(seed)
        return rng.random((batch, self.steps, self.info.depth), dtype=np.float32)

    def run_decoder(self, z: np.ndarray, temperature: float, uniform: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The raw graph: z (B, Z), uniform (B, T, D) -> events (B, P, T), logits (B, T, D)."""
        z = self._as_batch(z)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = argmax), got {temperature}")
        want = (z.shape[0], self.steps, self.info.depth)
        if uniform.shape != want:
            raise ValueError(f"uniform must have shape {want}, got {uniform.shape}")
        events, logits = self._decoder.run(None, {
            "z": z, "temperature": np.asarray(temperature, dtype=np.float32),
            "uniform": np.ascontiguousarray(uniform, dtype=np.float32)})
        return events, logits

    def decode_events(self, z: np.ndarray, temperature: float = 0.5, seed: int = 0
                      ) -> np.ndarray:
        """z (Z,) or (B, Z) -> events (B, P, T) int64 (melody/bass 90 classes, drums 512)."""
        z = self._as_batch(z)
        return self.run_decoder(z, temperature, self.uniform(z.shape[0], seed))[0]

    def decode(self, z: np.ndarray, temperature: float = 0.5, seed: int = 0) -> list[Bar]:
        """z (Z,) or (B, Z) -> ``B * bars`` Bars in order, each part's notes bar-relative.

        Each segment is decoded to notes as a whole (a melody note may be held across its
        bar lines, never past the segment's end) and then split into bars; every Bar
        carries the z of its segment.
        """
        z = self._as_batch(z)
        events = self.decode_events(z, temperature, seed)  # (B, P, T)
        out: list[Bar] = []
        for seg_z, seg_events in zip(z, events, strict=True):
            per_part = {}
            for part, part_events in zip(self.parts, seg_events, strict=True):
                notes = decode_drums(part_events) if part == DRUMS else decode_melody(part_events)
                per_part[part] = split_into_bars(notes, self.bars)
            out.extend(Bar({p: per_part[p][b] for p in self.parts}, z=seg_z.copy())
                       for b in range(self.bars))
        return out

    # ---- encoding -------------------------------------------------------------------
    def encode(self, bars: Sequence[Bar]) -> tuple[np.ndarray, np.ndarray]:
        """One segment of Bars (``bars`` of them) -> ``mu, sigma`` each ``(Z,)``.

        Parts the model has but the bars lack are encoded as silence.
        """
        if self._encoder is None:
            raise ValueError(f"{self.name}: no encoder loaded; pass encoder_path (the "
                             f"{self.name}.encoder.onnx beside the decoder)")
        if len(bars) != self.bars:
            raise ValueError(f"{self.name} encodes {self.bars} bars at a time, got {len(bars)}")
        columns = []
        for part, depth in zip(self.parts, self.info.depths, strict=True):
            notes = join_bars([bar.notes(part) for bar in bars])
            encode = encode_drums if part == DRUMS else encode_melody
            columns.append(one_hot(encode(notes, self.steps), depth))  # (T, depth)
        inputs = np.concatenate(columns, axis=-1)[None]  # (1, T, D)
        mu, sigma = self._encoder.run(None, {"inputs": inputs})
        return mu[0], sigma[0]

    # ---- helpers --------------------------------------------------------------------
    def _as_batch(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float32)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.z_size or z.shape[0] < 1:
            raise ValueError(f"z must have shape ({self.z_size},) or (B, {self.z_size}) for "
                             f"{self.name}, got {np.shape(z)}")
        return np.ascontiguousarray(z)


def find_model(name_or_path: StrPath, model_dir: StrPath | None = None
               ) -> tuple[Path, Path | None]:
    """A model name or path -> ``(decoder path, encoder path or None)``.

    Accepts a decoder file (``x.decoder.onnx``), a path prefix (``dir/x``, for
    ``dir/x.decoder.onnx``) or a bare name looked up in :func:`model_dirs`.
    """
    text = str(name_or_path)
    if text.endswith(".onnx") or os.sep in text or "/" in text:
        path = Path(text)
        candidates = [path] if text.endswith(".onnx") else [Path(f"{text}.decoder.onnx")]
    else:
        candidates = [d / f"{text}.decoder.onnx" for d in model_dirs(model_dir)]
    for decoder in candidates:
        if decoder.is_file():
            encoder = decoder.with_name(decoder.name.replace(".decoder.onnx", ".encoder.onnx"))
            return decoder, encoder if encoder != decoder and encoder.is_file() else None
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no MusicVAE model {text!r}: looked for {looked}; set "
                            f"{MODELS_ENV} or pass a path, or {HOW_TO_MAKE}")


def load_model(name_or_path: StrPath, *, model_dir: StrPath | None = None,
               providers: Sequence[str] | None = None, threads: int = 1) -> MusicVAERunner:
    """Find a model by name or path (see :func:`find_model`) and open it, with its encoder
    when one lies beside the decoder."""
    decoder, encoder = find_model(name_or_path, model_dir)
    return MusicVAERunner(decoder, encoder, providers=providers, threads=threads)
