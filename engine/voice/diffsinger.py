"""Sing phrase plans with a DiffSinger voicebank, on ONNX Runtime.

    singer = DiffSingerRunner("voicebanks/Alto")          # or a loaded Voicebank
    audio = singer.render(plan, tempo_bpm=96.0, steps=10)
    audio.samples, audio.sample_rate, audio.start_seconds  # play samples[0] at start_seconds

A render goes: the plan's phonemes in the bank's symbols (:mod:`engine.voice.g2p`) ->
vowel-aligned timing and a note f0 curve (:mod:`engine.voice.timing`) -> the optional
variance models -> the acoustic graph (mel) -> the vocoder (waveform).

Variance models, each used when the bank has it (and the settings allow):

- ``dsdur/``: its linguistic encoder and duration predictor give each consonant's length
  (instead of a fixed ``consonant_seconds``); nuclei stay on their notes, and consonants
  that do not fit are squeezed as before;
- ``dspitch/``: the pitch predictor draws the f0 (in MIDI semitones) from the notes; without
  it, f0 is the note curve with portamento and vibrato;
- ``dsvariance/``: the variance predictor draws energy / breathiness / voicing / tension.

The acoustic graph is fed exactly the inputs it declares, at their declared rank (scalars
may be declared 0-d or [1]); a graph declaring an input this runner does not know is
refused when the runner is made. What each input gets:

======================  ======================================================================
``tokens``              phoneme ids: SP + phonemes + SP
``durations``           frames per token, summing to n_frames
``f0``                  Hz per frame (pitch model, else the note curve)
``languages``           per token, the id of its ``lang/`` prefix in languages.json, else 0
``gender``              ``RenderSettings.gender`` (0: no formant shift) on every frame
``velocity``            ``RenderSettings.velocity`` (1: normal consonant speed)
``spk_embed``           the chosen speaker's ``.emb`` vector on every frame
``energy`` etc.         the variance model's prediction; without one, the value in
                        ``RenderSettings.curves`` (default 0.0 on every frame). Zero is not
                        neutral for every bank (energy and breathiness are in dB): a bank that
                        embeds curves and ships no ``dsvariance/`` sings better with values
                        set here
``depth``               float: ``RenderSettings.depth`` (default the bank's ``max_depth``, in
                        0..1; 1.0 for a bank without variable depth); int64 (legacy): the
                        same in 1000-step units, a multiple of speedup
``steps`` / ``speedup`` int64: Euler steps; legacy graphs take speedup: depth (in 1000-step
                        units) / steps when they take a depth, else 1000 / steps snapped
                        down to a divisor of 1000 (as OpenUtau feeds them)
======================  ======================================================================

The mel goes to the vocoder in the vocoder's log base: an older bank's log10 mel is
multiplied by ln(10) for a vocoder that wants natural-log mels (and the other way round).

Sessions use CUDA when onnxruntime-gpu offers it, else the CPU; ``threads`` sets
intra-op threads (None: ONNX Runtime's default, one per physical core).

No torch here: this module is part of the runtime.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from engine.lyrics.phrase import PhrasePlan, SungNote, SungSyllable
from engine.models import open_session
from engine.untrusted import UntrustedFileError
from engine.voice.g2p import G2P, is_vowel
from engine.voice.singer import SungAudio
from engine.voice.timing import PhraseTiming, TimingSettings, hz_to_midi, midi_to_hz, time_phrase
from engine.voice.voicebank import (
    CURVES,
    Speaker,
    StrPath,
    VarianceModel,
    Voicebank,
    VoicebankError,
    find_speaker,
    load_voicebank,
    mel_base_factor,
)

log = logging.getLogger(__name__)

INT64, FLOAT, BOOL = "tensor(int64)", "tensor(float)", "tensor(bool)"
SCALAR = (0, 1)
"""Ranks a scalar input may be declared with."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What an input this runner knows may look like: allowed types and ranks."""

    types: tuple[str, ...]
    ranks: tuple[int, ...]


def _spec(kind: str, *ranks: int) -> InputSpec:
    return InputSpec((kind,), ranks)


