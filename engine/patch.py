"""Performance patches: a TOML file, read and validated into frozen dataclasses.

    patch = load_patch("patches/night_drive.toml")    # or load_patch("night_drive")
    patch.song.tempo, patch.form.sections, patch.parts.drums.channel
    patch.to_dict()                                   # plain dict, for the event log
    print(describe_schema())                          # every key: type, default, range, help

Every key is optional; a key left out keeps its default, so ``parse_patch("")`` is the
default patch. The schema is the dataclasses below and nothing else: one generic reader
walks their fields and type hints (bool, int, float, str, ``Literal`` choices,
``tuple[str, ...]``, ``Mapping[str, X]``, nested dataclasses) and the metadata that
:func:`setting` attaches (range, unit, help). To add a section (midi, osc, voice, lyrics),
write a frozen dataclass of settings and give :class:`Patch` a field for it; reading,
error messages, :meth:`Patch.to_dict` and :func:`describe_schema` follow. A section may
define ``problems()`` for rules that span its keys (see :class:`Form`).

All the problems in a file are reported together, one per line, each naming the key and
saying how to fix it, so a musician fixes the file in one go::

    patches/x.toml: [walk] temperature = 7.0 is out of range 0.0..2.0; set it between 0.0 and 2.0
    patches/x.toml: unknown key [walk] temprature; did you mean temperature?
    patches/x.toml: [song] tempo must be a number, got "fast"; write e.g. tempo = 112.0

``python -m engine.patch [PATCH ...]`` checks patch files; ``--schema`` prints the reference
and ``--readme patches/README.md`` rewrites the reference in that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import math
import os
import re
import sys
import tomllib
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

from engine.osc_settings import OscSettings
from engine.shipped import shipped_folder
from engine.untrusted import MissingFileError, UntrustedFileError, read_text
from engine.web_settings import WebSettings

__all__ = [
    "Audio",
    "Form",
    "Humanize",
    "OtherForm",
    "Part",
    "Parts",
    "Patch",
    "PatchError",
    "Song",
    "Walk",
    "build_patch",
    "default_patch_path",
    "describe_schema",
    "load_patch",
    "parse_patch",
    "patches_dir",
]

PATCHES_DIR = shipped_folder("patches")
MAX_PATCH_BYTES = 1 << 20
"""A patch is a few kilobytes of TOML; a file over 1 MiB is refused unread (a wrong file, and
one that would take seconds to parse and could report a million problems)."""
MAX_KEY_DOTS = 32
"""More dots than this in one key or table name is refused before TOML parsing: a patch's
keys are at most three deep, and tomllib takes time quadratic in a dotted key's length
(a 1 MiB ``[a.a.a...]`` header takes minutes)."""
MAX_SHOWN_PROBLEMS = 50
"""PatchError's message lists this many problems, then says how many more there are."""
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
)

NoteName = Literal[
    "C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A", "A#", "Bb", "B"
]
Mode = Literal["major", "minor"]
Groove = Literal["section", "bar"]
SampleRate = Literal[44100, 48000]
LinkQuantum = Literal[1, 2, 4]


