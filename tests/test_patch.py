"""Patches: the shipped files load, defaults, every kind of error names its key, fuzzing."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.patch import (
    SCHEMA_BEGIN,
    SCHEMA_END,
    Patch,
    PatchError,
    build_patch,
    default_patch_path,
    describe_schema,
    load_patch,
    parse_patch,
    patches_dir,
)


def problems(text: str) -> tuple[str, ...]:
    with pytest.raises(PatchError) as info:
        parse_patch(text, source="patches/x.toml")
    return info.value.problems


def only_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# ---- the shipped patches --------------------------------------------------------------
def test_default_patch_is_the_defaults_written_out():
    patch = load_patch(default_patch_path(), validate_files=False)
    # the file names TimGM6mb; the built-in default falls back to FluidR3 without it
    audio = dataclasses.replace(patch.audio, soundfont=Patch().audio.soundfont)
    assert dataclasses.replace(patch, audio=audio) == Patch()
    assert patch.audio.soundfont == "/usr/share/sounds/sf2/TimGM6mb.sf2"


def test_night_drive_loads_by_name_with_its_own_character():
    patch = load_patch("night_drive")
    assert (patch.song.key, patch.song.mode, patch.song.tempo) == ("A", "minor", 92.0)
    assert {"breakdown", "solo"} <= set(patch.form.sections)
    assert patch.form.lengths["solo"] == 16 and patch.form.lengths["verse"] == 8  # merged
    assert patch.parts.melody.program == 4 and patch.parts.chords.program == 49
    assert patch.parts.drums.channel == 10  # not written: the drums' own default
    assert patch.walk.temperature < Patch().walk.temperature
    assert patch.walk.wander > Patch().walk.wander


def test_every_shipped_patch_loads():
    shipped = sorted(patches_dir().glob("*.toml"))
    assert {p.name for p in shipped} >= {"default.toml", "night_drive.toml"}
    for path in shipped:
        assert isinstance(load_patch(path), Patch)


def test_readme_carries_the_current_schema_reference():
    text = (patches_dir() / "README.md").read_text(encoding="utf-8")
    between = text[text.index(SCHEMA_BEGIN) + len(SCHEMA_BEGIN):text.index(SCHEMA_END)]
    assert between.strip() == describe_schema().strip(), (
        "run: .venv/bin/python -m engine.patch --readme patches/README.md")


# ---- defaults -------------------------------------------------------------------------
def test_empty_patch_is_the_defaults():
    patch = parse_patch("")
    assert patch == Patch()
    assert patch.song.tempo == 112.0 and patch.song.key == "C" and patch.song.mode == "major"
    assert patch.song.model == "trio_band" and patch.song.bars == 0
    assert (patch.walk.temperature, patch.walk.step_size, patch.walk.glide_bars) == (
        0.9, 0.12, 2)
    assert patch.form.sections[0] == "intro" and patch.form.loop_from == 1
    assert patch.form.lengths["verse"] == 8 and patch.form.lengths["breakdown"] == 4
    channels = {name: part.channel for name, part in patch.parts.items()}
    assert channels == {"melody": 1, "bass": 2, "drums": 10, "chords": 3}
    assert patch.parts.melody.program == 80 and patch.parts.chords.program == 89
    assert patch.humanize.timing_ms == 6.0 and patch.humanize.velocity == 8
    assert patch.audio.gain == 0.8 and patch.audio.reverb is True


def test_a_part_keeps_its_own_defaults_for_keys_not_written():
    patch = parse_patch("[parts.drums]\nvelocity = 90\n")
    assert patch.parts.drums.channel == 10 and patch.parts.drums.velocity == 90
    assert patch.parts.bass == Patch().parts.bass


def test_int_is_accepted_where_a_number_is_expected():
    patch = parse_patch("[song]\ntempo = 120\n")
    assert patch.song.tempo == 120.0 and isinstance(patch.song.tempo, float)


def test_tilde_in_the_soundfont_is_expanded():
    patch = parse_patch('[audio]\nsoundfont = "~/fonts/a.sf2"\n')
    assert patch.audio.soundfont == str(Path("~/fonts/a.sf2").expanduser())


# ---- each kind of error names its key -------------------------------------------------
def test_out_of_range_says_the_range_and_the_fix():
    assert only_problem("[walk]\ntemperature = 7.0\n") == (
        "[walk] temperature = 7.0 is out of range 0.0..2.0; set it between 0.0 and 2.0")
    assert "[song] seed = -1 is out of range; set it to 0 or more" == only_problem(
        "[song]\nseed = -1\n")
    assert "[form.lengths] verse = 100 is out of range 1..64" in only_problem(
        "[form.lengths]\nverse = 100\n")


def test_unknown_key_suggests_the_close_one():
    assert only_problem("[walk]\ntemprature = 0.3\n") == (
        "unknown key [walk] temprature; did you mean temperature?")
    assert "it belongs under [song]" in only_problem("[walk]\ntempo = 100\n")
    assert "did you mean [walk]?" in only_problem("[wlak]\ntemperature = 0.3\n")
    assert "put it under [song]" in only_problem("tempo = 100\n")


def test_wrong_type_says_what_arrived():
    message = only_problem('[song]\ntempo = "fast"\n')
    assert message.startswith('[song] tempo must be a number, got "fast"')
    assert "[song] title must be a string" in only_problem("[song]\ntitle = 3\n")
    assert "[form] sections must be a list" in only_problem('[form]\nsections = "verse"\n')
    assert "[audio] must be a table" in only_problem("audio = 3\n")


def test_bool_is_never_a_number():
    assert only_problem("[parts.drums]\nchannel = true\n").startswith(
        "[parts.drums] channel must be a whole number, got true")
    assert "tempo must be a number, got false" in only_problem("[song]\ntempo = false\n")


def test_a_float_is_not_a_whole_number():
    assert "[song] bars must be a whole number, got 2.5" in only_problem("[song]\nbars = 2.5\n")


def test_choices_are_enforced_and_suggested():
    assert 'did you mean "minor"?' in only_problem('[song]\nmode = "minr"\n')
    assert 'did you mean "F#"?' in only_problem('[song]\nkey = "f#"\n')
    assert "[audio] sample_rate = 22050 must be one of 44100, 48000" == only_problem(
        "[audio]\nsample_rate = 22050\n")


def test_section_without_length_is_named():
    message = only_problem('[form]\nsections = ["intro", "jam", "verse"]\n')
    assert '"jam"' in message and "[form.lengths]" in message
    parse_patch('[form]\nsections = ["intro", "jam"]\n[form.lengths]\njam = 12\n')


def test_section_names_must_be_names():
    message = only_problem('[form]\nsections = ["intro", "pre chorus"]\n')
    assert message.startswith('[form] sections[1] = "pre chorus" is not a name')
    assert '"pre_chorus"' in message


def test_loop_from_must_point_into_the_form():
    message = only_problem('[form]\nsections = ["verse", "chorus"]\nloop_from = 2\n')
    assert message.startswith("[form] loop_from = 2") and "between 0 and 1" in message
    parse_patch('[form]\nsections = ["verse", "chorus"]\nloop_from = 0\n')


def test_unknown_part_is_refused():
    message = only_problem("[parts.lead]\nprogram = 3\n")
    assert message.startswith("unknown part [parts.lead]")
    assert "[parts.melody]" in message


def test_missing_soundfont_only_fails_when_files_are_checked(tmp_path):
    text = f'[audio]\nsoundfont = "{tmp_path / "none.sf2"}"\n'
    parse_patch(text)
    with pytest.raises(PatchError, match="apt-get install timgm6mb-soundfont") as info:
        parse_patch(text, validate_files=True)
    assert str(tmp_path / "none.sf2") in str(info.value)


def test_file_level_problems(tmp_path):
    with pytest.raises(PatchError, match="not valid TOML"):
        parse_patch("[song\n")
    with pytest.raises(PatchError, match="no such patch file"):
        load_patch(tmp_path / "missing.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[song]\ntitle = "caf\xe9"\n')
    with pytest.raises(PatchError, match="UTF-8"):
        load_patch(bad)


def test_all_problems_are_reported_together_one_per_line(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('[song]\ntempo = "fast"\nmode = "majr"\n[walk]\ntemperature = 7.0\n'
                    "temprature = 1\n[parts.drums]\nchannel = true\n", encoding="utf-8")
    with pytest.raises(PatchError) as info:
        load_patch(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 5 == len(info.value.problems)
    assert all(line.startswith(f"{path}: ") for line in lines)
    for key in ("tempo", "mode", "temperature", "temprature", "channel"):
        assert any(key in line for line in lines), key
    assert isinstance(info.value, ValueError)


# ---- the dataclasses ------------------------------------------------------------------
def test_patches_are_frozen():
    patch = Patch()
    with pytest.raises(dataclasses.FrozenInstanceError):
        patch.song.tempo = 90.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        patch.song = patch.song  # type: ignore[misc]
    with pytest.raises(TypeError):
        patch.form.lengths["verse"] = 2  # type: ignore[index]


def dump_toml(data: dict, prefix: str = "") -> str:
    """A tiny TOML writer, enough for Patch.to_dict(): scalars, lists, nested tables."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(([f"[{prefix}]"] if prefix and lines else []) + lines) + "\n"
    for k, v in data.items():
        if isinstance(v, dict):
            out += dump_toml(v, f"{prefix}.{k}" if prefix else k)
    return out


