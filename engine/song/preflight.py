"""Every file a song will load, read and checked before anything heavy starts.

    check_song_files(patch, model_dir=None, audio=True)   # before a render or a show

A render or a show loads its models in turn (ONNX Runtime sessions of the song model, the
lyricist and the voice: seconds each on a busy machine; the 17 MB Markov words; worker
processes that load them again), so a bad file named late in that order, a GPT-2 config
or a voicebank's ``dsconfig.yaml``, would be refused only after all of that, and a
refusal is due within seconds. So ``encore render`` and ``encore live`` first pass every
file and folder the patch names through the readers that will load them, without
opening a graph:

- the song model: found (:func:`~engine.music.musicvae_runner.find_model`), each graph
  checked as a file (:func:`~engine.models.check_model_file`: regular, not too large);
- the lyricist: a GPT-2 folder's config and tokenizer read and checked, its graph as a file
  (:func:`~engine.lyrics.gpt2_runner.read_folder`); a Markov model the user brought (any
  but the shipped one, which is read when loaded) read whole by
  :meth:`~engine.lyrics.markov.MarkovLyricist.load` (bounded: a gzip bomb stops at its
  limit), before any graph is opened;
- the voice: a voicebank named by ``[voice] singer`` read by
  :func:`~engine.voice.voicebank.load_voicebank` (plain file reading: dsconfig.yaml,
  character.txt, phonemes, dictionaries), each of its graphs checked as a file.

The rules stay with the readers: this module only calls them early, in this order, and
drops what they return (reading a few small files twice costs milliseconds). The patch,
the output folder and an event log are read by the command itself, before this.
"""

from __future__ import annotations

from pathlib import Path

from engine.models import SHIPPED_MODELS, check_model_file
from engine.patch import Patch

__all__ = ["check_song_files"]


def check_song_files(patch: Patch, model_dir: str | Path | None = None, *,
                     audio: bool = True) -> None:
    """Raise what the loaders would raise (ValueError or OSError, naming the file) for any
    file a song of ``patch`` will load; ``audio``: the voice too (it sings only with
    audio)."""
    _check_song_model(patch, model_dir)
    lyrics = patch.lyrics.source != "off"
    if lyrics:
        _check_lyricist(patch, model_dir)
    if audio and lyrics:
        _check_voicebank(patch, model_dir)
    if lyrics:
        _check_markov(patch, model_dir)  # last: the one that reads megabytes


def _check_song_model(patch: Patch, model_dir: str | Path | None) -> None:
    from engine.music.musicvae_runner import find_model

    for graph in find_model(patch.song.model, model_dir):
        if graph is not None:
            check_model_file(graph)


def _check_lyricist(patch: Patch, model_dir: str | Path | None) -> None:
    if patch.lyrics.source != "gpt2":
        return
    from engine.lyrics.gpt2_runner import read_folder
    from engine.lyrics.sources import GPT2_FOLDER, find_model

    read_folder(find_model(patch.lyrics.model or GPT2_FOLDER, model_dir))


def _check_voicebank(patch: Patch, model_dir: str | Path | None) -> None:
    from engine.voice.choose import named_voicebank
    from engine.voice.voicebank import load_voicebank

    folder = named_voicebank(patch.voice, model_dir)
    if folder is None:  # off, fallback, or auto (which tries the banks it finds in turn)
        return
    bank = load_voicebank(folder)
    variance = (bank.dur, bank.pitch, bank.variance)
    for graph in (bank.acoustic.model, bank.vocoder.model,
                  *(model.model for model in variance if model is not None)):
        check_model_file(graph)


def _check_markov(patch: Patch, model_dir: str | Path | None) -> None:
    from engine.lyrics.markov import MarkovLyricist
    from engine.lyrics.sources import markov_path

    path = markov_path(patch.lyrics, model_dir)
    if path.resolve().parent != SHIPPED_MODELS.resolve():  # one the user brought
        MarkovLyricist.load(path)