_CURVE_INPUTS = {c: _spec(FLOAT, 2) for c in CURVES}
_STEPS = {"steps": _spec(INT64, *SCALAR), "speedup": _spec(INT64, *SCALAR)}
ACOUSTIC_INPUTS: Mapping[str, InputSpec] = MappingProxyType({
    "tokens": _spec(INT64, 2), "durations": _spec(INT64, 2), "f0": _spec(FLOAT, 2),
    "languages": _spec(INT64, 2), "gender": _spec(FLOAT, 2), "velocity": _spec(FLOAT, 2),
    "spk_embed": _spec(FLOAT, 3), **_CURVE_INPUTS,
    "depth": InputSpec((FLOAT, INT64), SCALAR), **_STEPS,
})
VOCODER_INPUTS: Mapping[str, InputSpec] = MappingProxyType({
    "mel": _spec(FLOAT, 3), "f0": _spec(FLOAT, 2)})
LINGUISTIC_INPUTS: Mapping[str, InputSpec] = MappingProxyType({
    "tokens": _spec(INT64, 2), "languages": _spec(INT64, 2), "word_div": _spec(INT64, 2),
    "word_dur": _spec(INT64, 2), "ph_dur": _spec(INT64, 2)})
_ENCODED = {"encoder_out": _spec(FLOAT, 3), "x_masks": _spec(BOOL, 2)}
PREDICTOR_INPUTS: Mapping[str, Mapping[str, InputSpec]] = MappingProxyType({
    "dur": MappingProxyType({**_ENCODED, "ph_midi": _spec(INT64, 2),
                             "spk_embed": _spec(FLOAT, 3)}),
    "pitch": MappingProxyType({
        **_ENCODED, "ph_dur": _spec(INT64, 2), "note_midi": _spec(FLOAT, 2),
        "note_rest": _spec(BOOL, 2), "note_dur": _spec(INT64, 2), "pitch": _spec(FLOAT, 2),
        "note_glide": _spec(INT64, 2),
        "expr": _spec(FLOAT, 2), "retake": _spec(BOOL, 2), "spk_embed": _spec(FLOAT, 3),
        **_STEPS}),
    "variance": MappingProxyType({
        **_ENCODED, "ph_dur": _spec(INT64, 2), "pitch": _spec(FLOAT, 2), **_CURVE_INPUTS,
        "retake": _spec(BOOL, 3), "spk_embed": _spec(FLOAT, 3), **_STEPS}),
})
PREDICTOR_OUTPUT = {"dur": "ph_dur_pred", "pitch": "pitch_pred"}


def legacy_speedup(steps: int) -> int:
    """The speedup a legacy graph takes for ``steps``: the largest divisor of 1000 that is
    at most 1000 / steps (so at least ``steps`` steps run)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return max((d for d in range(1, 1001) if 1000 % d == 0 and d * steps <= 1000), default=1)


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """How a voicebank sings (see the module notes for what each input gets)."""

    steps: int = 20
    depth: float | None = None
    """Shallow-diffusion depth; None: the bank's ``max_depth``."""
    speaker: str | None = None
    """A speaker of the bank (its short name or dsconfig entry); None: the first."""
    language: str | None = "en"
    gender: float = 0.0
    velocity: float = 1.0
    curves: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """Values for curves the acoustic graph takes when no variance model gives them."""
    use_duration_model: bool = True
    use_pitch_model: bool = True
    use_variance_model: bool = True
    expr: float = 1.0
    """Pitch expressiveness for pitch models that take ``expr`` (0..1)."""
    timing: TimingSettings = field(default_factory=TimingSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"RenderSettings.steps must be an integer >= 1, got {self.steps!r}")
        if self.depth is not None and not self.depth >= 0:
            raise ValueError(f"RenderSettings.depth must be >= 0 (or None for the bank's "
                             f"max_depth), got {self.depth!r}")
        if not -1.0 <= self.gender <= 1.0:
            raise ValueError(f"RenderSettings.gender must be in -1..1, got {self.gender!r}")
        if not self.velocity > 0:
            raise ValueError(f"RenderSettings.velocity must be > 0, got {self.velocity!r}")
        unknown = sorted(set(self.curves) - set(CURVES))
        if unknown:
            raise ValueError(f"RenderSettings.curves: unknown curves {unknown}; known: "
                             f"{list(CURVES)}")