class PatchError(ValueError):
    """A patch that cannot be used. ``problems`` holds one line per problem found."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{source}: {p}" for p in self.problems[:MAX_SHOWN_PROBLEMS]]
        if len(self.problems) > MAX_SHOWN_PROBLEMS:
            lines.append(f"{source}: ... and {len(self.problems) - MAX_SHOWN_PROBLEMS} more "
                         "problems")
        super().__init__("\n".join(lines))


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    range: tuple[float | None, float | None] | None = None,
    unit: str = "",
    identifier: bool = False,
    path: bool = False,
    missing_hint: str = "",
    default_text: str = "",
) -> Any:
    """A dataclass field carrying what the reader and :func:`describe_schema` need.

    ``range`` is inclusive, ``None`` for an open end; on a list or table it applies to
    each item. ``identifier`` requires names (section names, table keys) to be Python-style
    identifiers. ``path`` expands ``~``; a ``missing_hint`` makes the path a file that must
    exist when the patch is loaded with ``validate_files=True``. ``default_text`` replaces
    the default in the docs (for defaults that depend on the machine).
    """
    metadata = {"help": help, "range": range, "unit": unit, "identifier": identifier,
                "path": path, "missing_hint": missing_hint, "default_text": default_text}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _default_soundfont() -> str:
    for candidate in SOUNDFONT_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return SOUNDFONT_CANDIDATES[-1]


# ---- the schema ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Song:
    """The song: title, tempo, key, the model that plays it and how long it runs."""

    title: str = setting("Encore", "Shown on the tablet and written into the event log.")
    tempo: float = setting(112.0, "Beats per minute.", range=(40.0, 240.0), unit="BPM")
    key: NoteName = setting("C", "Key note (tonic) the music is played in.")
    mode: Mode = setting("major", "Major or minor scale.")
    seed: int = setting(
        0, "Seed of all the randomness: the same patch and seed play the same song.",
        range=(0, None))
    model: str = setting(
        "trio_band", "Model in models_onnx/ that writes melody, bass and drums (trio_4bar: "
        "the first one, hymn-like).")
    bars: int = setting(
        0, "Bars to play, then stop; 0 plays on until stopped (encore render takes --bars).",
        range=(0, None), unit="bars")


@dataclass(frozen=True, slots=True)
class Walk:
    """How the latent walk moves: each bar is decoded from a point that drifts a little."""

    temperature: float = setting(
        0.9, "Decoding temperature: 0 always plays the likeliest notes, higher is looser "
        "and more surprising.", range=(0.0, 2.0))
    step_size: float = setting(
        0.12, "Size of one bar's drift step, as a fraction of the prior's radius sqrt(d) "
        "(d = the latent size).", range=(0.0, 1.0))
    wander: float = setting(
        0.3, "Balance between staying near the section's anchor (0) and wandering away "
        "from it (1).", range=(0.0, 1.0))
    glide_bars: int = setting(
        2, "Bars a transition takes to glide from one section's anchor to the next.",
        range=(1, 16), unit="bars")
    anchor_drift: float = setting(
        0.05, "How far a section's anchor moves each time the form comes round, so repeats "
        "vary (radians a pass, tethered).", range=(0.0, 0.5))
    motif: float = setting(
        1.0, "Motifs: the third bar of each 4-bar phrase restates its first, decoded from "
        "the first bar's point moved this far toward its own (0 = the same bar again, 0.25 = "
        "a varied restatement, 1 = no restatement: every bar its own). Off by default: live, "
        "with it on, a live set left notes hanging on a MIDI device that was unplugged and "
        "came back (tests/live/test_show.py), not yet understood.",
        range=(0.0, 1.0))
    groove: Groove = setting(
        "section", "Drums: \"section\" keeps one groove (the section anchor's) through a "
        "section, varies the last beat of each 4-bar phrase and ends the section with a fill "
        "chosen from the model's decodes; \"bar\" decodes them with each bar's notes.")


_DEFAULT_LENGTHS = {"intro": 4, "verse": 8, "chorus": 8, "bridge": 8, "breakdown": 4,
                    "outro": 4, "solo": 8, "pre_chorus": 4}


@dataclass(frozen=True, slots=True)
class OtherForm:
    """Another form a set may switch to (``/encore/form <name>``): its sections in order and
    where it loops; the section lengths are those of ``[form.lengths]``."""

    sections: tuple[str, ...] = setting(
        (), "Section names in playing order, each with a length under [form.lengths].",
        identifier=True)
    loop_from: int = setting(
        0, "Index in sections where this form restarts after its end.", range=(0, None))


@dataclass(frozen=True, slots=True)
class Form:
    """The song form: sections in order, where it loops, and each section's length. A set
    starts with it; [form.others.<name>] tables add forms a tablet switches to with
    /encore/form <name> (at the next section boundary)."""

    name: str = setting(
        "main", "This form's name, for /encore/form (switching back to it).", identifier=True)
    sections: tuple[str, ...] = setting(
        ("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
        "Section names in playing order; any names (letters, digits, _), each with a length.",
        identifier=True)
    loop_from: int = setting(
        1, "Index in sections (0 = the first) where the form restarts after its end; 1 "
        "skips the intro on repeats.", range=(0, None))
    lengths: Mapping[str, int] = setting(
        help="Bars in each section, by name. Merged with the defaults: name only the "
        "sections you change or add.", factory=lambda: types.MappingProxyType(
            dict(_DEFAULT_LENGTHS)), range=(1, 64), unit="bars", identifier=True)
    others: Mapping[str, OtherForm] = setting(
        help="More forms by name, as [form.others.<name>] tables with sections and "
        "loop_from; /encore/form <name> switches to one at the next section boundary.",
        factory=lambda: types.MappingProxyType({}), identifier=True)

    def problems(self) -> Iterator[tuple[str, str]]:
        """Rules across keys, as (key, what is wrong and how to fix it)."""
        yield from self._form_problems("", self.sections, self.loop_from)
        for name, other in self.others.items():
            if name == self.name:
                yield f"others.{name}", (f'has the name of the main form (name = "{name}"); '
                                         "rename one of them")
            yield from self._form_problems(f"others.{name}.", other.sections, other.loop_from)

    def _form_problems(self, key: str, sections: tuple[str, ...], loop_from: int
                       ) -> Iterator[tuple[str, str]]:
        n = len(sections)
        if n == 0:
            yield f"{key}sections", ('is empty; list at least one, e.g. sections = ["verse", '
                                     '"chorus"]')
        elif loop_from >= n:
            yield f"{key}loop_from", (f"= {loop_from} points past the last of the {n} "
                                      f"sections; set it between 0 and {n - 1}")
        for name in dict.fromkeys(sections):
            if name not in self.lengths:
                yield f"{key}sections", (f"uses {_show(name)}, which has no length; add "
                                         f"{_key(name)} = 8 under [form.lengths]")

    def named(self) -> dict[str, tuple[tuple[str, ...], int]]:
        """Every form by name, the main one first: name -> (sections, loop_from)."""
        return {self.name: (self.sections, self.loop_from)} | {
            name: (other.sections, other.loop_from) for name, other in self.others.items()}


@dataclass(frozen=True, slots=True)
class Part:
    """One instrument part: where its notes go and how it sounds."""

    program: int = setting(
        0, "General MIDI program, counted from 0 (0 piano, 33 fingered bass, 80 square "
        "lead); on the drum channel it picks the kit.", range=(0, 127))
    channel: int = setting(
        1, "MIDI channel; 10 is the General MIDI drum channel.", range=(1, 16))
    velocity: int = setting(
        100, "How hard notes are played (MIDI velocity) before humanizing.", range=(1, 127))
    level: float = setting(
        1.0, "Mix level: the channel volume (CC 7; 1.0 is the GM default 100), what the "
        "tablet's fader moves; 0 is silent. Velocities are left alone.", range=(0.0, 1.0))
    mute: bool = setting(False, "Silence the part (it is still generated, so unmuting is "
                         "seamless).")
    octave: int = setting(0, "Transposition in octaves (not applied to drums).",
                          range=(-3, 3))
    port: str = setting(
        "", 'MIDI output port, any part of its name (e.g. "USB MIDI"); "" plays the part '
        "on the built-in synth only.")
    gate: float = setting(
        1.0, "Share of each note's written length the part sounds (1 = as written; 0.5 = "
        "detached, as band leads play); at least a 16th. The singer sings the written "
        "lengths.", range=(0.1, 1.0))
    rest_in: tuple[str, ...] = setting(
        (), 'Sections this part sits out, e.g. ["intro", "outro"] for a lead that enters '
        "with the verse; it is still composed (the chords and the singer follow it).",
        identifier=True)


@dataclass(frozen=True, slots=True)
class Parts:
    """The parts, each its own table. Parts not named keep their defaults."""

    item: ClassVar[str] = "part"

    melody: Part = setting(help="The lead line.", factory=lambda: Part(
        program=80, channel=1, gate=0.5, rest_in=("intro", "outro")))
    bass: Part = setting(help="The bass line.", factory=lambda: Part(program=33, channel=2))
    drums: Part = setting(help="The drum kit.", factory=lambda: Part(program=0, channel=10))
    chords: Part = setting(help="Sustained chords under the melody.",
                           factory=lambda: Part(program=89, channel=3, velocity=80))

    def items(self) -> tuple[tuple[str, Part], ...]:
        return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))


@dataclass(frozen=True, slots=True)
class Humanize:
    """Small random variations that keep the machine from sounding mechanical."""

    timing_ms: float = setting(6.0, "How far notes are nudged off the grid at random.",
                               range=(0.0, 50.0), unit="ms")
    velocity: int = setting(8, "How far note velocities are varied at random.",
                            range=(0, 40))
    seed: int = setting(0, "Seed of the humanizing randomness.", range=(0, None))


@dataclass(frozen=True, slots=True)
class Audio:
    """The built-in synth (FluidSynth) and the audio output."""

    soundfont: str = setting(
        help="General MIDI soundfont (.sf2) the built-in synth plays; ~ is expanded.",
        factory=_default_soundfont, path=True,
        missing_hint="apt-get install timgm6mb-soundfont or set [audio] soundfont to a "
        ".sf2 file you have",
        default_text="TimGM6mb.sf2 if installed, else FluidR3_GM.sf2, in /usr/share/sounds/sf2/")
    sample_rate: SampleRate = setting(44100, "Audio sample rate.", unit="Hz")
    gain: float = setting(0.8, "Output gain of the built-in synth.", range=(0.0, 2.0))
    reverb: bool = setting(True, "Reverb on the built-in synth.")


MidiBackend = Literal["auto", "jack", "alsa", "coremidi", "winmm", "virtual", "memory"]


@dataclass(frozen=True, slots=True)
class Midi:
    """MIDI out to hardware synths and drum machines (parts name their port in [parts.*])."""

    backend: MidiBackend = setting(
        "auto", 'Where MIDI ports are looked up: "auto" (JACK when it runs, else the '
        'platform\'s: ALSA, CoreMIDI, Windows), a named one, "virtual" (create ports others '
        'connect to) or "memory" (send nowhere: a dry run).')
    clock_out: str = setting(
        "", "Send MIDI clock (24 a beat, start/stop, song position) to the output whose name "
        'contains this text; "" sends none.')
    clock_in: str = setting(
        "", "Follow the MIDI clock arriving at the input whose name contains this text (the "
        'tempo changes on the next bar line); "" follows none.')
    latency_ms: Mapping[str, float] = setting(
        help="Per-output latency offsets in ms: notes for an output whose name contains the "
        "key are sent that much earlier (negative: later), e.g. {\"USB MIDI\" = 4.0}.",
        factory=dict, range=(-200.0, 200.0))


@dataclass(frozen=True, slots=True)
class Live:
    """The live show: audio output and how far ahead the music is made."""

    audio_device: str = setting(
        "", 'Audio output whose name contains this text (see `encore devices`); "" is the '
        "system's default.")
    block_size: int = setting(256, "Audio block size in frames: smaller is less latency, "
                              "more risk of dropouts.", range=(32, 4096))
    lookahead_bars: int = setting(1, "Bars generated ahead of the music.", range=(1, 4))
    internal_synth: bool = setting(
        True, "Play parts with no port on the built-in synth through the audio output.")
    link: bool = setting(
        False, "Join an Ableton Link session (tempo and bar phase). Needs the optional 'link' "
        "extra: pip install 'encore-engine[link]' (aalink, GPL-3.0; Link is GPL-2.0+).")
    link_quantum: LinkQuantum = setting(
        4, "Link: the beats whose phase lines up with the session (4: bar lines, 2: half "
        "bars, 1: beats only).", unit="beats")
    link_wait_s: float = setting(
        1.0, "Link: how long to wait for peers before the first downbeat (none found: "
        "this engine starts the session at the patch's tempo).", range=(0.0, 10.0), unit="s")
    link_start_stop: bool = setting(
        False, "Link: share start and stop with the session (the set starts the session "
        "playing, and ends when another app stops it).")


LyricsSource = Literal["markov", "gpt2", "off"]


@dataclass(frozen=True, slots=True)
class Lyrics:
    """The words: who writes them, about what, where they are sung and how they rhyme."""

    source: LyricsSource = setting(
        "gpt2", 'Who writes the lines: "gpt2" (the GPT-2 model, ONNX), "markov" (the fast '
        'word Markov model) or "off" (an instrumental set).')
    model: str = setting(
        "", 'The lyrics model: a path or a name in models_onnx/ (a GPT-2 folder written by '
        '`encore convert gpt2`, or a Markov .json.gz); "" is the shipped one for the source.')
    theme: str = setting(
        "", 'A word or short prompt the lines are about, e.g. "night" ("" lets the model '
        "roam); the tablet can change it.")
    rhyme_scheme: str = setting(
        "AABB", "Which lines of a stanza rhyme, a letter a line, repeating (AABB, ABAB, "
        'ABCB; X marks a line that need not rhyme; "" rhymes nothing).')
    sections: tuple[str, ...] = setting(
        ("verse", "chorus", "bridge"), "Sections that are sung; the others are instrumental.",
        identifier=True)
    chorus_sections: tuple[str, ...] = setting(
        ("chorus",), "Sections whose words are written once and sung again each time they "
        "come back.", identifier=True)
    phrase_bars: int = setting(2, "Bars a sung line spans.", range=(1, 8), unit="bars")
    candidates: int = setting(
        8, "Lines proposed per phrase (more fit better and cost more time).", range=(1, 64))
    temperature: float = setting(0.9, "GPT-2 sampling temperature.", range=(0.05, 2.0))
    top_k: int = setting(40, "GPT-2: sample among the k likeliest tokens (0 = all).",
                         range=(0, None))
    top_p: float = setting(0.95, "GPT-2: nucleus sampling mass.", range=(0.05, 1.0))
    repetition_penalty: float = setting(
        1.2, "GPT-2: discourages tokens already in the line (1 = none).", range=(1.0, 3.0))

    def problems(self) -> Iterator[tuple[str, str]]:
        scheme = self.rhyme_scheme
        if scheme and not all(ch.isalpha() for ch in scheme):
            yield "rhyme_scheme", (f'= "{scheme}" has characters other than letters; write it '
                                   'as letters, e.g. "AABB" or "ABXB"')


@dataclass(frozen=True, slots=True)
class Voice:
    """The singer: who sings the lyrics, how loud, and how hard it may work."""

    singer: str = setting(
        "auto", 'Who sings: "auto" (the best voice this machine has: a DiffSinger voicebank '
        'in models_onnx/ if one is there, else the fallback), "fallback" (espeak-ng speech '
        're-pitched by the WORLD vocoder), a DiffSinger voicebank folder (path or name in '
        'models_onnx/), or "off".')
    level: float = setting(0.8, "Vocal level in the mix.", range=(0.0, 1.0))
    mute: bool = setting(False, "Silence the voice (phrases are still written and logged).")
    steps: int = setting(
        0, "Diffusion steps of a DiffSinger voice; 0 measures the machine at start-up and "
        "picks what it can sing in time.", range=(0, 100))
    speaker: str = setting("", 'Speaker of a multi-speaker voicebank ("" = its first).')
    transpose: int = setting(
        0, "Semitones the voice sings away from the melody (e.g. -12 for a low voice).",
        range=(-24, 24))


@dataclass(frozen=True, slots=True)
class Patch:
    """A whole performance patch: one field per [section] of the TOML file."""

    item: ClassVar[str] = "section"

    song: Song = setting(factory=Song)
    walk: Walk = setting(factory=Walk)
    form: Form = setting(factory=Form)
    parts: Parts = setting(factory=Parts)
    humanize: Humanize = setting(factory=Humanize)
    audio: Audio = setting(factory=Audio)
    midi: Midi = setting(factory=Midi)
    live: Live = setting(factory=Live)
    lyrics: Lyrics = setting(factory=Lyrics)
    voice: Voice = setting(factory=Voice)
    osc: OscSettings = setting(factory=OscSettings)
    web: WebSettings = setting(factory=WebSettings)

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and scalars (JSON and TOML ready); ``build_patch`` reads it back."""
        return _plain(self)


