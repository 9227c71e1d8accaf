"""The conductor (plans from a patch) and the composer (plans -> arranged bars).

Conductor tests need no model (plans only need the z size). Composer tests decode with the
tiny random-weight ``tiny_trio``: its notes are noise, so these check what the composer
guarantees whatever the model writes (grid, registers, key, chords), not musical quality.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.music.arrangement import in_key_ratio
from engine.music.encoding import DRUM_PITCHES
from engine.music.musicvae_runner import load_model
from engine.music.notes import STEPS_PER_BAR
from engine.patch import Patch, Walk, load_patch, parse_patch
from engine.song.conductor import CHORDS, KEY_NAMES, PARTS, ArrangedBar, Composer, Conductor

Z = 16
MELODY_RANGE = (60, 84)  # C4..C6
BASS_RANGE = (28, 52)  # E1..E3


def plans(patch: Patch, n: int, seed: int | None = None, z_size: int = Z):
    conductor = Conductor(patch, z_size, seed=seed)
    return [conductor.plan() for _ in range(n)]


def expected_sections(patch: Patch, n: int) -> list[tuple[str, int, int]]:
    """(section, pass, bar in section) of the first ``n`` bars, straight from the patch."""
    form = patch.form
    out: list[tuple[str, int, int]] = []
    names, pass_number = list(form.sections), 0
    while len(out) < n:
        for name in names:
            out += [(name, pass_number, b) for b in range(form.lengths[name])]
        names, pass_number = list(form.sections[form.loop_from:]), pass_number + 1
    return out[:n]


# ---- the conductor ------------------------------------------------------------------
def test_plans_are_deterministic_for_a_patch_and_seed() -> None:
    patch = load_patch("default")
    first, again = plans(patch, 60, seed=3), plans(patch, 60, seed=3)
    for a, b in zip(first, again, strict=True):
        assert a == b  # index, position, motion, temperature, noise seed
        np.testing.assert_array_equal(a.z, b.z)
        np.testing.assert_array_equal(a.anchor, b.anchor)
        assert a.to_dict() == b.to_dict()


def test_another_seed_plans_another_song() -> None:
    patch = load_patch("default")
    a, b = plans(patch, 60, seed=3), plans(patch, 60, seed=4)
    assert [p.position for p in a] == [p.position for p in b]  # the same form...
    for x, y in zip(a, b, strict=True):  # ...through other points of the latent space
        assert not np.allclose(x.z, y.z)
        assert x.noise_seed != y.noise_seed


def test_the_seed_defaults_to_the_patchs() -> None:
    patch = load_patch("night_drive")
    conductor = Conductor(patch, Z)
    assert conductor.seed == patch.song.seed == 92
    default, explicit = plans(patch, 10), plans(patch, 10, seed=92)
    for a, b in zip(default, explicit, strict=True):
        np.testing.assert_array_equal(a.z, b.z)
        assert a.noise_seed == b.noise_seed


@pytest.mark.parametrize("name", ["default", "night_drive"])
def test_sections_follow_the_patch_form(name: str) -> None:
    patch = load_patch(name)
    n = 3 * sum(patch.form.lengths[s] for s in patch.form.sections)  # > 2 passes
    got = [(p.position.section, p.position.pass_number, p.position.bar_in_section)
           for p in plans(patch, n)]
    assert got == expected_sections(patch, n)
    assert [p.index for p in plans(patch, 5)] == [0, 1, 2, 3, 4]


def test_sections_of_a_custom_form() -> None:
    patch = parse_patch('[form]\nsections = ["a", "b", "a"]\nloop_from = 1\n'
                        "[form.lengths]\na = 1\nb = 3\n")
    got = [p.position.section for p in plans(patch, 12)]
    assert got == ["a", "b", "b", "b", "a"] + ["b", "b", "b", "a"] + ["b", "b", "b"]


@pytest.mark.parametrize("walk", [
    "",  # the default walk
    "[walk]\nstep_size = 1.0\nwander = 1.0\nglide_bars = 1\nanchor_drift = 0.5\n",
    "[walk]\nstep_size = 0.0\nwander = 0.0\nglide_bars = 16\nanchor_drift = 0.0\n",
])
def test_zs_stay_in_the_typical_set(walk: str) -> None:
    patch = parse_patch(walk)
    for z_size in (4, 64):
        for plan in plans(patch, 150, z_size=z_size):
            assert plan.z.dtype == np.float32 and plan.z.shape == (z_size,)
            assert np.linalg.norm(plan.z) == pytest.approx(math.sqrt(z_size), rel=1e-4)
            assert np.linalg.norm(plan.anchor) == pytest.approx(math.sqrt(z_size), rel=1e-4)
            assert np.isfinite(plan.z).all()


WALK_RANGES = {f.name: f.metadata["range"] for f in dataclasses.fields(Walk)
               if f.metadata["range"]}


@pytest.mark.parametrize("end", [0, 1], ids=["lowest", "highest"])
def test_every_walk_the_patch_schema_allows_plans(end: int) -> None:
    values = {name: bounds[end] for name, bounds in WALK_RANGES.items()}
    patch = parse_patch("[walk]\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items()))
    assert len(plans(patch, 20)) == 20


def test_noise_seeds_repeat_for_the_same_place_in_a_section() -> None:
    patch = load_patch("default")
    all_plans = plans(patch, 150)  # nearly 3 passes of the form
    seeds: dict[tuple[str, int], set[int]] = {}
    for plan in all_plans:
        key = (plan.position.section, plan.position.bar_in_section)
        seeds.setdefault(key, set()).add(plan.noise_seed)
        assert 0 <= plan.noise_seed < 2**31
    assert max(p.position.pass_number for p in all_plans) >= 2
    assert all(len(s) == 1 for s in seeds.values()), "a section's bar changed noise seed"
    own = {key: s for key, s in seeds.items() if key[1] % 4 != 2}  # a 3rd bar restates the 1st
    distinct = {next(iter(s)) for s in own.values()}
    assert len(distinct) == len(own), "two places in the form share a noise seed"


def test_a_returning_section_is_near_its_last_pass() -> None:
    patch = load_patch("default")
    anchors: dict[int, np.ndarray] = {}
    for plan in plans(patch, 150):
        if plan.position.section == "chorus":
            anchors.setdefault(plan.position.pass_number, plan.anchor)
    cosine = float(anchors[0] @ anchors[1]) / Z
    assert 0.95 < cosine < 1.0  # the same chorus, developed (anchor_drift 0.05)


def test_plans_carry_the_patch_temperature_and_log_as_json() -> None:
    patch = load_patch("night_drive")
    plan = plans(patch, 3)[2]
    assert plan.temperature == pytest.approx(patch.walk.temperature)
    record = json.loads(json.dumps(plan.to_dict()))
    assert record["bar"] == 2 and record["section"] == "intro" and record["pass"] == 0
    assert len(record["z"]) == len(record["anchor"]) == Z
    np.testing.assert_allclose(record["z"], plan.z, atol=1e-6)


# ---- the composer -------------------------------------------------------------------
def compose(runner, patch: Patch, n: int, seed: int | None = None) -> list[ArrangedBar]:
    conductor = Conductor(patch, runner.z_size, seed=seed)
    composer = Composer(runner, patch)
    return [composer.realize(conductor.plan()) for _ in range(n)]


@pytest.fixture(scope="module")
def song32(tiny_trio) -> tuple[Patch, list[ArrangedBar]]:
    patch = load_patch("default")
    return patch, compose(tiny_trio, patch, 32)


def test_notes_start_within_their_bar(song32) -> None:
    _, bars = song32
    for index, bar in enumerate(bars):
        assert bar.index == index
        assert set(bar.parts) == set(PARTS)
        for part, notes in bar.parts.items():
            for note in notes:
                assert 0 <= note.start < STEPS_PER_BAR, (index, part, note)
                assert note.end > note.start
                assert 1 <= note.velocity <= 127


def test_the_song_is_not_empty(song32) -> None:
    _, bars = song32
    for part in PARTS:
        assert sum(len(b.parts[part]) for b in bars) >= 16, part


def test_melody_and_bass_sit_in_their_registers(song32) -> None:
    _, bars = song32
    for part, (low, high) in (("melody", MELODY_RANGE), ("bass", BASS_RANGE)):
        pitches = [n.pitch for b in bars for n in b.parts[part]]
        assert pitches and low <= min(pitches) and max(pitches) <= high, part


def test_drums_play_drum_pitches(song32) -> None:
    _, bars = song32
    kit = {pitches[0] for pitches in DRUM_PITCHES}
    assert {n.pitch for b in bars for n in b.parts["drums"]} <= kit


def test_pitched_parts_are_in_key(song32) -> None:
    patch, bars = song32
    notes = [n for b in bars for p in ("melody", "bass") for n in b.parts[p]]
    assert in_key_ratio(notes, KEY_NAMES[patch.song.key], patch.song.mode) >= 0.9


def test_every_bar_has_chords(song32) -> None:
    patch, bars = song32
    tonic = KEY_NAMES[patch.song.key]
    for bar in bars:
        chords = bar.parts[CHORDS]
        assert len(chords) >= 3, bar.index  # at least a triad
        assert in_key_ratio(list(chords), tonic, patch.song.mode) == 1.0
        assert {n.start for n in chords} <= {0, 8}  # one or two chords a bar


def test_key_shift_is_fixed_within_a_section_pass(tiny_trio) -> None:
    patch = load_patch("default")
    conductor = Conductor(patch, tiny_trio.z_size)
    composer = Composer(tiny_trio, patch)
    shifts: dict[tuple[str, int], set[int]] = {}
    for _ in range(24):
        plan = conductor.plan()
        arranged = composer.realize(plan)
        assert -6 <= arranged.key_shift <= 5
        key = (plan.position.section, plan.position.pass_number)
        shifts.setdefault(key, set()).add(arranged.key_shift)
    assert all(len(s) == 1 for s in shifts.values())


def test_realize_is_a_pure_function_of_the_plan(tiny_trio) -> None:
    patch = load_patch("default")
    conductor = Conductor(patch, tiny_trio.z_size, seed=5)
    all_plans = [conductor.plan() for _ in range(14)]
    in_order = [Composer(tiny_trio, patch).realize(p) for p in all_plans]
    fresh = Composer(tiny_trio, patch)  # e.g. in a worker process, asked out of order
    backwards = [fresh.realize(p) for p in reversed(all_plans)][::-1]
    assert in_order == backwards


@pytest.mark.parametrize("key", ["D major", "F# minor", "Bb major", "C# minor"])
def test_other_keys_stay_in_key_and_register(tiny_trio, key: str) -> None:
    tonic, mode = key.split()
    patch = parse_patch(f'[song]\nkey = "{tonic}"\nmode = "{mode}"\n')
    bars = compose(tiny_trio, patch, 8)
    pitched = [n for b in bars for p in ("melody", "bass") for n in b.parts[p]]
    assert in_key_ratio(pitched, KEY_NAMES[tonic], mode) >= 0.9
    for part, (low, high) in (("melody", MELODY_RANGE), ("bass", BASS_RANGE)):
        pitches = [n.pitch for b in bars for n in b.parts[part]]
        assert low <= min(pitches) and max(pitches) <= high, (part, min(pitches),
                                                              max(pitches))


def test_part_settings_shape_the_notes(tiny_trio) -> None:
    base = load_patch("default")
    parts = base.parts
    patch = dataclasses.replace(base, parts=dataclasses.replace(
        parts, chords=dataclasses.replace(parts.chords, octave=-1),
        drums=dataclasses.replace(parts.drums, level=0.5, octave=2)))
    plain, shaped = compose(tiny_trio, base, 4), compose(tiny_trio, patch, 4)
    for a, b in zip(plain, shaped, strict=True):
        assert [n.pitch - 12 for n in a.parts[CHORDS]] == [n.pitch for n in b.parts[CHORDS]]
        assert [n.pitch for n in a.parts["drums"]] == [n.pitch for n in b.parts["drums"]]
        # the level is the channel volume, never the velocities (issue: they compounded)
        assert [n.velocity for n in a.parts["drums"]] == [n.velocity for n in b.parts["drums"]]


def test_a_model_without_drums_is_refused(tiny_mel_dir: Path, tmp_path: Path,
                                          capsys) -> None:
    melody_only = load_model("tiny_mel", model_dir=tiny_mel_dir)
    with pytest.raises(ValueError, match=r"trio model \(melody, bass, drums\); missing "
                                         r"\['bass', 'drums'\]"):
        Composer(melody_only, load_patch("default"))
    with pytest.raises(SystemExit) as info:
        main(["render", "-o", str(tmp_path), "--bars", "2", "--no-audio", "--model",
              "tiny_mel", "--model-dir", str(tiny_mel_dir)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("encore: error: model tiny_mel has parts ('melody',); the song "
                          "needs a trio model")
    assert "Traceback" not in err
    assert not (tmp_path / "song.mid").exists()


def _drum_rows(bars: list[ArrangedBar]) -> list[tuple]:
    return [tuple((n.start, n.pitch) for n in b.parts["drums"]) for b in bars]


def test_a_section_keeps_its_groove_and_fills_into_the_next(tiny_trio) -> None:
    """groove = "section": every bar of a section pass plays one groove (the first bar of
    its anchor's drum phrase) up to its last beat; the end of the inner 4-bar phrase varies
    that beat, and the section's last bar ends in the strongest fill among the model's
    decodes of its z, over the groove's kick. "bar" plays the walk's own bars."""
    from engine.music.encoding import PITCH_TO_DRUM
    from engine.music.groove import FILL_FROM, choose_fill, fill_strength

    section = load_patch("default")  # intro 4, verse 8, chorus 8, ...
    per_bar = dataclasses.replace(section, walk=dataclasses.replace(section.walk, groove="bar"))
    conductor = Conductor(section, tiny_trio.z_size)
    composer = Composer(tiny_trio, section)
    plans = [conductor.plan() for _ in range(20)]
    grooved = _drum_rows([composer.realize(p) for p in plans])
    own = _drum_rows(compose(tiny_trio, per_bar, 20))
    verse = range(4, 12)
    groove = grooved[4]
    assert all(grooved[b] == groove for b in (5, 6, 8, 9, 10))
    assert [own[b] for b in verse[:3]] != [own[b + 4] for b in verse[:3]]  # the walk's bars
    for bar in (7, 11):  # the phrase's end and the section's last bar
        assert [x for x in grooved[bar] if x[0] < FILL_FROM] == [
            x for x in groove if x[0] < FILL_FROM]
        kicks = {x for x in groove if x[0] >= FILL_FROM and PITCH_TO_DRUM[x[1]] == 0}
        assert kicks <= set(grooved[bar])
        assert all(PITCH_TO_DRUM[p] in (0, 1, 4, 5, 6, 7) for s, p in grooved[bar]
                   if s >= FILL_FROM)
    plan = plans[11]
    decoded = tiny_trio.decode(np.repeat(plan.z[None], 16, axis=0), plan.temperature,
                               plan.noise_seed)
    candidates = [decoded[k * 4 + 3].notes("drums") for k in range(16)]
    fill = choose_fill(candidates)
    assert fill_strength(fill) == max(map(fill_strength, candidates))
    strokes = {(n.start, n.pitch) for n in fill if n.start >= FILL_FROM
               and PITCH_TO_DRUM[n.pitch] in (1, 4, 5, 6, 7)}
    assert strokes <= set(grooved[11])


def test_the_third_bar_of_a_phrase_restates_its_first(tiny_trio) -> None:
    """[walk] motif: bar 3 of each 4-bar phrase decodes bar 1's point (moved ``motif`` of
    the way toward its own) with bar 1's noise, at bar 1's place in the decoded phrase;
    motif = 1 turns it off."""
    base = load_patch("default")  # intro 4, verse 8, ...

    def with_motif(value: float) -> list:
        patch = dataclasses.replace(base, walk=dataclasses.replace(base.walk, motif=value))
        return plans(patch, 12, z_size=tiny_trio.z_size)

    exact, varied, off = with_motif(0.0), with_motif(0.25), with_motif(1.0)
    assert [p.phrase_bar for p in off] == [-1] * 12
    for head, third in ((0, 2), (4, 6), (8, 10)):  # intro, and the verse's two phrases
        assert exact[third].phrase_bar == varied[third].phrase_bar == 0
        assert exact[third].noise_seed == exact[head].noise_seed != off[third].noise_seed
        np.testing.assert_allclose(exact[third].z, exact[head].z)
        to_head = np.linalg.norm(varied[third].z - varied[head].z)
        to_own = np.linalg.norm(varied[third].z - off[third].z)
        assert 0 < to_head < to_own
    assert all(p.phrase_bar == -1 for i, p in enumerate(exact) if i % 4 != 2)
    composer = Composer(tiny_trio, base)
    head, third = exact[4], exact[6]
    assert composer._decode_bar(head.z, head.temperature, head.noise_seed, 0) == (
        composer._decode_bar(third.z, third.temperature, third.noise_seed, third.phrase_bar))