class Graph:
    """One ONNX session whose declared inputs have been checked against a table of known ones.

    ``run`` feeds exactly the declared inputs, taking each from ``feeds`` (values or
    zero-argument callables, so inputs a graph does not take are never computed) and
    reshaping scalars to their declared rank.
    """

    def __init__(self, path: Path, role: str, known: Mapping[str, InputSpec],
                 required: Sequence[str], outputs: Sequence[str], *,
                 providers: Sequence[str] | None, threads: int | None,
                 spinning: bool = True) -> None:
        self.path = path
        self.role = role
        try:
            self.session = open_session(path, threads=threads, providers=providers,
                                        spinning=spinning)
        except UntrustedFileError as err:  # not a regular file, or too large
            raise VoicebankError(str(err)) from None
        except Exception as err:  # onnxruntime raises its own types (Fail, InvalidGraph...)
            raise VoicebankError(f"{path}: ONNX Runtime cannot load the {role} graph ({err}); "
                                 f"the file is damaged or needs a newer onnxruntime") from err
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        unknown = sorted(set(self.inputs) - set(known))
        if unknown:
            raise VoicebankError(f"{path}: the {role} graph declares inputs {unknown} that this "
                                 f"runner does not know how to fill (it knows "
                                 f"{sorted(known)}); the bank was exported by a newer "
                                 f"DiffSinger than this runner supports")
        missing = [n for n in required if n not in self.inputs]
        if missing:
            raise VoicebankError(f"{path}: the {role} graph lacks the inputs {missing} (it "
                                 f"declares {sorted(self.inputs)}); not a DiffSinger {role} "
                                 f"graph")
        for name, arg in self.inputs.items():
            spec = known[name]
            if arg.type not in spec.types or len(arg.shape) not in spec.ranks:
                raise VoicebankError(
                    f"{path}: {role} input {name!r} is {arg.type} of rank {len(arg.shape)}; "
                    f"expected {' or '.join(spec.types)} of rank "
                    f"{' or '.join(map(str, spec.ranks))}")
        absent = [n for n in outputs if n not in self.outputs]
        if absent:
            raise VoicebankError(f"{path}: the {role} graph has no outputs {absent} (it has "
                                 f"{sorted(self.outputs)})")

    def __contains__(self, name: object) -> bool:
        return name in self.inputs

    def input_type(self, name: str) -> str:
        return self.inputs[name].type

    def static_dim(self, name: str, axis: int, output: bool = False) -> int | None:
        """A declared dimension when it is a fixed number, else None."""
        dim = (self.outputs if output else self.inputs)[name].shape[axis]
        return dim if isinstance(dim, int) else None

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, feeds: Mapping[str, object]) -> dict[str, np.ndarray]:
        fed = {}
        for name, arg in self.inputs.items():
            if name not in feeds:
                raise RuntimeError(f"{self.path}: no value for {self.role} input {name!r}")
            value = feeds[name]
            value = np.asarray(value() if callable(value) else value)
            rank = len(arg.shape)
            if rank <= 1 and value.size == 1:
                value = value.reshape((1,) * rank)
            elif value.ndim != rank:
                raise RuntimeError(f"{self.path}: {self.role} input {name!r} got shape "
                                   f"{value.shape}, declared rank {rank}")
            fed[name] = value
        return dict(zip(self.outputs, self.session.run(None, fed), strict=True))


def _scalar(value: float | int, dtype: type) -> np.ndarray:
    return np.array(value, dtype=dtype)


def _speaker_frames(speaker: Speaker | None, n: int, role: str) -> np.ndarray:
    if speaker is None:
        raise VoicebankError(f"the {role} graph takes spk_embed but its dsconfig.yaml lists "
                             f"no speakers")
    return np.broadcast_to(speaker.embedding, (1, n, speaker.embedding.size)).astype(np.float32)


def _language_ids(names: Sequence[str], languages: Mapping[str, int] | None) -> np.ndarray:
    table = languages or {}
    return np.array([[table.get(n.rpartition("/")[0], 0) for n in names]], dtype=np.int64)