# ---- reading ------------------------------------------------------------------------------
def patches_dir() -> Path:
    """The repository's ``patches/`` folder (next to the ``engine`` package)."""
    return PATCHES_DIR


def default_patch_path() -> Path:
    return PATCHES_DIR / "default.toml"


def load_patch(path: str | PathLike[str], *, validate_files: bool = False) -> Patch:
    """Read a patch file. A bare name such as ``"night_drive"`` means a shipped patch.

    With ``validate_files`` the files a patch names (the soundfont) must exist. Every
    problem, a missing or unreadable file included, raises :class:`PatchError`.
    """
    source = os.fspath(path)
    p = Path(os.path.expanduser(source))
    if not p.exists() and p.suffix == "" and len(p.parts) == 1:
        shipped = PATCHES_DIR / f"{p.name}.toml"
        if shipped.is_file():
            p, source = shipped, str(shipped)
    try:
        text = read_text(p, MAX_PATCH_BYTES)
    except MissingFileError:
        names = ", ".join(sorted(q.stem for q in PATCHES_DIR.glob("*.toml"))) or "none"
        raise PatchError(source, [f"no such patch file; the shipped patches ({names}) are "
                                  f"in {PATCHES_DIR}"]) from None
    except UntrustedFileError as err:  # a folder, a FIFO, a device, too large, not UTF-8
        raise PatchError(source, [f"{err.what}; give a patch file: a few kilobytes of TOML "
                                  "text, saved as UTF-8"]) from None
    return parse_patch(text, source=source, validate_files=validate_files)


