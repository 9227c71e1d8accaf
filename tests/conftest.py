"""Fixtures shared by the whole test suite.

Tiny random-weight MusicVAE models, exported to ONNX once per session (PyTorch builds them;
the runtime under test never imports it):

- ``tiny_model_dir``: a folder with ``tiny_trio`` (melody, bass and drums in 4-bar
  segments, like the shipped ``trio_4bar``); ``tiny_trio`` is a runner on it;
- ``tiny_mel_dir``: a folder with ``tiny_mel`` (melody only, 2 bars), for refusals of
  models that are not trios.

The ONNX export of the unrolled decoder takes tens of seconds (the exporter's passes over
~30 000 nodes), so the two files are kept in pytest's cache folder (``.pytest_cache``), under
a key that hashes everything the export reads: the exporting code, this file, the seed, the
config and the torch and onnx versions. A later session copies them from there; any change
to one of those exports afresh. ``-p no:cacheprovider`` (or ``make clean``) exports every
time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _encore_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Derived models (a live DiffSinger voice's int8 vocoder copy) go to the session's
    temporary folder, not the user's cache (child processes inherit it)."""
    monkeypatch.setenv("ENCORE_CACHE", str(tmp_path_factory.getbasetemp() / "encore-cache"))


REPO = Path(__file__).resolve().parents[1]
# what the export reads: a change to any of these exports afresh
EXPORT_SOURCES = ("export/musicvae.py", "export/musicvae_onnx.py", "engine/music/encoding.py",
                  "tests/conftest.py")


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread meanwhile: the ONNX export of a tiny model (thousands of tiny
    ops) took a quarter less CPU and a fifth less time so than on two threads here."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _export_key(seed: int, config: dict) -> str:
    import onnx
    import torch

    digest = hashlib.sha256()
    for name in EXPORT_SOURCES:
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes() + b"\0")
    digest.update(repr((seed, sorted(config.items()), torch.__version__,
                        onnx.__version__)).encode())
    return digest.hexdigest()[:32]


def _export(out: Path, seed: int, config: pytest.Config, **model) -> Path:
    """Export a random-weight MusicVAE of ``model``'s config (seeded) into ``out``, or copy
    the files a former session exported from the same sources (see the module's notes)."""
    torch = pytest.importorskip("torch")
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    kept = (cache.mkdir("encore-tiny-models") / _export_key(seed, model)
            if cache is not None else None)
    names = [f"{model['name']}.encoder.onnx", f"{model['name']}.decoder.onnx"]
    if kept is not None and all((kept / name).is_file() for name in names):
        for name in names:
            shutil.copyfile(kept / name, out / name)
        return out
    from export.musicvae import MusicVAE, MusicVAEConfig
    from export.musicvae_onnx import export_all

    torch.manual_seed(seed)
    with warnings.catch_warnings(), one_torch_thread():
        warnings.simplefilter("ignore")  # the ONNX exporter's notes
        export_all(MusicVAE(MusicVAEConfig(**model)).eval(), out)
    if kept is not None:  # written aside, then renamed: a session stopped midway keeps none
        shutil.rmtree(kept, ignore_errors=True)  # an incomplete copy (a file taken away)
        aside = kept.with_name(f"{kept.name}.{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir()
        for name in names:
            shutil.copyfile(out / name, aside / name)
        with contextlib.suppress(OSError):  # another session kept the same files first
            aside.rename(kept)
        shutil.rmtree(aside, ignore_errors=True)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, pytestconfig) -> Path:
    return _export(tmp_path_factory.mktemp("tiny_trio"), 0, pytestconfig, name="tiny_trio",
                   parts=("melody", "bass", "drums"), bars=4, enc_size=8, z_size=8,
                   dec_size=8, dec_layers=2, conductor_size=8, conductor_layers=2)


@pytest.fixture(scope="session")
def tiny_mel_dir(tmp_path_factory, pytestconfig) -> Path:
    return _export(tmp_path_factory.mktemp("tiny_mel"), 1, pytestconfig, name="tiny_mel",
                   parts=("melody",), bars=2, enc_size=8, z_size=4, dec_size=8,
                   dec_layers=2)


@pytest.fixture(scope="session")
def tiny_trio(tiny_model_dir: Path):
    """A MusicVAERunner on ``tiny_trio`` (CPU)."""
    from engine.music.musicvae_runner import load_model

    return load_model("tiny_trio", model_dir=tiny_model_dir,
                      providers=["CPUExecutionProvider"])


# ---- a tiny trained GPT-2 lyricist (tests/export/test_gpt2_onnx.py, tests/lyrics/) -----------
GPT2_VERSES = """\
the night is long and the road is cold
i walk alone beneath the silver moon
the river sings a song of summer rain
my heart is open like a morning door
we danced until the city lights went out
the road goes on beyond the quiet hills
i hear your voice inside the falling rain
hold me close before the morning comes
the moon is rising over silver water
your eyes are burning like a summer fire
we sing the old songs when the night is young
the wind is calling from the empty fields
i will wait for you beside the river bend
the morning light is breaking through the door
do not let the fire fade into the night
we ran together down the dusty road"""


@pytest.fixture(scope="session")
def tiny_gpt2_hf_dir(tmp_path_factory) -> Path:
    """A Hugging Face folder of a 2-layer, 64-wide GPT-2 trained for a few seconds on
    ``GPT2_VERSES`` (stanzas of four lines in the training format, ``about:`` themes):
    enough that it writes line breaks, small enough to train and export in seconds."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from export.gpt2_lyrics import LyricsModelConfig, build_model, format_corpus, train_tokenizer

    lines = GPT2_VERSES.splitlines()
    stanzas = [lines[i:i + 4] for i in range(len(lines))]  # overlapping, wrapping around
    stanzas = [s + lines[: 4 - len(s)] for s in stanzas]
    tokenizer = train_tokenizer(lines, vocab_size=300)
    text = "".join(format_corpus(stanzas * 4, seed=0))
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.int64)
    block = 48
    blocks = ids[: len(ids) // block * block].view(-1, block)
    torch.manual_seed(0)
    model = build_model(LyricsModelConfig(n_layer=2, n_head=2, n_embd=64, n_positions=96,
                                          vocab_size=300, dropout=0.0), tokenizer)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread
    try:
        for _ in range(150):
            x = blocks[torch.randint(len(blocks), (16,), generator=generator)]
            loss = model(input_ids=x, labels=x).loss
            optim.zero_grad()
            loss.backward()
            optim.step()
    finally:
        torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("tiny_gpt2") / "hf"
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_gpt2_onnx_dir(tiny_gpt2_hf_dir: Path, tmp_path_factory) -> Path:
    """``tiny_gpt2_hf_dir`` exported by ``export_gpt2`` (model.onnx, tokenizer.json,
    encore_gpt2.json)."""
    from export.gpt2_onnx import export_gpt2

    out = tmp_path_factory.mktemp("tiny_gpt2_onnx")
    export_gpt2(tiny_gpt2_hf_dir, out, half_weights=False)  # exact: parity tests compare
    return out
