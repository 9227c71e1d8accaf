"""YAML alias bombs and other hostile voicebank YAML: refused within the limits, with a
message that shows at most a short excerpt of any value.

The bombs are generated ("billion laughs": each level a list of the previous level's
alias, ``width`` times, ``depth`` levels deep), at random sizes from a few hundred bytes
up, and as a value of a real key (where a reader would print or walk it). Each load runs
in a child with 1 GiB more than its imports and a minute to live.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

AUDIO = {"sample_rate": 16000, "hop_size": 16, "num_mel_bins": 16, "mel_fmin": 40,
         "mel_fmax": 8000, "mel_base": "e", "win_size": 64, "fft_size": 64}


def bank(root: Path, dsconfig: str) -> Path:
    folder = root / "bank"
    (folder / "dsvocoder").mkdir(parents=True)
    (folder / "phonemes.json").write_text(json.dumps({p: i for i, p in enumerate(
        ["<PAD>", "SP", "AP", "aa", "b"])}))
    (folder / "dsconfig.yaml").write_text(dsconfig)
    (folder / "acoustic.onnx").write_bytes(b"")
    (folder / "dsvocoder" / "vocoder.yaml").write_text(yaml.safe_dump(
        {"name": "voc", "model": "model.onnx", **AUDIO}))
    (folder / "dsvocoder" / "model.onnx").write_bytes(b"")
    return folder


def alias_bomb(depth: int, width: int, key: str | None) -> str:
    """``depth`` levels of lists, each ``width`` aliases of the level below: width**depth
    leaves from a few hundred bytes. Under ``key`` of a real dsconfig when ``key`` is set."""
    lines = ['l0: &l0 ["laugh"]']
    for level in range(1, depth + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    good = {"acoustic": "acoustic.onnx", "phonemes": "phonemes.json", **AUDIO}
    if key is not None:
        good = {k: v for k, v in good.items() if k != key}
        lines.append(f"{key}: *l{depth}")
    lines.append(yaml.safe_dump(good))
    return "\n".join(lines)


def test_alias_bombs_of_random_shapes_are_refused(tmp_path: Path, bounded) -> None:
    rng = random.Random(14)
    keys = [None, "sample_rate", "mel_base", "acoustic", "speakers", "hop_size"]
    folders = []
    for n in range(12):
        depth, width = rng.randint(6, 12), rng.randint(10, 16)  # 10**6..16**12 values
        text = alias_bomb(depth, width, rng.choice(keys))
        assert len(text) < 4000  # a small file
        folders.append(str(bank(tmp_path / str(n), text)))
    bounded.all_refused("from engine.voice.voicebank import load_voicebank", f"""
        each_refused([(f, lambda f=f: load_voicebank(f)) for f in {folders!r}],
                     "{{label}}/dsconfig.yaml", "alias")
        """)


def test_a_few_aliases_still_load(tmp_path: Path) -> None:
    """Anchors and a handful of aliases are ordinary YAML: within the budget."""
    from engine.voice.voicebank import load_voicebank

    text = ("rate: &rate 16000\n" + yaml.safe_dump({k: v for k, v in AUDIO.items()
                                                    if k != "sample_rate"})
            + "sample_rate: *rate\nacoustic: acoustic.onnx\nphonemes: phonemes.json\n")
    assert load_voicebank(bank(tmp_path, text)).acoustic.audio.sample_rate == 16000


def test_a_huge_value_shows_only_an_excerpt(tmp_path: Path, bounded) -> None:
    """A wrong-typed value of 5 MB (no aliases) is named in a message of a line."""
    big = "x" * 2**20
    folder = bank(tmp_path, yaml.safe_dump({"acoustic": "acoustic.onnx", "phonemes":
                                            "phonemes.json", **AUDIO, "hop_size": [big]}))
    bounded.refused("from engine.voice.voicebank import load_voicebank",
                    f"load_voicebank({str(folder)!r})", "hop_size", "...")


def test_fuzz_dsconfig_values(tmp_path: Path, bounded) -> None:
    """Any YAML value (aliases included) under any key a bank reads: refused or loaded."""
    folder = bank(tmp_path, "")
    bounded.fuzz("""
        import yaml
        from engine.voice.voicebank import load_voicebank
        """, f"""
        good = {{"acoustic": "acoustic.onnx", "phonemes": "phonemes.json", **{AUDIO!r}}}
        values = st.recursive(st.none() | st.booleans() | st.integers() |
                              st.floats(allow_nan=True) | st.text(max_size=30),
                              lambda c: st.lists(c, max_size=5) |
                              st.dictionaries(st.text(max_size=8), c, max_size=5),
                              max_leaves=20)

        @given(key=st.sampled_from(sorted(good) + ["speakers", "vocoder", "dictionary",
                                                   "hidden_size", "use_lang_id"]),
               value=values, bomb=st.integers(0, 3))
        @fuzz(60)
        def test(key, value, bomb):
            text = yaml.safe_dump(good | {{key: value}})
            if bomb:
                text = "a: &a [1, 2]\\n" + "".join(
                    f"b{{i}}: &b{{i}} [" + ", ".join(["*a" if i == 0 else f"*b{{i - 1}}"] * 9)
                    + "]\\n" for i in range(bomb * 3)) + text
            with open({str(folder / 'dsconfig.yaml')!r}, "w") as f:
                f.write(text)
            load_voicebank({str(folder)!r})

        test()
        """)