def parse_patch(text: str, source: str = "<string>", *, validate_files: bool = False) -> Patch:
    """Read a patch from TOML text; ``source`` names it in error messages."""
    for number, line in enumerate(text.splitlines(), 1):
        head = line.split("#", 1)[0]
        if not head.lstrip().startswith("["):
            head = head.split("=", 1)[0]
        if head.count(".") > MAX_KEY_DOTS:
            raise PatchError(source, [f"line {number}: a key or table name of more than "
                                      f"{MAX_KEY_DOTS} dotted parts; a patch's keys are at "
                                      "most three deep, e.g. [parts.melody] program"])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PatchError(source, [f"is not valid TOML: {err}; check the quotes, brackets "
                                  "and = signs there"]) from None
    except RecursionError:
        raise PatchError(source, ["is not a patch: its arrays or tables nest too deeply for "
                                  "the TOML reader"]) from None
    except ValueError as err:  # tomllib: e.g. an integer of more than 4300 digits
        raise PatchError(source, [f"cannot be read as TOML: {err}"]) from None
    return build_patch(data, source, validate_files=validate_files)


def build_patch(data: Mapping[str, Any], source: str = "<dict>", *,
                validate_files: bool = False) -> Patch:
    """Validate a dict as ``tomllib`` returns it (or as ``Patch.to_dict`` writes it)."""
    reader = _Reader(validate_files)
    if not isinstance(data, Mapping):
        raise PatchError(source, [f"a patch must be a table of sections, got {_show(data)}"])
    patch = reader.section(Patch, data, Patch(), ())
    if reader.problems:
        raise PatchError(source, reader.problems)
    return patch


