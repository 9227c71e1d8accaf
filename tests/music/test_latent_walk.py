"""The latent walker: slerp, the typical set, drift statistics, glide, jump, freeze, replay."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.music.latent_walk import (
    DRIFT,
    FREEZE,
    GLIDE,
    JUMP,
    START,
    LatentWalker,
    WalkSettings,
    cosine,
    slerp,
    to_typical_set,
)

DIM = 128
RADIUS = math.sqrt(DIM)

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@st.composite
def vector_pairs(draw):
    dim = draw(st.integers(2, 16))
    a = draw(arrays(np.float64, dim, elements=finite))
    b = draw(arrays(np.float64, dim, elements=finite))
    assume(np.linalg.norm(a) > 1e-3 and np.linalg.norm(b) > 1e-3)
    return a, b


def walk(walker: LatentWalker, bars: int) -> np.ndarray:
    return np.array([walker.step() for _ in range(bars)])       # (bars, d)


# -- slerp and the typical set ---------------------------------------------------------------
@given(vector_pairs())
def test_slerp_endpoints(pair):
    a, b = pair
    np.testing.assert_allclose(slerp(a, b, 0.0), a, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, rtol=1e-9, atol=1e-9)


@given(vector_pairs(), st.floats(0, 1))
def test_slerp_norm_is_linear_and_angle_is_uniform(pair, t):
    a, b = pair
    z = slerp(a, b, t)
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    assert np.linalg.norm(z) == pytest.approx((1 - t) * norm_a + t * norm_b, rel=1e-9)
    omega = math.acos(np.clip(cosine(a, b), -1, 1))
    assume(1e-3 < omega < math.pi - 1e-3)
    assert math.acos(np.clip(cosine(a, z), -1, 1)) == pytest.approx(t * omega, abs=1e-6)


@given(vector_pairs(), st.floats(0, 1))
def test_slerp_keeps_the_typical_set(pair, t):
    a, b = (to_typical_set(v) for v in pair)
    assert np.linalg.norm(slerp(a, b, t)) == pytest.approx(math.sqrt(a.size), rel=1e-9)


def test_slerp_near_parallel_and_opposite_vectors():
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([1.0, 1e-9, 0.0])
    mid = slerp(a, b, 0.5)
    assert np.all(np.isfinite(mid)) and np.linalg.norm(mid) == pytest.approx(1.0)
    half = slerp(a, -a, 0.5)                      # no unique great circle: a fixed one
    assert np.all(np.isfinite(half))
    assert half @ a == pytest.approx(0.0, abs=1e-12)
    assert np.linalg.norm(half) == pytest.approx(1.0)
    np.testing.assert_allclose(slerp(a, -a, 1.0), -a, atol=1e-12)


def test_slerp_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        slerp(np.ones(3), np.ones(4), 0.5)


@given(arrays(np.float64, st.integers(1, 64), elements=finite))
def test_to_typical_set(z):
    assume(np.linalg.norm(z) > 1e-6)
    out = to_typical_set(z)
    assert np.linalg.norm(out) == pytest.approx(math.sqrt(z.size), rel=1e-12)
    assert cosine(out, z) == pytest.approx(1.0)


def test_to_typical_set_refuses_zero():
    with pytest.raises(ValueError, match="nonzero"):
        to_typical_set(np.zeros(8))


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("changes", [
    {"temperature": -0.1}, {"step_size": -0.1}, {"step_size": 2.0}, {"wander": 1.5},
    {"glide_bars": -1}, {"wander": float("nan")}])
def test_settings_refuse_bad_values(changes):
    with pytest.raises(ValueError):
        WalkSettings(**changes)


@pytest.mark.parametrize("changes", [{"glide_bars": 2.0}, {"wander": "high"}, {"step_size": True}])
def test_settings_refuse_wrong_types(changes):
    with pytest.raises(TypeError):
        WalkSettings(**changes)


def test_wander_sets_reversion_and_spread():
    tight, free = WalkSettings(wander=0.0), WalkSettings(wander=1.0)
    assert tight.reversion > WalkSettings(wander=0.5).reversion > free.reversion
    assert tight.spread < free.spread


# -- the walker ---------------------------------------------------------------------------------
def test_walker_is_deterministic_for_a_seed():
    one, two, other = (LatentWalker(DIM, WalkSettings(), seed) for seed in (3, 3, 4))
    for walker in (one, two, other):
        walker.step()
        walker.glide_to(np.ones(DIM), bars=3)
        walk(walker, 5)
        walker.jump()
    a, b, c = walk(one, 20), walk(two, 20), walk(other, 20)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_first_step_is_the_starting_point():
    walker = LatentWalker(DIM, WalkSettings(), seed=1)
    start = walker.z
    np.testing.assert_array_equal(walker.step(), start)
    assert walker.motion == START
    walker.step()
    assert walker.motion == DRIFT


@pytest.mark.parametrize("wander", [0.0, 1.0])
def test_norms_stay_in_the_typical_set(wander):
    walker = LatentWalker(DIM, WalkSettings(step_size=0.1, wander=wander), seed=2)
    norms = np.linalg.norm(walk(walker, 10_000), axis=1)
    assert np.all(np.abs(norms / RADIUS - 1) < 0.05)


def mean_step(step_size: float, wander: float = 0.3, bars: int = 1000) -> float:
    walker = LatentWalker(DIM, WalkSettings(step_size=step_size, wander=wander), seed=5)
    zs = walk(walker, bars)
    return float(np.mean(np.linalg.norm(np.diff(zs, axis=0), axis=1)) / RADIUS)


def test_mean_step_scales_with_step_size():
    small, large = mean_step(0.02), mean_step(0.08)
    assert large / small == pytest.approx(4.0, rel=0.15)
    assert small == pytest.approx(0.02, rel=0.25)
    assert mean_step(0.0) == 0.0


def mean_cosine_to_anchor(wander: float, bars: int = 3000) -> float:
    walker = LatentWalker(DIM, WalkSettings(step_size=0.05, wander=wander), seed=6)
    anchor = walker.anchor
    return float(np.mean([cosine(z, anchor) for z in walk(walker, bars)]))


def test_low_wander_stays_closer_to_the_anchor():
    tight, free = mean_cosine_to_anchor(0.0), mean_cosine_to_anchor(1.0)
    assert tight > 0.99
    assert free < tight - 0.05
    assert free > 0.0                 # the tangent offset never turns past 90 degrees


def test_glide_reaches_the_target_exactly():
    walker = LatentWalker(DIM, WalkSettings(), seed=7)
    walk(walker, 3)
    start = walker.z
    target = to_typical_set(np.random.default_rng(0).standard_normal(DIM))
    walker.glide_to(target, bars=4)
    zs = walk(walker, 4)
    assert walker.motion == GLIDE
    np.testing.assert_array_equal(zs[-1], target)
    cosines = [cosine(z, target) for z in zs]
    assert cosines == sorted(cosines)                 # always getting closer
    np.testing.assert_allclose(zs[1], to_typical_set(slerp(start, target, 0.5)))
    assert cosine(walker.step(), target) > 0.99       # then drifts around its new anchor
    assert walker.motion == DRIFT
    np.testing.assert_array_equal(walker.anchor, target)


def test_glide_of_zero_bars_cuts_to_the_target():
    walker = LatentWalker(DIM, WalkSettings(glide_bars=0), seed=7)
    target = to_typical_set(np.arange(1.0, DIM + 1))
    walker.glide_to(target)
    np.testing.assert_array_equal(walker.step(), target)


def test_freeze_holds_exactly_and_resumes():
    walker = LatentWalker(DIM, WalkSettings(), seed=8)
    walk(walker, 5)
    held = walker.z
    walker.freeze(True)
    walker.jump()                                    # remembered, not done
    for z in walk(walker, 50):
        np.testing.assert_array_equal(z, held)
    assert walker.motion == FREEZE
    walker.freeze(False)
    walker.step()
    assert walker.motion == JUMP
    assert cosine(walker.z, held) < 0.5


def test_jump_moves_far():
    walker = LatentWalker(DIM, WalkSettings(), seed=9)
    cosines = []
    for _ in range(50):
        before = walker.step()
        walker.jump()
        cosines.append(cosine(walker.step(), before))
        assert walker.motion == JUMP
    assert max(cosines) < 0.5
    given_z = np.arange(DIM, dtype=float)
    walker.jump(given_z)
    np.testing.assert_allclose(walker.step(), to_typical_set(given_z))


def test_set_anchor_recentres_the_drift():
    walker = LatentWalker(DIM, WalkSettings(wander=0.0), seed=10)
    target = to_typical_set(np.random.default_rng(1).standard_normal(DIM))
    walker.set_anchor(target)
    assert all(cosine(z, target) > 0.99 for z in walk(walker, 20))


def test_drift_during_a_glide_stays_where_it_got_to():
    walker = LatentWalker(DIM, WalkSettings(wander=0.0), seed=11)
    walker.step()
    walker.glide_to(-walker.z, bars=10)
    walk(walker, 5)
    reached = walker.z
    walker.drift()
    assert cosine(walker.step(), reached) > 0.99


def test_update_takes_effect_from_the_next_step():
    walker = LatentWalker(DIM, WalkSettings(step_size=0.05), seed=12)
    walk(walker, 10)
    walker.update(WalkSettings(step_size=0.0))          # no noise: only reversion is left
    cosines = [cosine(z, walker.anchor) for z in walk(walker, 10)]
    assert cosines == sorted(cosines) and cosines[-1] < 1.0
    with pytest.raises(TypeError):
        walker.update({"step_size": 0.1})


def test_refuses_wrong_shapes():
    walker = LatentWalker(DIM, WalkSettings(), seed=0)
    with pytest.raises(ValueError, match=f"\\({DIM},\\)"):
        walker.glide_to(np.ones(DIM + 1))
    with pytest.raises(ValueError):
        walker.jump(np.zeros(DIM))


def test_state_is_json_and_snapshot_replays():
    walker = LatentWalker(DIM, WalkSettings(), seed=13)
    walk(walker, 7)
    walker.glide_to(np.ones(DIM), bars=4)
    walker.step()
    state = json.loads(json.dumps(walker.state()))
    assert state["motion"] == GLIDE and state["glide"] == {"done": 1, "bars": 4}
    copy = LatentWalker.restore(json.loads(json.dumps(walker.snapshot())))
    np.testing.assert_array_equal(walk(copy, 30), walk(walker, 30))
