"""A ``.pt`` checkpoint is data, never code, and the names in it never become paths.

Hostile checkpoints are made here in several ways: pickles whose objects call a function
when unpickled (``os.system``, ``exec``, ``eval``, ``subprocess``) hidden at the top, in
the state dict or in ``extra``, in both of torch's file formats; configs whose model name
climbs out of the output folder; configs of absurd sizes. Each is read by ``encore export
musicvae`` and ``--init`` (:func:`export.musicvae.load_checkpoint`) in a child process:
nothing runs (a marker file the payload would write is never there), nothing is written
outside OUT, and the refusal is an ``encore: error:``.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from export.musicvae import MusicVAE, MusicVAEConfig, save_checkpoint  # noqa: E402

SMALL = {"name": "tiny", "parts": ["melody"], "bars": 1, "enc_size": 8, "z_size": 4,
         "dec_size": 8, "dec_layers": 1}


class _Payload:
    """Unpickled, it calls ``call(*args)``: what a malicious checkpoint does."""

    def __init__(self, call: object, args: tuple) -> None:
        self.call, self.args = call, args

    def __reduce__(self):  # noqa: ANN204
        return self.call, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    import builtins
    import os
    import subprocess

    touch = f"open({str(marker)!r}, 'w').write('ran')"
    return {"os.system": _Payload(os.system, (f"touch {marker}",)),
            "exec": _Payload(builtins.exec, (touch,)),
            "eval": _Payload(builtins.eval, (touch,)),
            "subprocess": _Payload(subprocess.call, (["touch", str(marker)],))}


def _good_blob() -> dict:
    torch.manual_seed(0)
    model = MusicVAE(MusicVAEConfig(**SMALL))
    return {"format_version": 1, "config": model.cfg.to_json(), "step": 0,
            "state_dict": model.state_dict(), "extra": {}}


def _hostile_checkpoints(tmp_path: Path, marker: Path, seed: int) -> list[Path]:
    """Checkpoints that run a payload if unpickled: each payload at a random place of the
    blob, in torch's zip format and in its legacy format."""
    rng = random.Random(seed)
    made = []
    for name, payload in _payloads(marker).items():
        blob = _good_blob()
        where = rng.choice(["top", "state_dict", "extra", "config"])
        if where == "top":
            blob["hook"] = payload
        elif where == "state_dict":
            blob["state_dict"]["evil"] = payload
        elif where == "extra":
            blob["extra"] = {"nested": [1, {"deeper": payload}]}
        else:
            blob["config"] = payload
        legacy = rng.random() < 0.5
        path = tmp_path / f"{name}_{where}{'_legacy' if legacy else ''}.pt"
        torch.save(blob, path, _use_new_zipfile_serialization=not legacy)
        made.append(path)
    raw = tmp_path / "raw_pickle.pt"  # not torch's format at all: a bare pickle
    raw.write_bytes(pickle.dumps(_payloads(marker)["os.system"]))
    made.append(raw)
    return made


@pytest.mark.parametrize("seed", [1, 2])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(
        tmp_path: Path, bounded, seed: int) -> None:
    marker = tmp_path / "ran"
    paths = [str(p) for p in _hostile_checkpoints(tmp_path, marker, seed)]
    bounded.all_refused("from export.musicvae import load_checkpoint", f"""
        each_refused([(p, lambda p=p: load_checkpoint(p)) for p in {paths!r}], "{{label}}",
                     "could run code")
        """)
    assert not marker.exists(), "a payload ran"


def test_a_hostile_checkpoint_is_refused_by_export_and_train(tmp_path: Path, bounded) -> None:
    marker = tmp_path / "ran"
    path = _hostile_checkpoints(tmp_path, marker, 0)[0]
    out = tmp_path / "out"
    for argv in (["export", "musicvae", str(path), str(out)],
                 ["train", "musicvae", "--init", str(path), "--out", str(tmp_path / "run"),
                  "--midi-dir", str(tmp_path), "--max-steps", "1"]):
        outcome = bounded.run("from engine.cli import main", f"""
            try:
                main({argv!r})
            except SystemExit as stop:
                print("STATUS", stop.code)
            """)
        assert "STATUS 2" in outcome.output, outcome.output[-3000:]
        assert not marker.exists()
    assert not out.exists()