@pytest.mark.parametrize("name", ["default", "night_drive"])
def test_to_dict_round_trips_through_toml_and_json(name):
    patch = load_patch(name)
    plain = patch.to_dict()
    assert json.loads(json.dumps(plain)) == plain
    assert parse_patch(dump_toml(plain)) == patch
    assert build_patch(plain) == patch


# ---- fuzzing --------------------------------------------------------------------------
def _schema_words() -> list[str]:
    words: set[str] = set()

    def walk(d: dict) -> None:
        for k, v in d.items():
            words.add(k)
            if isinstance(v, dict):
                walk(v)
    walk(Patch().to_dict())
    return sorted(words | {"lead", "jam", "wlak", "temprature", ""})


_keys = st.sampled_from(_schema_words()) | st.text(max_size=8)
_scalars = (st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
            | st.text(max_size=12) | st.sampled_from(["C", "minor", "verse", "solo"]))
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=20)


_tables = st.dictionaries(_keys, _values, max_size=6)
_patches = _tables | st.fixed_dictionaries(
    {}, optional={name: _tables for name in Patch().to_dict()})  # known sections, random inside


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_patches)
def test_random_tables_only_ever_raise_patch_error(data):
    try:
        patch = build_patch(data)
    except PatchError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)
    else:
        assert build_patch(patch.to_dict()) == patch


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet='[]="\n.#0123456789abcdeftruslongmwk_ ', max_size=60))
def test_random_text_only_ever_raises_patch_error(text):
    try:
        parse_patch(text)
    except PatchError:
        pass


def test_non_finite_numbers_are_refused():
    assert "finite" in only_problem("[song]\ntempo = nan\n")
    assert "finite" in only_problem("[humanize]\ntiming_ms = inf\n")
    with pytest.raises(PatchError, match="finite"):
        build_patch({"song": {"tempo": 10**400}})
    assert math.isfinite(parse_patch("[song]\ntempo = 60\n").song.tempo)


# ---- lyrics ------------------------------------------------------------------------------
def test_a_rhyme_scheme_with_other_than_letters_names_the_key_and_the_fix() -> None:
    problem = only_problem('[lyrics]\nrhyme_scheme = "A-B-"\n')
    assert "rhyme_scheme" in problem and "AABB" in problem


def test_an_unknown_lyricist_is_refused_with_the_choices() -> None:
    problem = only_problem('[lyrics]\nsource = "bard"\n')
    assert "source" in problem and "markov" in problem and "gpt2" in problem


def test_lyrics_settings_are_read() -> None:
    patch = parse_patch('[lyrics]\nsource = "markov"\ntheme = "rain"\nphrase_bars = 4\n')
    assert (patch.lyrics.source, patch.lyrics.theme, patch.lyrics.phrase_bars) == (
        "markov", "rain", 4)
