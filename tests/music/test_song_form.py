"""Song form positions, per-section anchors and the section walk."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.music.latent_walk import GLIDE, JUMP, LatentWalker, WalkSettings, cosine
from engine.music.song_form import Anchors, FormPosition, Section, SectionWalk, SongForm

DIM = 128


@pytest.fixture
def form() -> SongForm:
    return SongForm([("intro", 4), ("verse", 8), ("chorus", 8)], loop_from=1)


# -- the form -----------------------------------------------------------------------------------
def test_positions_of_a_known_form(form):
    def where(bar):
        p = form.position(bar)
        return p.section, p.pass_number, p.bar_in_section

    assert where(0) == ("intro", 0, 0)
    assert where(3) == ("intro", 0, 3)
    assert where(4) == ("verse", 0, 0)
    assert where(12) == ("chorus", 0, 0)
    assert where(19) == ("chorus", 0, 7)
    assert where(20) == ("verse", 1, 0)           # the intro plays once
    assert where(28) == ("chorus", 1, 0)
    assert where(36) == ("verse", 2, 0)
    assert where(4 + 16 * 10 + 8) == ("chorus", 10, 0)


def test_position_fields(form):
    assert form.position(13) == FormPosition(
        bar_index=13, section="chorus", section_index=2, pass_number=0, bar_in_section=1,
        section_bars=8, next_section="verse")
    assert form.position(3).next_section == "verse"
    last = form.position(19)
    assert last.bars_left == 1 and last.bar_in_phrase == 3 and not last.is_section_start
    assert json.loads(json.dumps(last.to_dict()))["section"] == "chorus"


def test_iteration_is_endless_and_matches_position(form):
    got = list(itertools.islice(form, 100))
    assert got == [form.position(i) for i in range(100)]
    assert list(itertools.islice(form.positions(50), 3)) == [form.position(i) for i in (50, 51, 52)]


@given(st.lists(st.integers(1, 9), min_size=1, max_size=6), st.data())
def test_sections_follow_each_other(lengths, data):
    loop_from = data.draw(st.integers(0, len(lengths) - 1))
    form = SongForm([(f"s{i}", n) for i, n in enumerate(lengths)], loop_from)
    previous = form.position(0)
    assert previous.is_section_start and previous.pass_number == 0
    for bar in range(1, 3 * sum(lengths)):
        p = form.position(bar)
        if previous.bars_left > 1:
            assert (p.section_index, p.pass_number) == (
                previous.section_index, previous.pass_number)
            assert p.bar_in_section == previous.bar_in_section + 1
        else:
            assert p.is_section_start and p.section == previous.next_section
            assert p.pass_number in (previous.pass_number, previous.pass_number + 1)
        previous = p


def test_jumps_between_sections(form):
    assert form.jump_to_next_section(0) == 4
    assert form.jump_to_next_section(15) == 20
    assert form.jump_to_next_section(20) == 28
    assert form.jump_to_previous_section(15) == 4
    assert form.jump_to_previous_section(22) == 12        # pass 1's verse -> pass 0's chorus
    assert form.jump_to_previous_section(2) == 0
    assert form.section_start(33) == 28


def test_sections_in_pass(form):
    assert [s.name for s in form.sections_in_pass(0)] == ["intro", "verse", "chorus"]
    assert [s.name for s in form.sections_in_pass(3)] == ["verse", "chorus"]
    assert form.pass_start(0) == 0 and form.pass_start(2) == 36
    assert form.position(form.pass_start(2)).pass_number == 2


@pytest.mark.parametrize("sections, loop_from, error", [
    ([], 0, ValueError), ([("verse", 0)], 0, ValueError), ([("verse", 8)], 1, ValueError),
    ([("", 8)], 0, TypeError), ([("verse", 8.0)], 0, TypeError)])
def test_form_refuses_bad_input(sections, loop_from, error):
    with pytest.raises(error):
        SongForm(sections, loop_from)


def test_form_accepts_sections(form):
    assert SongForm([Section("intro", 4), ("verse", 8), ("chorus", 8)], 1).sections == \
        form.sections
    with pytest.raises(ValueError):
        form.position(-1)


# -- anchors ------------------------------------------------------------------------------------
def test_same_name_same_anchor():
    anchors = Anchors(DIM, seed=1)
    np.testing.assert_array_equal(anchors.anchor("chorus"), anchors.anchor("chorus", 0))
    np.testing.assert_array_equal(anchors.anchor("chorus", 3), Anchors(DIM, 1).anchor("chorus", 3))
    assert np.linalg.norm(anchors.anchor("chorus", 5)) == pytest.approx(np.sqrt(DIM))


def test_anchor_depends_only_on_seed_name_and_pass():
    late = Anchors(DIM, seed=1)
    late.anchor("verse", 4)                             # other names, other order first
    np.testing.assert_array_equal(late.anchor("chorus", 2), Anchors(DIM, 1).anchor("chorus", 2))
    assert cosine(Anchors(DIM, 2).anchor("chorus"), late.anchor("chorus")) < 0.5


def test_anchors_drift_slowly_and_stay_related():
    anchors = Anchors(DIM, seed=1)
    base = anchors.anchor("chorus", 0)
    assert 0.9 < cosine(anchors.anchor("chorus", 1), base) < 1.0
    assert cosine(anchors.anchor("chorus", 10), base) > 0.8
    assert cosine(anchors.anchor("chorus", 200), base) > 0.8      # tethered: bounded drift
    assert cosine(anchors.anchor("chorus", 10), anchors.anchor("chorus", 11)) > 0.95
    still = Anchors(DIM, seed=1, drift=0.0)
    np.testing.assert_allclose(still.anchor("chorus", 7), base)


def test_different_names_are_nearly_orthogonal():
    anchors = Anchors(DIM, seed=4)
    names = ["intro", "verse", "chorus", "bridge", "outro", "solo"]
    for a, b in itertools.combinations(names, 2):
        assert abs(cosine(anchors.anchor(a), anchors.anchor(b))) < 0.35


# -- the section walk ---------------------------------------------------------------------------
def make_walk(form: SongForm, seed: int = 3, **settings) -> SectionWalk:
    return SectionWalk(form, Anchors(DIM, seed),
                       LatentWalker(DIM, WalkSettings(**settings), seed))


def test_section_walk_returns_to_the_chorus(form):
    walk = make_walk(form, glide_bars=2)
    chorus_bars = 0
    for bar in range(4 + 16 * 6):
        z, pos, motion = walk.z_for_bar(bar)
        assert pos.bar_index == bar
        anchor = walk.anchors.anchor(pos.section, pos.pass_number)
        if bar == 0:
            assert motion == JUMP and cosine(z, anchor) == pytest.approx(1.0)
        elif bar >= 4 and pos.bar_in_section < 2:
            assert motion == GLIDE
        if pos.section == "chorus" and pos.bar_in_section >= 2:
            chorus_bars += 1
            assert cosine(z, anchor) > 0.9
            assert cosine(z, walk.anchors.anchor("chorus", 0)) > 0.8
    assert chorus_bars == 6 * 6


def test_section_walk_is_continuous_and_deterministic(form):
    one, two = make_walk(form), make_walk(form)
    zs = np.array([one.z_for_bar(bar)[0] for bar in range(60)])       # (60, d)
    np.testing.assert_array_equal(zs, [two.z_for_bar(bar)[0] for bar in range(60)])
    steps = np.linalg.norm(np.diff(zs, axis=0), axis=1) / np.sqrt(DIM)
    assert steps.max() < 1.0          # a 2-bar glide between orthogonal anchors: ~0.77 a bar


def test_force_next_section(form):
    walk = make_walk(form)
    for bar in range(6):
        walk.z_for_bar(bar)                             # verse, bar 2 of 8
    walk.force_next_section()
    z, pos, motion = walk.z_for_bar(6)
    assert (pos.section, pos.bar_in_section, pos.bar_index, motion) == ("chorus", 0, 12, GLIDE)
    assert walk.shift == 6
    assert walk.z_for_bar(7)[1].bar_index == 13


def test_force_jump_then_the_form_comes_back(form):
    walk = make_walk(form, glide_bars=1)
    for bar in range(14):
        walk.z_for_bar(bar)
    before = walk.walker.z
    walk.force_jump()
    z, pos, motion = walk.z_for_bar(14)
    assert motion == JUMP and cosine(z, before) < 0.5
    for bar in range(15, 21):
        z, pos, motion = walk.z_for_bar(bar)
    assert pos.section == "verse" and pos.bar_in_section == 0
    assert cosine(z, walk.anchors.anchor("verse", 1)) == pytest.approx(1.0)
    assert json.loads(json.dumps(walk.state()))["walker"]["motion"] == GLIDE


def test_section_walk_refuses_mismatched_sizes(form):
    with pytest.raises(ValueError, match="dim"):
        SectionWalk(form, Anchors(64, 0), LatentWalker(DIM, WalkSettings(), 0))