_BAD = object()  # a value that was refused; the default stays


class _Reader:
    """Walks a dataclass schema and a raw table side by side, collecting problems."""

    def __init__(self, validate_files: bool):
        self.validate_files = validate_files
        self.problems: list[str] = []

    def section(self, cls: type, raw: Any, base: Any, where: tuple[str, ...]) -> Any:
        if not isinstance(raw, Mapping):
            header = _header(where)
            self.problems.append(f"{header} must be a table, got {_show(raw)}; write it as "
                                 f"a {header} section with key = value lines under it")
            return base
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = _hints(cls)
        values = {}
        before = len(self.problems)
        for key, value in raw.items():
            f = fields.get(key)
            if f is None:
                self.problems.append(_unknown(cls, where, key))
                continue
            value = self.value(hints[key], value, f, getattr(base, key), where, key)
            if value is not _BAD:
                values[key] = value
        result = dataclasses.replace(base, **values)
        if len(self.problems) == before and hasattr(result, "problems"):
            for key, text in result.problems():
                self.problems.append(f"{_header(where)} {key} {text}")
        return result

    def value(self, hint: Any, raw: Any, f: dataclasses.Field, default: Any,
              where: tuple[str, ...], key: str) -> Any:
        if dataclasses.is_dataclass(hint):
            return self.section(hint, raw, default, (*where, key))
        origin, args = get_origin(hint), get_args(hint)
        if origin is tuple:
            if not isinstance(raw, list | tuple):
                self._wrong_type(hint, raw, f, where, key)
                return _BAD
            items = [self.scalar(args[0], item, f, where, f"{key}[{i}]")
                     for i, item in enumerate(raw)]
            return _BAD if _BAD in items else tuple(items)
        if origin in (dict, Mapping):
            if not isinstance(raw, Mapping):
                self._wrong_type(hint, raw, f, where, key)
                return _BAD
            merged = dict(default)
            ok = True
            for name, item in raw.items():
                if f.metadata["identifier"] and not self._is_name(name, (*where, key), None):
                    ok = False
                    continue
                if dataclasses.is_dataclass(args[1]):  # a table of tables: [form.others.x]
                    before = len(self.problems)
                    merged[name] = self.section(args[1], item, args[1](), (*where, key, name))
                    ok = ok and len(self.problems) == before
                    continue
                item = self.scalar(args[1], item, f, (*where, key), name)
                ok = ok and item is not _BAD
                merged[name] = item
            return types.MappingProxyType(merged) if ok else _BAD
        return self.scalar(hint, raw, f, where, key, example=default)

    def scalar(self, hint: Any, raw: Any, f: dataclasses.Field, where: tuple[str, ...],
               key: str, example: Any = _BAD) -> Any:
        head = f"{_header(where)} {_key(key)}" if where else _key(key)
        if get_origin(hint) is Literal:
            return self._choice(get_args(hint), raw, head)
        if not _is_type(hint, raw):
            self._wrong_type(hint, raw, f, where, key, example)
            return _BAD
        if hint is float:
            try:
                raw = float(raw)
            except OverflowError:  # an int too big for a float
                raw = math.inf if raw > 0 else -math.inf
            if not math.isfinite(raw):
                self.problems.append(f"{head} = {_show(raw)} must be a finite number"
                                     + _range_fix(f.metadata["range"]))
                return _BAD
        if hint in (int, float) and f.metadata["range"] is not None:
            lo, hi = f.metadata["range"]
            if (lo is not None and raw < lo) or (hi is not None and raw > hi):
                span = f" {lo!r}..{hi!r}" if lo is not None and hi is not None else ""
                self.problems.append(f"{head} = {_show(raw)} is out of range{span}"
                                     f"{_range_fix(f.metadata['range'])}")
                return _BAD
        if hint is str:
            if f.metadata["identifier"] and not self._is_name(raw, where, key):
                return _BAD
            if f.metadata["path"]:
                raw = os.path.expanduser(raw)
                if self.validate_files and f.metadata["missing_hint"] and not Path(raw).is_file():
                    self.problems.append(f"{head} = {json.dumps(raw)}: no such file; "
                                         f"{f.metadata['missing_hint']}")
                    return _BAD
        return raw

    def _choice(self, choices: tuple[Any, ...], raw: Any, head: str) -> Any:
        for choice in choices:
            if type(choice) is type(raw) and choice == raw:
                return choice
        listed = ", ".join(_show(c) for c in choices)
        message = f"{head} = {_show(raw)} must be one of {listed}"
        if isinstance(raw, str):
            words = [c for c in choices if isinstance(c, str)]
            same_case = [c for c in words if c.lower() == raw.lower()]
            close = same_case or difflib.get_close_matches(raw, words, n=1)
            if close:
                message += f"; did you mean {_show(close[0])}?"
        self.problems.append(message)
        return _BAD

    def _is_name(self, name: Any, where: tuple[str, ...], key: str | None) -> bool:
        if isinstance(name, str) and name.isidentifier():
            return True
        head = f"{_header(where)} {_key(key)} = " if key is not None else f"{_header(where)} "
        fix = re.sub(r"\W+", "_", str(name)).strip("_")
        fix = f' (e.g. "{fix}")' if fix.isidentifier() else ""
        self.problems.append(f"{head}{_show(name)} is not a name; use letters, digits and _, "
                             f"not starting with a digit{fix}")
        return False

    def _wrong_type(self, hint: Any, raw: Any, f: dataclasses.Field, where: tuple[str, ...],
                    key: str, example: Any = _BAD) -> None:
        head = f"{_header(where)} {_key(key)}" if where else _key(key)
        message = f"{head} must be {_type_noun(hint, f)}, got {_show(raw)}"
        if example is not _BAD:
            message += f"; write e.g. {_key(key)} = {_show(example)}"
        self.problems.append(message)