class _VariancePart:
    """A variance folder's linguistic encoder and predictor, with its speaker."""

    def __init__(self, model: VarianceModel, speaker: str | None, graphs: dict[Path, Graph],
                 providers: Sequence[str] | None, threads: int | None,
                 spinning: bool = True) -> None:
        self.model = model
        key = model.linguistic.resolve()
        if key not in graphs:
            graphs[key] = Graph(model.linguistic, f"{model.kind} linguistic", LINGUISTIC_INPUTS,
                                ("tokens",), ("encoder_out",), providers=providers,
                                threads=threads, spinning=spinning)
        self.linguistic = graphs[key]
        outputs = [PREDICTOR_OUTPUT[model.kind]] if model.kind in PREDICTOR_OUTPUT else []
        self.predictor = Graph(model.model, f"{model.kind} predictor",
                               PREDICTOR_INPUTS[model.kind], ("encoder_out",), outputs,
                               providers=providers, threads=threads, spinning=spinning)
        try:
            self.speaker = find_speaker(model.speakers, speaker, str(model.folder))
        except VoicebankError:
            self.speaker = find_speaker(model.speakers, None, str(model.folder))
        for name in _ENCODED:
            if name in self.predictor and name not in self.linguistic.outputs:
                raise VoicebankError(f"{model.model}: takes {name} but {model.linguistic} does "
                                     f"not give it (it gives {sorted(self.linguistic.outputs)})")
        if "spk_embed" in self.predictor and self.speaker is None:
            raise VoicebankError(f"{model.model}: takes spk_embed but {model.folder} "
                                 f"/dsconfig.yaml lists no speakers")
        if "languages" in self.linguistic and model.languages is None:
            raise VoicebankError(f"{model.linguistic}: takes languages but {model.folder}"
                                 f"/dsconfig.yaml names no languages file")

    def encode(self, timing: PhraseTiming) -> dict[str, np.ndarray]:
        names = timing.phonemes
        missing = sorted({n for n in names if n not in self.model.phonemes})
        if missing:
            raise VoicebankError(f"{self.model.phonemes.path}: lacks phonemes {missing} that the "
                                 f"acoustic model has; switch off the {self.model.kind} model")
        tokens = np.array([[self.model.phonemes.id(n) for n in names]], dtype=np.int64)
        out = self.linguistic.run({
            "tokens": tokens, "languages": lambda: _language_ids(names, self.model.languages),
            "word_div": timing.word_div[None], "word_dur": timing.word_dur[None],
            "ph_dur": timing.durations[None]})
        return out


class PhraseCache:
    """Rendered phrases by what the graphs would be fed, least recently used first out,
    at most ``max_samples`` samples in all (0: off). A chorus that comes back note for note
    is sung again without running a graph."""

    def __init__(self, max_samples: float) -> None:
        self.max_samples = int(max_samples)
        self._items: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._held = 0
        self.hits = self.misses = 0

    @staticmethod
    def key(timing: PhraseTiming, steps: int) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(np.int64(steps).tobytes())
        for array in (timing.token_ids, timing.durations, timing.f0, timing.pitch,
                      timing.ph_midi, timing.note_midi, timing.note_dur, timing.word_div):
            digest.update(np.ascontiguousarray(array).tobytes())
            digest.update(b"|")
        return digest.digest()

    def get(self, key: bytes) -> np.ndarray | None:
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: bytes, samples: np.ndarray) -> None:
        if samples.size > self.max_samples:
            return
        samples.setflags(write=False)  # shared by every later hit
        self._items[key] = samples
        self._held += samples.size
        while self._held > self.max_samples:
            _, old = self._items.popitem(last=False)
            self._held -= old.size


