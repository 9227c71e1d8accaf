"""Several named forms in a patch: read and refused at the edge, chosen by the conductor
at the next section boundary, and a patch that only adds forms renders byte for byte as
before (the main form plays until a tablet chooses another)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine.patch import Patch, PatchError, build_patch, parse_patch
from engine.song.conductor import Conductor
from engine.song.render import RenderResult, render_song

FORMS = """
[form]
sections = ["intro", "verse", "chorus"]
loop_from = 1

[form.lengths]
intro = 1
verse = 2
chorus = 2
bridge = 3

[form.others.short]
sections = ["chorus", "bridge"]

[form.others.late]
sections = ["intro", "bridge", "verse"]
loop_from = 2
"""


def test_named_forms_are_read_into_the_patch_and_back() -> None:
    patch = parse_patch(FORMS)
    assert patch.form.name == "main"
    assert patch.form.named() == {"main": (("intro", "verse", "chorus"), 1),
                                  "short": (("chorus", "bridge"), 0),
                                  "late": (("intro", "bridge", "verse"), 2)}
    assert build_patch(patch.to_dict()) == patch
    assert parse_patch("").form.others == {}  # the single form is the default


@pytest.mark.parametrize(("text", "message"), [
    ('[form.others.s]\nsections = ["verse"]\nloop_from = 1',
     "[form] others.s.loop_from = 1 points past the last of the 1 sections; set it "
     "between 0 and 0"),
    ('[form.others.s]\nsections = ["coda"]',
     '[form] others.s.sections uses "coda", which has no length; add coda = 8 under '
     "[form.lengths]"),
    ("[form.others.s]\nloop_from = 0",
     "[form] others.s.sections is empty; list at least one"),
    ('[form.others.main]\nsections = ["verse"]',
     '[form] others.main has the name of the main form (name = "main"); rename one'),
    ('[form.others.s]\nsectons = ["verse"]',
     "unknown key [form.others.s] sectons; did you mean sections?"),
    ('[form.others."two words"]\nsections = ["verse"]',
     '[form.others] "two words" is not a name; use letters, digits and _'),
    ("[form]\nothers = 3", "[form] others must be a table of name = table"),
    ('[form.others]\ns = "verse"', "[form.others.s] must be a table"),
])
def test_bad_forms_are_refused_naming_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(PatchError) as refused:
        parse_patch(text, source="p.toml")
    assert f"p.toml: {message}" in str(refused.value)


def sections(conductor: Conductor, bars: int) -> list[str]:
    return [conductor.plan().position.section for _ in range(bars)]


def test_a_chosen_form_starts_at_the_next_section_boundary_from_its_first_section() -> None:
    conductor = Conductor(parse_patch(FORMS), z_size=8, seed=3)
    assert sections(conductor, 2) == ["intro", "verse"]  # bar 1 is the verse's first
    conductor.choose_form("short")
    assert conductor.form_pending == "short" and conductor.form_name == "main"
    plans = [conductor.plan() for _ in range(8)]
    # the verse plays out, then the short form from its top, looping from its loop_from
    assert [p.position.section for p in plans] == ["verse", "chorus", "chorus", "bridge",
                                                   "bridge", "bridge", "chorus", "chorus"]
    assert [p.form for p in plans] == ["main"] + ["short"] * 7
    assert plans[1].motion == "glide" and plans[1].position.pass_number == 0
    assert conductor.form_name == "short" and conductor.form_pending is None


def test_a_section_change_makes_the_switch_the_next_bar_and_the_main_form_comes_back() -> None:
    conductor = Conductor(parse_patch(FORMS), z_size=8, seed=3)
    sections(conductor, 2)
    conductor.choose_form("late")
    conductor.next_section()
    assert sections(conductor, 5) == ["intro", "bridge", "bridge", "bridge", "verse"]
    conductor.choose_form("main")
    assert sections(conductor, 3) == ["verse", "intro", "verse"]  # main from its top
    conductor.choose_form("main")  # the form playing: nothing changes
    assert conductor.form_pending is None
    assert sections(conductor, 3) == ["verse", "chorus", "chorus"]


def test_choosing_a_form_the_patch_lacks_names_the_forms_there_are() -> None:
    conductor = Conductor(parse_patch(FORMS), z_size=8, seed=3)
    with pytest.raises(KeyError, match=r"no form 'long' in this patch; the forms are main, "
                                       r"short, late \(add one as \[form.others.long\]\)"):
        conductor.choose_form("long")
    assert conductor.form_pending is None


def test_choosing_the_playing_form_cancels_a_waiting_switch() -> None:
    conductor = Conductor(parse_patch(FORMS), z_size=8, seed=3)
    sections(conductor, 2)
    conductor.choose_form("short")
    conductor.choose_form("main")
    assert conductor.form_pending is None
    assert sections(conductor, 4) == ["verse", "chorus", "chorus", "verse"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records(path: Path) -> list[dict]:
    out = [json.loads(line) for line in path.read_text().splitlines()]
    out[0]["patch"]["form"].pop("others")
    return out


def test_a_patch_that_adds_forms_renders_as_before(rendered: RenderResult, short_patch: Patch,
                                                   tiny_model_dir: Path, render_args,
                                                   tmp_path: Path) -> None:
    data = short_patch.to_dict()
    data["form"]["others"] = {"short": {"sections": ["chorus"], "loop_from": 0}}
    patch = build_patch(data)
    first = render_song(patch, tmp_path / "a", model_dir=tiny_model_dir, **render_args)
    again = render_song(patch, tmp_path / "b", model_dir=tiny_model_dir, audio=False,
                        **render_args)
    assert first.wav is not None
    before = rendered.midi.parent
    assert digest(first.midi) == digest(again.midi) == digest(before / "song.mid")
    assert digest(first.wav) == digest(before / "song.wav")
    assert (tmp_path / "a" / "song.jsonl").read_bytes() == \
        (tmp_path / "b" / "song.jsonl").read_bytes()
    assert records(tmp_path / "a" / "song.jsonl") == records(before / "song.jsonl")