def _is_type(hint: Any, raw: Any) -> bool:
    if hint is bool:
        return isinstance(raw, bool)
    if hint is int:
        return isinstance(raw, int) and not isinstance(raw, bool)
    if hint is float:
        return isinstance(raw, int | float) and not isinstance(raw, bool)
    if hint is str:
        return isinstance(raw, str)
    raise TypeError(f"patch schema: no reader for type {hint!r}")


def _unknown(cls: type, where: tuple[str, ...], key: str) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    item = getattr(cls, "item", None)
    if item is not None:  # a table of tables: [song], [parts.melody] ...
        this = _header((*where, key))
        homes = _homes().get(key, [])
        if homes and not where:
            return f"{_key(key)} is outside any section; put it under {' or '.join(homes)}"
        close = difflib.get_close_matches(key, names, n=1) if isinstance(key, str) else []
        if close:
            return f"unknown {item} {this}; did you mean {_header((*where, close[0]))}?"
        known = ", ".join(_header((*where, n)) for n in names)
        return f"unknown {item} {this}; the {item}s are {known}"
    this = f"{_header(where)} {_key(key)}"
    close = difflib.get_close_matches(key, names, n=1) if isinstance(key, str) else []
    if close:
        return f"unknown key {this}; did you mean {close[0]}?"
    homes = _homes().get(key, [])
    if homes:
        return f"unknown key {this}; it belongs under {' or '.join(homes)}"
    return f"unknown key {this}; the keys here are {', '.join(names)}"