class DiffSingerRunner:
    """A :class:`~engine.voice.singer.Singer` on a DiffSinger voicebank.

    ``live=True`` is for the show's voice worker: ONNX Runtime's idle threads sleep instead
    of spinning (the music worker and the lyricist share the cores), and on the CPU the
    vocoder runs as an int8 copy (:mod:`engine.voice.accelerate`, made once and cached
    outside the bank; the float vocoder when no copy can be made). ``cache_seconds`` keeps
    that many seconds of rendered phrases for phrases that come back exactly.
    """

    def __init__(self, bank: Voicebank | StrPath, settings: RenderSettings | None = None, *,
                 providers: Sequence[str] | None = None, threads: int | None = None,
                 vocoder_dirs: Sequence[StrPath] = (), live: bool = False,
                 cache_seconds: float = 0.0) -> None:
        self.bank = bank if isinstance(bank, Voicebank) else load_voicebank(
            bank, vocoder_dirs=vocoder_dirs)
        self.settings = settings or RenderSettings()
        bank = self.bank
        acoustic = bank.acoustic
        self.live = live
        sessions = {"providers": providers, "threads": threads, "spinning": not live}
        self._sessions = sessions
        self.acoustic = Graph(acoustic.model, "acoustic", ACOUSTIC_INPUTS,
                              ("tokens", "durations", "f0"), ("mel",), **sessions)
        self.vocoder = Graph(bank.vocoder.model, "vocoder", VOCODER_INPUTS, ("mel", "f0"),
                             ("waveform",), **sessions)
        self.stage_seconds: dict[str, float] = {}
        """Wall seconds of each stage of the last render: dur, pitch, variance, acoustic,
        vocoder (the stages the bank has)."""
        self.cache = PhraseCache(cache_seconds * self.sample_rate)
        self._check_acoustic()
        self.mel_factor = mel_base_factor(acoustic.audio.mel_base, bank.vocoder.audio.mel_base)
        """The acoustic mel times this is in the vocoder's log base."""
        self.speaker = find_speaker(acoustic.speakers, self.settings.speaker, str(bank.folder))
        graphs: dict[Path, Graph] = {}
        uses = {"dur": self.settings.use_duration_model, "pitch": self.settings.use_pitch_model,
                "variance": self.settings.use_variance_model}
        self.parts = {kind: _VariancePart(model, self.settings.speaker, graphs, providers,
                                          threads, not live)
                      for kind in ("dur", "pitch", "variance")
                      if uses[kind] and (model := getattr(bank, kind)) is not None}
        self.g2p = G2P.for_voicebank(bank, self.settings.language)
        self.vowels = self.g2p.vowels
        if live and "CUDAExecutionProvider" not in self.acoustic.session.get_providers():
            self.use_int8_vocoder()
        log.info("DiffSinger %s (%d Hz, speaker %s, variance models %s) on %s", bank.name,
                 self.sample_rate, self.speaker and self.speaker.short_name,
                 sorted(self.parts) or "none", self.acoustic.provider)

    def __repr__(self) -> str:
        return (f"DiffSingerRunner({self.bank.name!r}, sample_rate={self.sample_rate}, "
                f"provider={self.acoustic.provider!r})")

    def use_int8_vocoder(self) -> bool:
        """Swap in the int8 copy of the vocoder (made now, from mels this bank sings, when
        the cache lacks it); False when there is none (the float one stays)."""
        from engine.voice.accelerate import int8_vocoder

        model = self.bank.vocoder.model
        path = int8_vocoder(model, [])
        if path is None:
            began = time.perf_counter()
            pairs = []
            try:
                for plan in calibration_plans():
                    timing = self.prepare(plan, 100.0)
                    mel, f0 = self._mel(timing, 4)
                    pairs.append((mel, f0[None]))
            except (VoicebankError, ValueError, RuntimeError) as err:  # a bank that sings
                log.warning("vocoder: no int8 copy, the calibration phrases cannot be sung "
                            "(%s); the float vocoder sings", err)  # no English, say
                return False
            path = int8_vocoder(model, pairs)
            log.info("vocoder int8 copy: %.1f s", time.perf_counter() - began)
        if path is None:
            return False
        try:
            self.vocoder = Graph(path, "vocoder", VOCODER_INPUTS, ("mel", "f0"), ("waveform",),
                                 **self._sessions)
        except VoicebankError as err:
            log.warning("%s; the float vocoder sings", err)
            return False
        return True

    def _check_acoustic(self) -> None:
        bank, graph = self.bank, self.acoustic
        where = bank.acoustic.model
        if "steps" not in graph and "speedup" not in graph:
            log.info("%s: takes neither steps nor speedup (a fixed number of steps)", where)
        if ("depth" in graph and bank.acoustic.max_depth is None and self.settings.depth is None
                and bank.acoustic.use_variable_depth):
            raise VoicebankError(f"{where}: the acoustic graph takes depth but dsconfig.yaml "
                                 f"states no max_depth; add max_depth (the depth the model was "
                                 f"trained with) to dsconfig.yaml or set RenderSettings.depth")
        if "spk_embed" in graph:
            if not bank.acoustic.speakers:
                raise VoicebankError(f"{where}: the acoustic graph takes spk_embed but "
                                     f"dsconfig.yaml lists no speakers (with their .emb files)")
            hidden = graph.static_dim("spk_embed", 2)
            size = bank.acoustic.speakers[0].embedding.size
            if hidden is not None and hidden != size:
                raise VoicebankError(f"{where}: spk_embed has {hidden} channels, the .emb files "
                                     f"{size}; set hidden_size in dsconfig.yaml to {hidden}")
        if "languages" in graph and bank.acoustic.languages is None:
            raise VoicebankError(f"{where}: the acoustic graph takes languages but "
                                 f"dsconfig.yaml names no languages file (languages.json)")
        bins = bank.acoustic.audio.num_mel_bins
        for g, name, output in ((graph, "mel", True), (self.vocoder, "mel", False)):
            dim = g.static_dim(name, 2, output=output)
            if dim is not None and dim != bins:
                raise VoicebankError(f"{g.path}: {g.role} mel has {dim} bins, dsconfig.yaml says "
                                     f"num_mel_bins {bins}")

    # ---- Singer -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.bank.name

    @property
    def sample_rate(self) -> int:
        return self.bank.acoustic.audio.sample_rate

    @property
    def hop_size(self) -> int:
        return self.bank.acoustic.audio.hop_size

    def render(self, plan: PhrasePlan, tempo_bpm: float, steps: int | None = None) -> SungAudio:
        """Sing ``plan`` at ``tempo_bpm``; ``steps`` overrides ``RenderSettings.steps``."""
        t = time.perf_counter()
        timing = self.prepare(plan, tempo_bpm)
        samples = self.synthesize(timing, steps)
        log.debug("rendered %.2f s in %.2f s", len(samples) / self.sample_rate,
                  time.perf_counter() - t)
        return SungAudio(samples, self.sample_rate, timing.start_seconds)

    # ---- the steps of a render ----------------------------------------------------------
    def syllable_tokens(self, plan: PhrasePlan) -> list[tuple[str, ...]]:
        """Per syllable, the acoustic model's token names to sing (see the module notes)."""
        out: list[tuple[str, ...]] = []
        for word in _words(plan.syllables):
            for symbols in self._word_symbols(word):
                tokens = []
                for s in symbols:
                    name = self.bank.token_name(s, self.settings.language)
                    if name is None:
                        raise VoicebankError(f"{self.bank.folder}: {s!r} (in {word[0].word!r}) "
                                             f"is not in the bank's phoneme set")
                    tokens.append(name)
                out.append(tuple(tokens))
        return out

    def _word_symbols(self, word: list[SungSyllable]) -> list[tuple[str, ...]]:
        n = len(word)
        text = word[0].word or "".join(s.text for s in word)
        g2p = self.g2p
        if g2p.has_entry(text) or not all(s.phonemes for s in word):
            pron = g2p.word(text)
            if len(pron.syllables) == n or not all(s.phonemes for s in word):
                return _fit_syllables(pron.syllables, n, text, self.vowels)
        notes: list[str] = []
        mapped = [g2p.map_phones(s.phonemes, notes) for s in word]
        if notes:
            log.info("%s: %s", text, "; ".join(notes))
        if not all(mapped):
            raise VoicebankError(f"{self.bank.folder}: cannot sing {text!r}: a syllable lost all "
                                 f"its phonemes ({'; '.join(notes)})")
        return mapped

    def prepare(self, plan: PhrasePlan, tempo_bpm: float) -> PhraseTiming:
        """The phrase laid out on the frame grid: tokens, frames (duration model when there
        is one), notes and the note f0 curve."""
        audio = self.bank.acoustic.audio
        args = dict(phoneme_ids=self.bank.phonemes.ids, vowels=self.vowels,
                    sample_rate=audio.sample_rate, hop_size=audio.hop_size,
                    phonemes=self.syllable_tokens(plan), settings=self.settings.timing)
        timing = time_phrase(plan, tempo_bpm, **args)
        dur = self.parts.get("dur")
        self.stage_seconds = {}
        if dur is not None:
            began = time.perf_counter()
            encoded = dur.encode(timing)
            predicted = dur.predictor.run({
                **encoded, "ph_midi": timing.ph_midi[None],
                "spk_embed": lambda: _speaker_frames(dur.speaker, len(timing.phonemes), "dur")})
            frames = np.asarray(predicted["ph_dur_pred"], dtype=np.float64).reshape(-1)
            timing = time_phrase(plan, tempo_bpm, consonant_seconds=frames / timing.frame_rate,
                                 **args)
            self.stage_seconds["dur"] = time.perf_counter() - began
        return timing

    def synthesize(self, timing: PhraseTiming, steps: int | None = None) -> np.ndarray:
        """float32 samples of a prepared phrase: n_frames x hop_size of them."""
        steps = self.settings.steps if steps is None else steps
        if not isinstance(steps, int | np.integer) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        key = PhraseCache.key(timing, int(steps)) if self.cache.max_samples else None
        if key is not None and (cached := self.cache.get(key)) is not None:
            self.stage_seconds["cache"] = 0.0
            return cached
        mel, f0 = self._mel(timing, steps)
        began = time.perf_counter()
        wave = self.vocoder.run({"mel": mel, "f0": f0[None]})["waveform"]
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        n = timing.n_frames
        want = n * self.hop_size
        if wave.size != want:
            log.warning("%s: %d samples for %d frames (expected %d); padded or cut",
                        self.vocoder.path, wave.size, n, want)
            wave = np.pad(wave, (0, max(0, want - wave.size)))[:want]
        wave = np.ascontiguousarray(wave)
        self.stage_seconds["vocoder"] = time.perf_counter() - began
        if key is not None:
            self.cache.put(key, wave)
        return wave

    def _mel(self, timing: PhraseTiming, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The mel (in the vocoder's log base) and the f0 of a prepared phrase."""
        began = time.perf_counter()
        f0 = self._f0(timing, steps)
        if "pitch" in self.parts:
            self.stage_seconds["pitch"] = time.perf_counter() - began
        began = time.perf_counter()
        curves = self._curves(timing, f0, steps)
        if "variance" in self.parts:
            self.stage_seconds["variance"] = time.perf_counter() - began
        began = time.perf_counter()
        n = timing.n_frames
        feeds: dict[str, object] = {
            "tokens": timing.token_ids[None], "durations": timing.durations[None],
            "f0": f0[None],
            "languages": lambda: _language_ids(timing.phonemes, self.bank.acoustic.languages),
            "gender": lambda: np.full((1, n), self.settings.gender, np.float32),
            "velocity": lambda: np.full((1, n), self.settings.velocity, np.float32),
            "spk_embed": lambda: _speaker_frames(self.speaker, n, "acoustic"),
            **{c: curves[c][None] for c in CURVES},
            **self._acoustic_steps(steps),
        }
        mel = self.acoustic.run(feeds)["mel"]
        bins = self.bank.acoustic.audio.num_mel_bins
        if mel.shape != (1, n, bins):
            raise VoicebankError(f"{self.acoustic.path}: mel came out {mel.shape}, expected "
                                 f"(1, {n}, {bins})")
        if self.mel_factor != 1.0:  # an older bank's log10 mel for a natural-log vocoder
            mel = mel * np.float32(self.mel_factor)
        self.stage_seconds["acoustic"] = time.perf_counter() - began
        return mel, f0

    def _step_feeds(self, graph: Graph, steps: int) -> dict[str, object]:
        return {"steps": _scalar(steps, np.int64),
                "speedup": _scalar(legacy_speedup(steps), np.int64)} if (
            "steps" in graph or "speedup" in graph) else {}

    def _acoustic_steps(self, steps: int) -> dict[str, object]:
        """The acoustic graph's ``depth`` and ``steps`` / ``speedup``, as OpenUtau feeds
        them: a float depth in 0..1; a legacy int64 depth in 1000-step units with
        speedup = depth / steps (so ``steps`` steps run), the depth a multiple of it."""
        graph = self.acoustic
        feeds = self._step_feeds(graph, steps)
        if "depth" not in graph:
            return feeds
        depth = self.depth
        if graph.input_type("depth") == FLOAT:
            feeds["depth"] = _scalar(depth, np.float32)
            return feeds
        units = max(1, int(round(depth * 1000)))
        speedup = max(1, units // steps)
        feeds["depth"] = _scalar(units // speedup * speedup, np.int64)
        feeds["speedup"] = _scalar(speedup, np.int64)
        return feeds

    @property
    def depth(self) -> float:
        """The shallow-diffusion depth fed (0..1): ``RenderSettings.depth``, else the bank's
        ``max_depth``, at most ``max_depth``; 1.0 for a bank without variable depth."""
        acoustic = self.bank.acoustic
        max_depth = acoustic.max_depth
        if max_depth is None:
            return 1.0 if self.settings.depth is None else min(self.settings.depth, 1.0)
        depth = self.settings.depth if self.settings.depth is not None else max_depth
        return min(depth, max_depth)

    def _f0(self, timing: PhraseTiming, steps: int) -> np.ndarray:
        pitch = self.parts.get("pitch")
        if pitch is None:
            return timing.f0
        n = timing.n_frames
        encoded = pitch.encode(timing)
        out = pitch.predictor.run({
            **encoded, "ph_dur": timing.durations[None], "note_midi": timing.note_midi[None],
            "note_rest": timing.note_rest[None], "note_dur": timing.note_dur[None],
            "note_glide": lambda: np.zeros_like(timing.note_dur[None]),  # 0: no glide
            "pitch": timing.pitch[None], "expr": lambda: np.full((1, n), self.settings.expr,
                                                                   np.float32),
            "retake": np.ones((1, n), dtype=bool),
            "spk_embed": lambda: _speaker_frames(pitch.speaker, n, "pitch"),
            **self._step_feeds(pitch.predictor, steps)})
        midi = np.asarray(out["pitch_pred"], dtype=np.float64).reshape(-1)
        if midi.size != n or not np.all(np.isfinite(midi)):
            raise VoicebankError(f"{pitch.predictor.path}: pitch_pred has {midi.size} values "
                                 f"(finite: {bool(np.all(np.isfinite(midi)))}), expected {n}")
        return midi_to_hz(midi).astype(np.float32)

    def _curves(self, timing: PhraseTiming, f0: np.ndarray, steps: int) -> dict[str, np.ndarray]:
        n = timing.n_frames
        curves = {c: np.full(n, self.settings.curves.get(c, 0.0), np.float32) for c in CURVES}
        variance = self.parts.get("variance")
        wanted = [c for c in CURVES if c in self.acoustic]
        if variance is None or not wanted:
            return curves
        declared = [c for c in CURVES if c in variance.predictor]
        encoded = variance.encode(timing)
        out = variance.predictor.run({
            **encoded, "ph_dur": timing.durations[None],
            "pitch": hz_to_midi(f0).astype(np.float32)[None],
            **{c: np.zeros((1, n), np.float32) for c in declared},
            "retake": np.ones((1, n, max(1, len(declared))), dtype=bool),
            "spk_embed": lambda: _speaker_frames(variance.speaker, n, "variance"),
            **self._step_feeds(variance.predictor, steps)})
        for c in CURVES:
            if f"{c}_pred" in out:
                curves[c] = np.asarray(out[f"{c}_pred"], dtype=np.float32).reshape(-1)[:n]
        return curves


def _words(syllables: Sequence[SungSyllable]) -> list[list[SungSyllable]]:
    """Syllables grouped into words (a word starts at ``word_start``)."""
    words: list[list[SungSyllable]] = []
    for s in syllables:
        if s.word_start or not words:
            words.append([s])
        else:
            words[-1].append(s)
    return words


def _fit_syllables(syllables: Sequence[tuple[str, ...]], n: int, word: str,
                   vowels: Collection[str]) -> list[tuple[str, ...]]:
    """``syllables`` made ``n`` long: extra ones join the last, missing ones hold its vowel."""
    if not syllables:
        raise VoicebankError(f"cannot sing {word!r}: no phonemes for it")
    if len(syllables) != n:
        log.info("%s: %d syllables in the pronunciation, %d in the plan", word, len(syllables),
                 n)
    out = list(syllables[:n])
    if len(syllables) > n:
        out[-1] = tuple(p for s in syllables[n - 1:] for p in s)
    last = syllables[-1]
    held = next((p for p in last if is_vowel(p, vowels)), last[-1])
    out += [(held,)] * (n - len(out))
    return out


def calibration_plans() -> list[PhrasePlan]:
    """Two phrases over a wide range (C3 to C5), sung to calibrate the int8 vocoder."""
    words = ("hold", "the", "light", "and", "open", "every", "window", "to", "the", "sky")
    plans = []
    for low in (48, 60):
        syllables = tuple(
            SungSyllable(text=w, word=w, phonemes=(), notes=(SungNote(low + (5 * i) % 13,
                                                                      4.0 + i, 1.0),))
            for i, w in enumerate(words))
        plans.append(PhrasePlan(bar=1, section="calibration", text=" ".join(words),
                                syllables=syllables))
    return plans