def _escaping_names(seed: int) -> list[str]:
    rng = random.Random(seed)
    parts = ["..", "/", "\\", "~", "etc", "passwd", "\x00", " ", ".", "a" * 300, "%2e%2e"]
    names = ["../escape", "../../../../tmp/escape", "/tmp/escape", "sub/../../escape", "..",
             ".", "", ".hidden", "a\x00b", "name/with/slash"]
    names += ["".join(rng.choice(parts) for _ in range(rng.randint(1, 6))) for _ in range(10)]
    return [n for n in names if "/" in n or ".." in n or "\x00" in n or not n or
            n.startswith(".") or len(n) > 64 or "\\" in n or " " in n or "~" in n or "%" in n]


@pytest.mark.parametrize("seed", [0])
def test_a_stored_name_never_becomes_a_path_outside_out(tmp_path: Path, bounded,
                                                        seed: int) -> None:
    """The model's name is read from the checkpoint; a name that is no plain file name is
    refused, and nothing is written anywhere (inside OUT or out of it)."""
    out = tmp_path / "deep" / "er" / "out"
    paths = []
    for n, name in enumerate(_escaping_names(seed)):
        blob = _good_blob()
        config = json.loads(blob["config"])
        blob["config"] = json.dumps(config | {"name": name})
        paths.append(str(tmp_path / f"named_{n}.pt"))
        torch.save(blob, paths[-1])
    before = set(tmp_path.rglob("*"))
    bounded.all_refused("from engine.cli import main\nimport export.musicvae_onnx", f"""
        def export(path):
            try:
                main(["export", "musicvae", path, {str(out)!r}])
            except SystemExit as stop:
                raise ValueError(f"status {{stop.code}}") from None

        each_refused([(p, lambda p=p: export(p)) for p in {paths!r}], "status 2")
        """)
    assert set(tmp_path.rglob("*")) == before
    assert not list(Path("/tmp").glob("escape*"))


CONFIGS = [("z_size", 10**9), ("dec_layers", 10**5), ("enc_size", -1), ("bars", 0),
           ("parts", ["melody"] * 1000), ("bars", 2.5), ("z_size", "128"), ("unknown", 1),
           ("free_bits", float("inf")), ("extra", [1]), ("conductor_size", 2**40)]


def test_a_config_out_of_range_is_refused_before_anything_is_allocated(
        tmp_path: Path, bounded) -> None:
    paths = []
    for n, (key, value) in enumerate(CONFIGS):
        blob = _good_blob()
        blob["config"] = json.dumps(json.loads(blob["config"]) | {key: value})
        paths.append(str(tmp_path / f"sizes_{n}.pt"))
        torch.save(blob, paths[-1])
    bounded.all_refused("from export.musicvae import load_checkpoint", f"""
        each_refused([(p, lambda p=p: load_checkpoint(p)) for p in {paths!r}], "{{label}}")
        """)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path, bounded) -> None:
    blob = _good_blob()
    key = next(iter(blob["state_dict"]))
    blob["state_dict"][key] = torch.zeros(3, 3)
    path = tmp_path / "shapes.pt"
    torch.save(blob, path)
    bounded.refused("from export.musicvae import load_checkpoint",
                    f"load_checkpoint({str(path)!r})", "do not fit its config")


def test_a_good_checkpoint_still_loads(tmp_path: Path) -> None:
    from export.musicvae import load_checkpoint

    path = tmp_path / "good.pt"
    save_checkpoint(path, MusicVAE(MusicVAEConfig(**SMALL)), 7, {"note": "x"})
    model, blob = load_checkpoint(path)
    assert model.cfg.name == "tiny" and blob["step"] == 7 and blob["extra"] == {"note": "x"}


def test_fuzz_checkpoint_configs(tmp_path: Path, bounded) -> None:
    """Any JSON value in any config key: refused or loaded, within the limits."""
    blob_path = tmp_path / "base.pt"
    torch.save(_good_blob(), blob_path)
    bounded.fuzz("""
        import json, torch
        from export.musicvae import load_checkpoint
        """, f"""
        base = torch.load({str(blob_path)!r}, weights_only=True)
        config = json.loads(base["config"])
        values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() |
                              st.text(max_size=20), lambda c: st.lists(c, max_size=4) |
                              st.dictionaries(st.text(max_size=5), c, max_size=4), max_leaves=8)

        @given(key=st.sampled_from(sorted(config) + ["other"]), value=values)
        @fuzz(40)
        def test(key, value):
            blob = dict(base)
            blob["config"] = json.dumps(config | {{key: value}})
            torch.save(blob, {str(tmp_path / 'fuzz.pt')!r})
            load_checkpoint({str(tmp_path / 'fuzz.pt')!r})

        test()
        """)
