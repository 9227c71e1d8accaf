"""A walk through a MusicVAE latent space, one latent vector per bar.

    walker = LatentWalker(dim=128, settings=WalkSettings(step_size=0.05, wander=0.3), seed=7)
    z = walker.step()                  # bar 0: the starting point (a prior sample)
    walker.glide_to(target, bars=4)    # the next 4 bars slerp there, landing exactly on it
    walker.jump()                      # next bar: a fresh region of the space
    walker.freeze(True)                # hold the current z exactly until freeze(False)

The conductor decodes each bar's segment from that bar's ``z``, so consecutive vectors must
be close (continuity) and every vector must look like what the decoder saw in training.

The typical set
---------------
The prior is N(0, I_d). Its mass sits in a thin shell: ``|z|`` is within a few per cent of
``sqrt(d)`` (mean sqrt(d - 1/2), sd 1/sqrt(2)). Vectors far inside the shell (e.g. the
midpoint of a straight line between two samples) decode to bland, untypical material, so
every vector the walker returns is rescaled onto the shell: ``to_typical_set(z) = sqrt(d)
z / |z|``. Directions carry the music; distances below are quoted in units of ``sqrt(d)``
(the radius), so 0.05 is about 2.9 degrees of arc.

Motions (a call changes what the *next* ``step()`` does; nothing changes mid-bar)
-----------------------------------------------------------------------------
drift (the default)
    A mean-reverting (Ornstein-Uhlenbeck) offset ``o`` from the anchor ``a``, kept in the
    tangent plane at ``a`` (``o . a = 0``)::

        o[n+1] = (1 - theta) o[n] + step_size * eps_perp,   eps ~ N(0, I_d)
        z[n+1] = to_typical_set(a + o[n+1])

    ``eps_perp`` is ``eps`` with its component along ``a`` removed, so the noise has length
    ~ ``step_size * sqrt(d)``. Because ``o`` is tangent, the angle from the anchor is
    ``atan(|o| / sqrt(d))``: always below 90 degrees, so the walk can never turn into the
    opposite of its anchor. The reversion ``theta`` comes from ``wander`` in [0, 1] by a
    geometric blend, ``theta = THETA_TIGHT**(1 - wander) * THETA_FREE**wander``
    (0.5 at wander 0, 0.002 at wander 1). In the stationary state

        rms |o| / sqrt(d)      = step_size / sqrt(theta (2 - theta))      ("spread")
        rms |z[n+1] - z[n]|    ~ step_size * sqrt(d) * sqrt(2 / (2 - theta))  (step)
        memory (bars to 1/e)   = -1 / ln(1 - theta)

    (the step formula holds near the anchor; far out, the projection onto the sphere
    shrinks steps by up to cos^2 of the angle from the anchor). So ``step_size`` sets the
    bar-to-bar change: measured, 1.15 (wander 0) to 0.8 (wander 1) times
    ``step_size * sqrt(d)``; and ``wander`` sets how far and for how long the walk strays.
    At step_size 0.05: wander 0 keeps within ~0.058 of the anchor (3.3 degrees, memory
    1.4 bars), wander 0.5 within ~0.20 (11 degrees, 31 bars), wander 1 within ~0.79
    (38 degrees, 500 bars: free roaming).
glide_to(target, bars)
    Spherical interpolation from the current ``z`` (``z0``) to ``target``: the k-th of the
    next ``bars`` steps returns ``slerp(z0, target, k / bars)``, so the last one returns
    ``target`` exactly. On arrival ``target`` becomes the anchor, the offset is zero and
    drift resumes from there. ``bars = 0`` lands on ``target`` on the next step.
jump(z=None)
    The next step returns ``z`` (or a fresh prior sample, which is nearly orthogonal to
    where we were: cosine ~ N(0, 1/d)) exactly; it becomes the anchor and drift resumes.
freeze(on)
    While on, ``step()`` returns the held ``z`` exactly, draws no random numbers and does not
    advance a glide; motions requested meanwhile take effect once it is off.
set_anchor(z)
    Drift re-centres on ``z`` with a zero offset (a cut: the next bar is near ``z``; use
    ``glide_to`` for a smooth move). It cancels a glide in progress.

The latest motion call wins (``glide_to`` after ``jump`` glides from where we are, and
``drift()`` during a glide stops it and drifts around the point reached). The walker is
deterministic: its own ``np.random.default_rng(seed)`` is drawn from only by drift steps and
prior jumps, so a seed plus the log of motion calls replays a set; ``snapshot()`` /
``LatentWalker.restore()`` capture and restore everything, random state included.

``WalkSettings.temperature`` is not used by the walk itself (the typical-set projection
removes any scale): it is the decoder's sampling temperature, kept with the walk settings so
that a patch or the tablet changes the walk as one group and the event log records it.

numpy only: this module is part of the runtime.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

THETA_TIGHT = 0.5
"""Drift reversion per bar at ``wander = 0``: the offset halves every bar."""
THETA_FREE = 0.002
"""Drift reversion per bar at ``wander = 1``: a memory of ~500 bars, free roaming."""
PARALLEL_EPS = 1e-6
"""Angles (radians) below which ``slerp`` treats vectors as parallel (or antiparallel)."""

START, DRIFT, GLIDE, JUMP, FREEZE = "start", "drift", "glide", "jump", "freeze"
MOTIONS = (START, DRIFT, GLIDE, JUMP, FREEZE)
"""Names ``LatentWalker.motion`` takes: what produced the last bar's ``z``."""


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1).

    Directions move at constant angular speed along the great circle through both, and the
    norm moves linearly from ``|a|`` to ``|b|`` (so two typical-set vectors give typical-set
    vectors all the way). Near-parallel vectors fall back to a normalised straight line;
    exactly opposite ones (no unique great circle) turn through a fixed perpendicular
    direction; a zero vector gives a straight line.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"slerp needs two vectors of one shape, got {a.shape} and {b.shape}")
    t = float(t)
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0:
        return (1.0 - t) * a + t * b
    unit_a, unit_b = a / norm_a, b / norm_b
    omega = math.acos(min(1.0, max(-1.0, float(unit_a @ unit_b))))
    if omega < PARALLEL_EPS:
        direction = (1.0 - t) * unit_a + t * unit_b
    elif math.pi - omega < PARALLEL_EPS:
        direction = math.cos(t * math.pi) * unit_a + math.sin(t * math.pi) * _perpendicular(
            unit_a)
    else:
        direction = (math.sin((1.0 - t) * omega) * unit_a
                     + math.sin(t * omega) * unit_b) / math.sin(omega)
    return direction * (((1.0 - t) * norm_a + t * norm_b) / np.linalg.norm(direction))


