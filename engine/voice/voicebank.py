"""Read an OpenUtau-style DiffSinger voicebank folder, exactly as users download it.

    bank = load_voicebank("voicebanks/Alto")      # refuses what it cannot run, and says why
    bank.name, bank.acoustic.audio.sample_rate, bank.vocoder.name, bank.speakers_named()

The layout (paths in ``dsconfig.yaml`` are relative to the folder that holds it)::

    character.txt | character.yaml      optional: name=..., singer_type: diffsinger
    dsconfig.yaml                       acoustic graph, phonemes file, vocoder, flags, audio
    phonemes.json | phonemes.txt        name -> id (json) or line i = id i (txt)
    languages.json                      optional: language -> id (multilingual banks)
    dsdict.yaml | dsdict-<lang>.yaml    optional: symbols (with types) and word entries
    *.emb                               speaker embeddings: hidden_size float32 each
    dsdur/ dspitch/ dsvariance/         optional variance models, each with its dsconfig.yaml
    dsvocoder/                          optional: vocoder.yaml + model.onnx

When there is no ``dsvocoder/``, the vocoder is the package named by ``dsconfig.yaml``'s
``vocoder`` (OpenUtau installs those apart, in its Dependencies folder): a folder of that
name holding ``vocoder.yaml``, searched in ``vocoder_dirs``, the folders in the
``ENCORE_VOCODERS`` environment variable, the bank's folder and the folder beside it.

Defaults follow OpenUtau's for keys a file leaves out (44.1 kHz, hop 512, 128 mels, fmin 40,
fmax 16000, mel base "10", mel scale "slaney"). Older banks are read as OpenUtau reads them:

- the mel base may differ between the acoustic model and the vocoder (a bank from before
  ``mel_base`` existed means log10, today's vocoders want natural-log mels): the runner
  converts the mel (:attr:`AudioSettings.mel_base`, :func:`mel_base_factor`);
- ``use_continuous_acceleration: false`` (exporters before mid-2024) means ``max_depth`` is in
  1000-step diffusion units (``max_depth: 400`` is depth 0.4): :attr:`AcousticModel.max_depth`
  is always in 0..1 (the raw value is kept in ``max_depth_raw``). A config without the flag
  whose ``max_depth`` is at most 1 is read as 0..1 (no 1000-step model has a depth of one
  step);
- ``use_variable_depth`` falls back to ``use_shallow_diffusion`` when absent.

Keys this reader does not use (augmentation settings and the
like) are ignored: these files come from other tools. Everything else is checked here: a
bank that loads is one the runner can feed, short of what only its ONNX graphs can tell
(their inputs), which :class:`~engine.voice.diffsinger.DiffSingerRunner` checks.

No onnxruntime here, and no torch: this is plain file reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from engine.untrusted import (
    MiB,
    UntrustedFileError,
    excerpt,
    parse_yaml,
    read_bytes,
    read_text,
)

StrPath = str | PathLike[str]

VOCODERS_ENV = "ENCORE_VOCODERS"
"""Environment variable: folders (joined by ``os.pathsep``) that hold vocoder packages."""
CURVES = ("energy", "breathiness", "voicing", "tension")
"""Variance curves an acoustic model may take (``use_<curve>_embed``)."""
REST_PHONEMES = ("SP", "AP")
"""Silence and breath: every bank has them."""
VARIANCE_FOLDERS = {"dur": "dsdur", "pitch": "dspitch", "variance": "dsvariance"}


class VoicebankError(ValueError):
    """The bank cannot be run as it is; the message says what is wrong and how to fix it."""


class VoicebankFileError(VoicebankError, FileNotFoundError):
    """A file the bank needs is not there."""


# ---- small readers ------------------------------------------------------------------------

MAX_BANK_TEXT = 16 * MiB
"""The largest text file of a bank read (dictionaries of big banks are a few MB)."""
MAX_CHARACTER_TEXT = 1 * MiB
"""character.txt: a name, an author, a few lines of terms (a few hundred bytes)."""


def _read_text(path: Path) -> str:
    """A text file of the bank (at most :data:`MAX_BANK_TEXT`, no special files)."""
    if not path.exists():
        raise VoicebankFileError(f"{path}: no such file")
    try:
        return read_text(path, MAX_BANK_TEXT, "unpack the voicebank again, whole",
                         encoding="utf-8-sig")
    except UntrustedFileError as err:
        raise VoicebankError(str(err)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise VoicebankFileError(f"{path}: no such file")
    fix = "unpack the voicebank again, whole"
    try:
        data = parse_yaml(read_text(path, MAX_BANK_TEXT, fix, encoding="utf-8-sig"), path, fix)
    except UntrustedFileError as err:
        what = err.what if err.what.startswith("not readable YAML") else \
            f"not readable YAML ({err.what})"
        raise VoicebankError(f"{path}: {what} ({fix})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VoicebankError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


_KINDS: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), bool: (bool,),
                                        str: (str,)}


def _get(cfg: Mapping[str, Any], key: str, kind: type, default: Any, where: Path) -> Any:
    """``cfg[key]`` checked to be of ``kind`` (a YAML int passes as float), else ``default``."""
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool:
        ok = False
    else:
        ok = isinstance(value, _KINDS[kind])
    if not ok:
        raise VoicebankError(f"{where}: `{key}` must be {kind.__name__}, got {excerpt(value)}")
    return kind(value)


def _mel_base(value: Any, where: Path) -> str:
    text = str(value).strip().lower()
    if text in ("e", "natural", "ln"):
        return "e"
    if text in ("10", "10.0"):
        return "10"
    raise VoicebankError(f"{where}: `mel_base` must be 'e' or '10', got {excerpt(value)}")


def _relative_file(folder: Path, name: str, where: Path, key: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise VoicebankFileError(f"{where}: `{key}` names {excerpt(name)}, but {path} does "
                                 f"not exist; the bank is incomplete (unpack it again, whole)")
    return path


# ---- audio grid ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AudioSettings:
    """The audio grid and mel definition a model was trained on."""

    sample_rate: int = 44100
    hop_size: int = 512
    num_mel_bins: int = 128
    mel_fmin: float = 40.0
    mel_fmax: float = 16000.0
    mel_base: str = "10"
    """"e" (natural log mels, today's banks) or "10" (older banks)."""
    win_size: int | None = None
    fft_size: int | None = None
    mel_scale: str = "slaney"
    """"slaney" or "htk" (OpenUtau's default: slaney)."""

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop_size <= 0 or self.num_mel_bins <= 0:
            raise VoicebankError(f"sample_rate, hop_size and num_mel_bins must be positive: "
                                 f"{self}")
        if not 0 <= self.mel_fmin < self.mel_fmax:
            raise VoicebankError(f"mel_fmin must be below mel_fmax: {self}")
        if self.mel_scale not in ("slaney", "htk"):
            raise VoicebankError(f"mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")

    @property
    def frame_rate(self) -> float:
        """Frames per second (86.13 at 44.1 kHz, hop 512)."""
        return self.sample_rate / self.hop_size

    @classmethod
    def read(cls, cfg: Mapping[str, Any], where: Path) -> AudioSettings:
        base = cfg.get("mel_base")
        scale = cfg.get("mel_scale")
        return cls(
            sample_rate=_get(cfg, "sample_rate", int, 44100, where),
            hop_size=_get(cfg, "hop_size", int, 512, where),
            num_mel_bins=_get(cfg, "num_mel_bins", int, 128, where),
            mel_fmin=_get(cfg, "mel_fmin", float, 40.0, where),
            mel_fmax=_get(cfg, "mel_fmax", float, 16000.0, where),
            mel_base="10" if base is None else _mel_base(base, where),
            win_size=_get(cfg, "win_size", int, None, where),
            fft_size=_get(cfg, "fft_size", int, None, where),
            mel_scale="slaney" if scale is None else str(scale).strip().lower(),
        )

    def disagreements(self, other: AudioSettings) -> list[str]:
        """``"key: mine vs other"`` for each setting that differs and cannot be bridged
        (optional ones only when both state them; the mel base is converted instead, see
        :func:`mel_base_factor`)."""
        out = []
        for key in ("sample_rate", "hop_size", "num_mel_bins", "mel_fmin", "mel_fmax",
                    "win_size", "fft_size", "mel_scale"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine is None or theirs is None:
                continue
            if mine != theirs:
                out.append(f"{key}: {mine} vs {theirs}")
        return out


LN_10 = 2.302585092994046
"""ln(10): a log10 mel times this is a natural-log mel."""


def mel_base_factor(source: str, target: str) -> float:
    """What a mel in log base ``source`` is multiplied by to be in base ``target`` ("e" or
    "10"): log_e(x) = ln(10) * log10(x). 1.0 when they agree."""
    if source == target:
        return 1.0
    return LN_10 if (source, target) == ("10", "e") else 1.0 / LN_10


# ---- phonemes, languages, speakers, dictionaries ------------------------------------------

@dataclass(frozen=True)
class PhonemeSet:
    """Phoneme name -> token id, from ``phonemes.json`` or ``phonemes.txt``."""

    ids: Mapping[str, int]
    path: Path

    def __contains__(self, name: object) -> bool:
        return name in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def id(self, name: str) -> int:
        try:
            return self.ids[name]
        except KeyError:
            raise VoicebankError(f"phoneme {excerpt(name)} is not in {self.path}") from None

    @classmethod
    def load(cls, path: Path) -> PhonemeSet:
        if not path.is_file():
            raise VoicebankFileError(f"{path}: no such phonemes file")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(_read_text(path))
            except (ValueError, UnicodeDecodeError, RecursionError) as err:
                raise VoicebankError(f"{path}: not readable JSON ({err})") from err
            if isinstance(data, list):
                data = {name: i for i, name in enumerate(data)}
            if not isinstance(data, dict) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0
                    for v in data.values()):
                raise VoicebankError(f"{path}: expected a JSON object of phoneme -> "
                                     f"non-negative integer id")
            ids = {str(k): int(v) for k, v in data.items()}
        else:  # phonemes.txt: line i is id i (line 0 is usually the padding token)
            try:
                lines = _read_text(path).splitlines()
            except UnicodeDecodeError as err:
                raise VoicebankError(f"{path}: not UTF-8 text ({err})") from err
            ids = {}
            for i, line in enumerate(lines):
                name = line.strip()
                if not name:
                    continue
                if name in ids:
                    raise VoicebankError(f"{path}: phoneme {excerpt(name)} appears twice (lines "
                                         f"{ids[name] + 1} and {i + 1})")
                ids[name] = i
        missing = [p for p in REST_PHONEMES if p not in ids]
        if missing:
            raise VoicebankError(f"{path}: the phoneme set lacks {missing}; every DiffSinger "
                                 f"bank has SP (silence) and AP (breath)")
        return cls(MappingProxyType(ids), path)


def _read_languages(path: Path) -> Mapping[str, int]:
    if not path.is_file():
        raise VoicebankFileError(f"{path}: no such languages file")
    try:
        data = json.loads(_read_text(path))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise VoicebankError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(data, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        raise VoicebankError(f"{path}: expected a JSON object of language -> integer id")
    return MappingProxyType({str(k): int(v) for k, v in data.items()})


@dataclass(frozen=True)
class Speaker:
    """One speaker embedding: the ``<entry>.emb`` file named in ``dsconfig.yaml``."""

    name: str
    """The dsconfig ``speakers`` entry, e.g. ``"embeds/acoustic/alto"`` or ``"model.alto"``."""
    embedding: np.ndarray = field(compare=False, repr=False)
    """float32 [hidden_size]."""

    @property
    def short_name(self) -> str:
        """The entry without folders or ``<model>.`` prefix: ``"alto"``."""
        return self.name.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[-1]

    def matches(self, name: str) -> bool:
        return name in (self.name, self.short_name)


def _read_speakers(cfg: Mapping[str, Any], folder: Path, hidden: int,
                   where: Path) -> tuple[Speaker, ...]:
    entries = cfg.get("speakers") or []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise VoicebankError(f"{where}: `speakers` must be a list of names, got "
                             f"{excerpt(entries)}")
    speakers = []
    for entry in entries:
        path = folder / (entry if entry.endswith(".emb") else entry + ".emb")
        if not path.is_file():
            raise VoicebankFileError(f"{where}: speaker {excerpt(entry)} needs {path}, which "
                                     f"does not exist; the bank is incomplete (unpack it again, "
                                     "whole)")
        size = path.stat().st_size
        if size != hidden * 4:
            raise VoicebankError(f"{path}: {size} bytes, expected hidden_size {hidden} x 4 "
                                 f"(float32); the embedding does not belong to this model")
        emb = np.fromfile(path, dtype="<f4").astype(np.float32)
        speakers.append(Speaker(entry.removesuffix(".emb"), emb))
    return tuple(speakers)


@dataclass(frozen=True)
class PhoneticDictionary:
    """A ``dsdict.yaml`` / ``dsdict-<lang>.yaml``: the symbols and the word entries."""

    path: Path
    language: str | None
    symbols: Mapping[str, str]
    """Symbol -> type (vowel, stop, fricative, semivowel, liquid, nasal, ...)."""
    entries: Mapping[str, tuple[str, ...]]
    """Lower-case grapheme -> symbols."""

    @property
    def vowels(self) -> frozenset[str]:
        return frozenset(s for s, kind in self.symbols.items() if kind == "vowel")

    @classmethod
    def load(cls, path: Path, language: str | None) -> PhoneticDictionary:
        data = _read_yaml(path)
        symbols: dict[str, str] = {}
        for item in data.get("symbols") or []:
            if not isinstance(item, dict) or not isinstance(item.get("symbol"), str):
                raise VoicebankError(f"{path}: each of `symbols` needs a `symbol` string, got "
                                     f"{excerpt(item)}")
            symbols[item["symbol"]] = str(item.get("type", "")).lower()
        entries: dict[str, tuple[str, ...]] = {}
        for item in data.get("entries") or []:
            phonemes = item.get("phonemes") if isinstance(item, dict) else None
            if (not isinstance(item, dict) or not isinstance(item.get("grapheme"), str)
                    or not isinstance(phonemes, list)):
                raise VoicebankError(f"{path}: each of `entries` needs a `grapheme` string and "
                                     f"a `phonemes` list, got {excerpt(item)}")
            entries[item["grapheme"].lower()] = tuple(str(p) for p in phonemes)
        for rest in REST_PHONEMES:
            symbols.setdefault(rest, "rest")
        return cls(path, language, MappingProxyType(symbols), MappingProxyType(entries))


def token_name(phonemes: PhonemeSet, phoneme: str, language: str | None) -> str | None:
    """The name ``phoneme`` has in ``phonemes``: ``<language>/<phoneme>`` in multilingual
    sets, else the phoneme itself; None when neither is there."""
    if language and f"{language}/{phoneme}" in phonemes:
        return f"{language}/{phoneme}"
    return phoneme if phoneme in phonemes else None


# ---- models -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AcousticModel:
    """The acoustic model as ``dsconfig.yaml`` describes it."""

    model: Path
    phonemes: PhonemeSet
    languages: Mapping[str, int] | None
    speakers: tuple[Speaker, ...]
    hidden_size: int
    audio: AudioSettings
    curves: tuple[str, ...]
    """The variance curves it embeds (``use_<curve>_embed``), in :data:`CURVES` order."""
    use_key_shift_embed: bool = False
    use_speed_embed: bool = False
    use_lang_id: bool = False
    use_shallow_diffusion: bool = False
    use_variable_depth: bool = False
    use_continuous_acceleration: bool = False
    max_depth: float | None = None
    """Shallow-diffusion depth in 0..1 (legacy configs' 1000-step units divided by 1000);
    None when unset."""
    max_depth_raw: float | None = None
    """``max_depth`` as dsconfig.yaml writes it."""
    vocoder_name: str | None = None

    @property
    def legacy_acceleration(self) -> bool:
        """Whether the config is a pre-2024 one (``use_continuous_acceleration: false``):
        the graph's ``depth`` is then in 1000-step units and it takes ``speedup``."""
        return not self.use_continuous_acceleration


@dataclass(frozen=True)
class VarianceModel:
    """One of ``dsdur/``, ``dspitch/``, ``dsvariance/``: a linguistic encoder and a predictor."""

    kind: str
    """"dur", "pitch" or "variance"."""
    folder: Path
    linguistic: Path
    model: Path
    phonemes: PhonemeSet
    languages: Mapping[str, int] | None
    speakers: tuple[Speaker, ...]
    hidden_size: int
    sample_rate: int
    hop_size: int


@dataclass(frozen=True)
class Vocoder:
    """A vocoder package: ``vocoder.yaml`` and its ONNX graph."""

    name: str
    folder: Path
    model: Path
    audio: AudioSettings
    pitch_controllable: bool = True


@dataclass(frozen=True)
class Voicebank:
    """A validated DiffSinger voicebank."""

    folder: Path
    name: str
    acoustic: AcousticModel
    vocoder: Vocoder
    dictionaries: Mapping[str, PhoneticDictionary] = field(default_factory=dict)
    """By language ("" for ``dsdict.yaml``)."""
    dur: VarianceModel | None = None
    pitch: VarianceModel | None = None
    variance: VarianceModel | None = None
    character: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sample_rate(self) -> int:
        return self.acoustic.audio.sample_rate

    @property
    def phonemes(self) -> PhonemeSet:
        return self.acoustic.phonemes

    def dictionary(self, language: str | None = None) -> PhoneticDictionary | None:
        """The dictionary for ``language`` (``dsdict-<language>.yaml``), else ``dsdict.yaml``."""
        if language and language in self.dictionaries:
            return self.dictionaries[language]
        return self.dictionaries.get("")

    def token_name(self, phoneme: str, language: str | None = None) -> str | None:
        """The acoustic phoneme set's name for ``phoneme`` (see :func:`token_name`)."""
        return token_name(self.acoustic.phonemes, phoneme, language)

    def speakers_named(self) -> list[str]:
        return [s.short_name for s in self.acoustic.speakers]


def find_speaker(speakers: Sequence[Speaker], name: str | None, where: str) -> Speaker | None:
    """The speaker called ``name`` (its entry or short name); the first when ``name`` is None;
    None when there are no speakers."""
    if not speakers:
        return None
    if name is None:
        return speakers[0]
    for speaker in speakers:
        if speaker.matches(name):
            return speaker
    raise VoicebankError(f"{where}: no speaker {excerpt(name)}; it has "
                         f"{[s.short_name for s in speakers]}")


# ---- loading ------------------------------------------------------------------------------

def _read_character(folder: Path) -> dict[str, Any]:
    info: dict[str, Any] = {}
    txt = folder / "character.txt"
    if txt.exists():  # read through the one reader: no FIFO, no device, a bounded size
        try:
            raw = read_bytes(txt, MAX_CHARACTER_TEXT, "unpack the voicebank again, whole")
        except UntrustedFileError as err:
            raise VoicebankError(str(err)) from None
        for line in raw.decode("utf-8-sig", errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key.strip().lower()] = value.strip()
    yml = folder / "character.yaml"
    if yml.is_file():
        info.update(_read_yaml(yml))
    singer_type = info.get("singer_type")
    if singer_type is not None and str(singer_type).lower() != "diffsinger":
        raise VoicebankError(f"{folder}: character.yaml says singer_type "
                             f"{excerpt(singer_type)}: not a DiffSinger voicebank (this runner "
                             f"needs dsconfig.yaml and ONNX "
                             f"graphs)")
    return info


def _phonemes_path(cfg: Mapping[str, Any], folder: Path, where: Path) -> Path:
    name = _get(cfg, "phonemes", str, None, where)
    if name is not None:
        return _relative_file(folder, name, where, "phonemes")
    for candidate in ("phonemes.json", "phonemes.txt"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise VoicebankFileError(f"{where}: no `phonemes` key and no phonemes.json or "
                             f"phonemes.txt in {folder}")


def _languages(cfg: Mapping[str, Any], folder: Path, where: Path) -> Mapping[str, int] | None:
    name = _get(cfg, "languages", str, None, where)
    if name is not None:
        return _read_languages(_relative_file(folder, name, where, "languages"))
    if _get(cfg, "use_lang_id", bool, False, where):
        raise VoicebankError(f"{where}: `use_lang_id` is true but no `languages` file is named")
    return None


def _read_acoustic(folder: Path) -> AcousticModel:
    where = folder / "dsconfig.yaml"
    if not where.is_file():
        nested = sorted(p.parent.name for p in folder.glob("*/dsconfig.yaml"))
        hint = (f"; the bank seems to be one folder down: {folder / nested[0]}" if nested
                else "; give the folder that holds dsconfig.yaml and character.txt")
        raise VoicebankFileError(f"{folder}: no dsconfig.yaml, not a DiffSinger voicebank "
                                 f"folder{hint}")
    cfg = _read_yaml(where)
    acoustic = _get(cfg, "acoustic", str, None, where)
    if acoustic is None:
        raise VoicebankError(f"{where}: no `acoustic` key naming the acoustic ONNX graph; a "
                             f"bank with only variance models cannot sing on its own")
    hidden = _get(cfg, "hidden_size", int, 256, where)
    raw_depth = _get(cfg, "max_depth", float, None, where)
    if raw_depth is not None and raw_depth < 0:
        raw_depth = None  # OpenUtau writes -1 for "not set"
    continuous = _get(cfg, "use_continuous_acceleration", bool, None, where)
    if continuous is None:  # no flag: OpenUtau reads a legacy config; see the module notes
        continuous = raw_depth is not None and raw_depth <= 1.0
    max_depth = raw_depth if raw_depth is None or continuous else raw_depth / 1000.0
    if max_depth is not None and max_depth > 1.0:
        raise VoicebankError(f"{where}: `max_depth` {raw_depth} is more than the whole "
                             f"diffusion (1.0, or 1000 with use_continuous_acceleration: "
                             f"false); set the depth the model was trained with")
    shallow = _get(cfg, "use_shallow_diffusion", bool, False, where)
    return AcousticModel(
        model=_relative_file(folder, acoustic, where, "acoustic"),
        phonemes=PhonemeSet.load(_phonemes_path(cfg, folder, where)),
        languages=_languages(cfg, folder, where),
        speakers=_read_speakers(cfg, folder, hidden, where),
        hidden_size=hidden,
        audio=AudioSettings.read(cfg, where),
        curves=tuple(c for c in CURVES if _get(cfg, f"use_{c}_embed", bool, False, where)),
        use_key_shift_embed=_get(cfg, "use_key_shift_embed", bool, False, where),
        use_speed_embed=_get(cfg, "use_speed_embed", bool, False, where),
        use_lang_id=_get(cfg, "use_lang_id", bool, False, where),
        use_shallow_diffusion=shallow,
        use_variable_depth=_get(cfg, "use_variable_depth", bool, shallow, where),
        use_continuous_acceleration=continuous,
        max_depth=max_depth, max_depth_raw=raw_depth,
        vocoder_name=_get(cfg, "vocoder", str, None, where),
    )


def _read_variance(folder: Path, kind: str, acoustic: AcousticModel) -> VarianceModel:
    where = folder / "dsconfig.yaml"
    if not where.is_file():
        raise VoicebankFileError(f"{folder}: a {folder.name}/ folder without dsconfig.yaml; "
                                 f"the bank is incomplete (unpack it again, whole) or "
                                 f"remove {folder.name}/ to sing without that model")
    cfg = _read_yaml(where)
    for key in ("linguistic", kind):
        if _get(cfg, key, str, None, where) is None:
            raise VoicebankError(f"{where}: no `{key}` key naming its ONNX graph; a "
                                 f"{folder.name}/ model needs `linguistic` and `{kind}`")
    hidden = _get(cfg, "hidden_size", int, 256, where)
    model = VarianceModel(
        kind=kind, folder=folder,
        linguistic=_relative_file(folder, cfg["linguistic"], where, "linguistic"),
        model=_relative_file(folder, cfg[kind], where, kind),
        phonemes=PhonemeSet.load(_phonemes_path(cfg, folder, where)),
        languages=_languages(cfg, folder, where),
        speakers=_read_speakers(cfg, folder, hidden, where),
        hidden_size=hidden,
        sample_rate=_get(cfg, "sample_rate", int, acoustic.audio.sample_rate, where),
        hop_size=_get(cfg, "hop_size", int, acoustic.audio.hop_size, where),
    )
    if (model.sample_rate, model.hop_size) != (acoustic.audio.sample_rate,
                                               acoustic.audio.hop_size):
        raise VoicebankError(f"{where}: sample_rate {model.sample_rate} / hop_size "
                             f"{model.hop_size}, but the acoustic model's are "
                             f"{acoustic.audio.sample_rate} / {acoustic.audio.hop_size}: their "
                             f"frames would not line up; use models trained together")
    return model


def _read_vocoder(folder: Path, where: Path) -> Vocoder:
    cfg = _read_yaml(folder / "vocoder.yaml")
    model = _get(cfg, "model", str, "model.onnx", where)
    return Vocoder(
        name=_get(cfg, "name", str, folder.name, where),
        folder=folder,
        model=_relative_file(folder, model, folder / "vocoder.yaml", "model"),
        audio=AudioSettings.read(cfg, folder / "vocoder.yaml"),
        pitch_controllable=_get(cfg, "pitch_controllable", bool, True, where),
    )


def vocoder_search_path(bank_folder: Path, vocoder_dirs: Sequence[StrPath] = ()) -> list[Path]:
    """Where a named vocoder package is looked for, in order."""
    dirs = [Path(d) for d in vocoder_dirs]
    dirs += [Path(d) for d in os.environ.get(VOCODERS_ENV, "").split(os.pathsep) if d]
    dirs += [bank_folder, bank_folder.parent]
    return dirs


def _find_vocoder(folder: Path, acoustic: AcousticModel,
                  vocoder_dirs: Sequence[StrPath]) -> Vocoder:
    where = folder / "dsconfig.yaml"
    if (folder / "dsvocoder" / "vocoder.yaml").is_file():
        vocoder = _read_vocoder(folder / "dsvocoder", where)
    elif acoustic.vocoder_name is None:
        raise VoicebankFileError(f"{folder}: no dsvocoder/vocoder.yaml and dsconfig.yaml names "
                                 f"no `vocoder`; add the vocoder package the bank was made "
                                 f"for as {folder / 'dsvocoder'}")
    else:
        name = acoustic.vocoder_name
        searched = vocoder_search_path(folder, vocoder_dirs)
        found = None
        for base in searched:
            for candidate in (base / name, base):
                yml = candidate / "vocoder.yaml"
                if yml.is_file() and (candidate.name == name or
                                      _read_yaml(yml).get("name") == name):
                    found = candidate
                    break
            if found:
                break
        if found is None:
            raise VoicebankFileError(
                f"{where}: the vocoder {excerpt(name)} is not installed: no {name}/vocoder.yaml "
                f"in {[str(d) for d in searched]}. Download the {excerpt(name)} vocoder package "
                f"(OpenUtau calls it a dependency) and unpack it into one of those folders, or set "
                f"{VOCODERS_ENV} to the folder that holds it")
        vocoder = _read_vocoder(found, where)
    bad = acoustic.audio.disagreements(vocoder.audio)
    if bad:
        raise VoicebankError(f"{folder}: the vocoder {vocoder.name!r} ({vocoder.folder}) does "
                             f"not match the acoustic model (acoustic vs vocoder: "
                             f"{'; '.join(bad)}); use the vocoder the bank was made for")
    return vocoder


def _read_dictionaries(folder: Path) -> dict[str, PhoneticDictionary]:
    found: dict[str, PhoneticDictionary] = {}
    for base in (folder, folder / "dsdur"):
        for path in sorted(base.glob("dsdict*.yaml")):
            stem = path.stem
            language = stem[len("dsdict-"):] if stem.startswith("dsdict-") else ""
            if stem not in ("dsdict",) and not stem.startswith("dsdict-"):
                continue
            if language not in found:
                found[language] = PhoneticDictionary.load(path, language or None)
    return found


def _check_dictionary(dictionary: PhoneticDictionary, phonemes: PhonemeSet) -> None:
    lang = dictionary.language
    missing = sorted(s for s in dictionary.symbols if token_name(phonemes, s, lang) is None)
    if missing:
        raise VoicebankError(f"{dictionary.path}: symbols {missing} are not in the phoneme set "
                             f"{phonemes.path}; the dictionary belongs to another model")
    for word, entry in dictionary.entries.items():
        unknown = [p for p in entry if p not in dictionary.symbols
                   and token_name(phonemes, p, lang) is None]
        if unknown:
            raise VoicebankError(f"{dictionary.path}: the entry {excerpt(word)} uses "
                                 f"{unknown}, not in the phoneme set {phonemes.path}; fix or "
                                 "delete the entry")


def load_voicebank(folder: StrPath, *, vocoder_dirs: Sequence[StrPath] = ()) -> Voicebank:
    """Read and check the voicebank in ``folder``.

    Raises :class:`VoicebankFileError` for missing files and :class:`VoicebankError` for
    anything else that would keep it from singing; both name the file and the problem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VoicebankFileError(f"{folder}: no such voicebank folder")
    character = _read_character(folder)
    acoustic = _read_acoustic(folder)
    vocoder = _find_vocoder(folder, acoustic, vocoder_dirs)
    dictionaries = _read_dictionaries(folder)
    for dictionary in dictionaries.values():
        _check_dictionary(dictionary, acoustic.phonemes)
    variance = {kind: _read_variance(folder / sub, kind, acoustic)
                for kind, sub in VARIANCE_FOLDERS.items() if (folder / sub).is_dir()}
    name = str(character.get("name") or folder.name)
    return Voicebank(folder=folder, name=name, acoustic=acoustic, vocoder=vocoder,
                     dictionaries=MappingProxyType(dictionaries), character=character,
                     **variance)