@functools.cache
def _homes() -> dict[str, list[str]]:
    """Key name -> the headers of the sections that have it, for misplaced keys."""
    homes: dict[str, list[str]] = {}

    def walk(cls: type, where: tuple[str, ...]) -> None:
        hints = _hints(cls)
        container = getattr(cls, "item", None) is not None and bool(where)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                if container:
                    walk(hint, (*where, "<name>"))
                    break  # every field of a container has the same type
                walk(hint, (*where, f.name))
            elif not homes.get(f.name) or _header(where) not in homes[f.name]:
                homes.setdefault(f.name, []).append(_header(where))

    walk(Patch, ())
    return homes


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _header(where: tuple[str, ...]) -> str:
    return "[" + ".".join(_key(k) for k in where) + "]"


def _key(key: Any) -> str:
    if isinstance(key, str) and len(key) <= 40 and re.fullmatch(r"[A-Za-z0-9_<>-]+(\[\d+\])?",
                                                                key):
        return key
    return _show(str(key))


def _show(value: Any, depth: int = 0) -> str:
    """A value as it would be written in TOML, shortened."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, Mapping):
        text = "a table" if value else "an empty table"
    elif isinstance(value, list | tuple):
        if depth >= 2:
            text = "[...]"
        else:
            text = "[" + ", ".join(_show(v, depth + 1) for v in value[:8])
            text += ", ...]" if len(value) > 8 else "]"
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _range_text(bounds: tuple[float | None, float | None]) -> str:
    lo, hi = bounds
    if lo is not None and hi is not None:
        return f"{lo!r}..{hi!r}"
    return f">= {lo!r}" if lo is not None else f"<= {hi!r}"


def _range_fix(bounds: tuple[float | None, float | None] | None) -> str:
    if bounds is None:
        return ""
    lo, hi = bounds
    if lo is not None and hi is not None:
        return f"; set it between {lo!r} and {hi!r}"
    return f"; set it to {lo!r} or more" if lo is not None else f"; set it to {hi!r} or less"


def _type_noun(hint: Any, f: dataclasses.Field | None = None) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(_show(c) for c in args)
    if origin is tuple:
        noun = "names" if f is not None and f.metadata["identifier"] else "strings"
        return f"a list of {noun}" if args[0] is str else f"a list of {_type_noun(args[0])}s"
    if origin in (dict, Mapping):
        return f"a table of name = {_type_noun(args[1]).removeprefix('a ')}"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {bool: "true or false", int: "a whole number", float: "a number",
            str: "a string (in quotes)"}[hint]


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


# ---- the reference ------------------------------------------------------------------------
def describe_schema() -> str:
    """Every key of a patch, with type, default, allowed values and help, as Markdown."""
    out: list[str] = []
    default = Patch()
    for f in dataclasses.fields(Patch):
        cls = _hints(Patch)[f.name]
        instance = getattr(default, f.name)
        if getattr(cls, "item", None) is not None:  # [parts.<name>]
            members = [(g.name, getattr(instance, g.name)) for g in dataclasses.fields(cls)]
            names = ", ".join(f"`{name}`" for name, _ in members)
            member_cls = _hints(cls)[members[0][0]]
            intro = f"{_doc(cls)} `<name>` is one of {names}."
            _describe(member_cls, members, f"[{f.name}.<name>]", intro, out)
        else:
            _describe(cls, [("", instance)], f"[{f.name}]", _doc(cls), out)
            for g in dataclasses.fields(cls):  # tables of tables: [form.others.<name>]
                args = get_args(_hints(cls)[g.name])
                if get_origin(_hints(cls)[g.name]) in (dict, Mapping) and \
                        dataclasses.is_dataclass(args[1]):
                    _describe(args[1], [("", args[1]())], f"[{f.name}.{g.name}.<name>]",
                              _doc(args[1]), out)
    return "\n".join(out).rstrip() + "\n"


def _describe(cls: type, members: list[tuple[str, Any]], header: str, intro: str,
              out: list[str]) -> None:
    out += [f"### `{header}`", "", intro, "",
            "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        meta = f.metadata
        if meta["default_text"]:
            default = meta["default_text"]
        else:
            values = [(name, getattr(inst, f.name)) for name, inst in members]
            if all(v == values[0][1] for _, v in values):
                default = _doc_value(values[0][1])
            else:
                default = ", ".join(f"{_doc_value(v)} ({name})" for name, v in values)
        allowed = []
        if get_origin(hint) is Literal:
            allowed.append(", ".join(f"`{_show(c)}`" for c in get_args(hint)))
        if meta["range"] is not None:
            allowed.append(_range_text(meta["range"]))
        if meta["unit"]:
            allowed.append(meta["unit"])
        if meta["range"] is not None and get_origin(hint) in (tuple, dict, Mapping):
            allowed.append("each")
        allowed = [" ".join(allowed)] if allowed else []
        if meta["identifier"]:
            allowed.append("names: letters, digits, _")
        kind = "choice" if get_origin(hint) is Literal else _type_noun(hint, f)
        kind = kind.removeprefix("a ").removesuffix(" (in quotes)")
        row = [f"`{f.name}`", kind, default, "; ".join(allowed), meta["help"]]
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    out.append("")


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def _doc_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} = {v}" for k, v in value.items())
    if isinstance(value, tuple):
        return ", ".join(value)
    return f"`{_show(value)}`"


SCHEMA_BEGIN = "<!-- schema:begin (generated by python -m engine.patch --readme) -->"
SCHEMA_END = "<!-- schema:end -->"


def _update_readme(path: Path) -> bool:
    """Replace the reference between the schema markers; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(SCHEMA_BEGIN) + len(SCHEMA_BEGIN), text.index(SCHEMA_END)
    new = text[:start] + "\n\n" + describe_schema() + "\n" + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.patch",
                                     description="Check patch files, or print the reference.")
    parser.add_argument("patches", nargs="*", help="patch files or shipped names "
                        "(default: the default patch)")
    parser.add_argument("--schema", action="store_true", help="print the key reference")
    parser.add_argument("--readme", type=Path, help="rewrite the reference in this file")
    parser.add_argument("--files", action="store_true", help="also check the soundfont exists")
    args = parser.parse_args(argv)
    if args.schema:
        sys.stdout.write(describe_schema())
        return 0
    if args.readme:
        print(f"{args.readme}: {'updated' if _update_readme(args.readme) else 'up to date'}")
        return 0
    status = 0
    for name in args.patches or [str(default_patch_path())]:
        try:
            patch = load_patch(name, validate_files=args.files)
        except PatchError as err:
            print(err, file=sys.stderr)
            status = 1
        else:
            song = patch.song
            print(f"{name}: ok ({song.title!r}, {song.tempo:g} BPM, {song.key} {song.mode}, "
                  f"{len(patch.form.sections)} sections)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