def _perpendicular(unit: np.ndarray) -> np.ndarray:
    """A fixed unit vector perpendicular to ``unit`` (Gram-Schmidt on its smallest axis)."""
    axis = np.zeros_like(unit)
    axis[int(np.argmin(np.abs(unit)))] = 1.0
    other = axis - (axis @ unit) * unit
    return other / np.linalg.norm(other)


def to_typical_set(z: np.ndarray) -> np.ndarray:
    """``z`` rescaled to norm ``sqrt(d)``, the radius where N(0, I_d) keeps its mass."""
    z = np.asarray(z, dtype=np.float64)
    norm = float(np.linalg.norm(z))
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"cannot put a zero or non-finite vector in the typical set "
                         f"(norm {norm}); pass a nonzero finite latent vector")
    return z * (math.sqrt(z.shape[-1]) / norm)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two nonzero vectors."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass(frozen=True, slots=True)
class WalkSettings:
    """How the walk moves; see the module docstring for the maths.

    temperature: the decoder's sampling temperature (>= 0; 0 = argmax), carried with the walk.
    step_size: drift noise per bar as a fraction of ``sqrt(d)`` (0 = stand still).
    wander: 0 = stay tight on the anchor, 1 = roam freely (sets reversion and spread).
    glide_bars: default length of ``glide_to`` (0 = cut straight to the target).
    """

    temperature: float = 0.5
    step_size: float = 0.05
    wander: float = 0.3
    glide_bars: int = 2

    def __post_init__(self) -> None:
        for name in ("temperature", "step_size", "wander"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"WalkSettings.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"WalkSettings.{name} must be finite, got {value!r}")
        if self.temperature < 0:
            raise ValueError(f"WalkSettings.temperature must be >= 0, got {self.temperature}")
        if not 0 <= self.step_size <= 1:
            raise ValueError(
                f"WalkSettings.step_size must be in [0, 1] (a fraction of sqrt(d) per bar; "
                f"0.02-0.1 is usual), got {self.step_size}")
        if not 0 <= self.wander <= 1:
            raise ValueError(f"WalkSettings.wander must be in [0, 1], got {self.wander}")
        if isinstance(self.glide_bars, bool) or not isinstance(self.glide_bars, int):
            raise TypeError(f"WalkSettings.glide_bars must be an int, got {self.glide_bars!r}")
        if self.glide_bars < 0:
            raise ValueError(f"WalkSettings.glide_bars must be >= 0, got {self.glide_bars}")

    @property
    def reversion(self) -> float:
        """``theta``: the fraction of the offset from the anchor that drift removes per bar."""
        return THETA_TIGHT ** (1.0 - self.wander) * THETA_FREE ** self.wander

    @property
    def spread(self) -> float:
        """Stationary rms offset from the anchor, as a fraction of ``sqrt(d)``."""
        theta = self.reversion
        return self.step_size / math.sqrt(theta * (2.0 - theta))

    def replace(self, **changes: Any) -> WalkSettings:
        return replace(self, **changes)


class LatentWalker:
    """One latent vector per bar: drift, glide, jump, freeze; deterministic for a seed."""

    def __init__(self, dim: int, settings: WalkSettings | None = None, seed: int = 0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2 (the model's z size), got {dim!r}")
        self.dim = dim
        self.settings = _check_settings(settings if settings is not None else WalkSettings())
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._anchor = self._prior_sample()
        self._offset = np.zeros(dim)
        self._z = self._anchor.copy()
        self._landing: str | None = START  # the next step returns the anchor exactly
        self._glide: tuple[np.ndarray, np.ndarray, int, int] | None = None  # z0, target, n, k
        self._frozen = False
        self.motion = START
        """What produced the last ``step()``: one of ``MOTIONS``."""
        self.bar = 0
        """How many steps have been taken."""

    def __repr__(self) -> str:
        return (f"LatentWalker(dim={self.dim}, settings={self.settings}, seed={self.seed}, "
                f"bar={self.bar}, motion={self.motion!r})")

    # -- what it holds ---------------------------------------------------------------------
    @property
    def z(self) -> np.ndarray:
        """The last bar's vector (before the first step: the starting point)."""
        return self._z.copy()

    @property
    def anchor(self) -> np.ndarray:
        return self._anchor.copy()

    @property
    def frozen(self) -> bool:
        return self._frozen

    # -- motions (each takes effect from the next step) ------------------------------------
    def drift(self) -> None:
        """Drift around the anchor; during a glide, stop and drift around the point reached."""
        if self._glide is not None:
            self._glide = None
            self._anchor = self._z.copy()
            self._offset = np.zeros(self.dim)

    def glide_to(self, target: np.ndarray, bars: int | None = None) -> None:
        """Slerp from the current ``z`` to ``target`` over ``bars`` steps (default: settings)."""
        bars = self.settings.glide_bars if bars is None else bars
        if isinstance(bars, bool) or not isinstance(bars, int) or bars < 0:
            raise ValueError(f"glide bars must be an int >= 0, got {bars!r}")
        target = self._check_vector(target, "glide target")
        self._landing = None
        if bars == 0:
            self._glide = None
            self._land_on(target, GLIDE)
        else:
            self._glide = (self._z.copy(), target, bars, 0)

    def jump(self, z: np.ndarray | None = None) -> None:
        """Next step: ``z`` (default: a fresh prior sample) exactly; drift resumes from it."""
        target = self._prior_sample() if z is None else self._check_vector(z, "jump target")
        self._glide = None
        self._land_on(target, JUMP)

    def freeze(self, on: bool = True) -> None:
        """Hold the current ``z`` exactly while ``on``."""
        self._frozen = bool(on)

    def set_anchor(self, z: np.ndarray) -> None:
        """Drift around ``z`` from the next step (a cut; cancels a glide)."""
        self._anchor = self._check_vector(z, "anchor")
        self._offset = np.zeros(self.dim)
        self._glide = None
        self._landing = None

    def update(self, settings: WalkSettings) -> None:
        """New settings from the next step (a glide in progress keeps its length)."""
        self.settings = _check_settings(settings)

    # -- the bar clock ---------------------------------------------------------------------
    def step(self) -> np.ndarray:
        """Advance one bar and return its ``z`` (norm ``sqrt(d)``; a copy, float64)."""
        self.bar += 1
        if self._frozen:
            self.motion = FREEZE
        elif self._landing is not None:
            self.motion, self._landing = self._landing, None
            self._z = self._anchor.copy()
        elif self._glide is not None:
            z0, target, bars, done = self._glide
            done += 1
            self.motion = GLIDE
            if done >= bars:
                self._glide = None
                self._anchor = target
                self._offset = np.zeros(self.dim)
                self._z = target.copy()
            else:
                self._glide = (z0, target, bars, done)
                self._z = to_typical_set(slerp(z0, target, done / bars))
        else:
            self.motion = DRIFT
            self._z = self._drift_step()
        return self._z.copy()

    def _drift_step(self) -> np.ndarray:
        unit = self._anchor / np.linalg.norm(self._anchor)
        noise = self._rng.standard_normal(self.dim)                      # (d,)
        noise -= (noise @ unit) * unit                                   # tangent at anchor
        theta = self.settings.reversion
        self._offset = (1.0 - theta) * self._offset + self.settings.step_size * noise
        self._offset -= (self._offset @ unit) * unit                     # stay tangent (fp)
        return to_typical_set(self._anchor + self._offset)

    # -- for the event log -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """A small JSON-able summary of the walk (no vectors): for one event-log line."""
        glide = None
        if self._glide is not None:
            glide = {"done": self._glide[3], "bars": self._glide[2]}
        return {
            "bar": self.bar,
            "motion": self.motion,
            "frozen": self._frozen,
            "glide": glide,
            "anchor_cos": round(cosine(self._z, self._anchor), 6),
            "settings": asdict(self.settings),
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything, JSON-able (vectors as float lists, random state included)."""
        glide = None
        if self._glide is not None:
            z0, target, bars, done = self._glide
            glide = {"from": z0.tolist(), "to": target.tolist(), "bars": bars, "done": done}
        return {
            "dim": self.dim,
            "seed": self.seed,
            "settings": asdict(self.settings),
            "bar": self.bar,
            "motion": self.motion,
            "frozen": self._frozen,
            "landing": self._landing,
            "z": self._z.tolist(),
            "anchor": self._anchor.tolist(),
            "offset": self._offset.tolist(),
            "glide": glide,
            "rng": self._rng.bit_generator.state,
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> LatentWalker:
        """A walker that continues exactly as the one ``snapshot()`` was taken from."""
        walker = cls(snapshot["dim"], WalkSettings(**snapshot["settings"]), snapshot["seed"])
        walker.bar = snapshot["bar"]
        walker.motion = snapshot["motion"]
        walker._frozen = snapshot["frozen"]
        walker._landing = snapshot["landing"]
        walker._z = np.asarray(snapshot["z"], dtype=np.float64)
        walker._anchor = np.asarray(snapshot["anchor"], dtype=np.float64)
        walker._offset = np.asarray(snapshot["offset"], dtype=np.float64)
        glide = snapshot["glide"]
        if glide is not None:
            walker._glide = (np.asarray(glide["from"], dtype=np.float64),
                             np.asarray(glide["to"], dtype=np.float64),
                             glide["bars"], glide["done"])
        walker._rng.bit_generator.state = snapshot["rng"]
        return walker

    # -- helpers ---------------------------------------------------------------------------
    def _prior_sample(self) -> np.ndarray:
        return to_typical_set(self._rng.standard_normal(self.dim))

    def _land_on(self, target: np.ndarray, motion: str) -> None:
        self._anchor = target
        self._offset = np.zeros(self.dim)
        self._landing = motion

    def _check_vector(self, z: np.ndarray, what: str) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (self.dim,):
            raise ValueError(f"{what} must have shape ({self.dim},), got {z.shape}")
        return to_typical_set(z)


def _check_settings(settings: WalkSettings) -> WalkSettings:
    if not isinstance(settings, WalkSettings):
        raise TypeError(f"expected WalkSettings, got {type(settings).__name__}")
    return settings
