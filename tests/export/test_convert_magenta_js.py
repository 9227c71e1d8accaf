"""Tests for the magenta.js MusicVAE checkpoint converter.

Each test writes a magenta.js-format checkpoint folder (config.json, weights_manifest.json,
shard files) from random TF-layout weights, converts it, and compares our PyTorch model with
an independent numpy implementation of the TF computation written here from the TF
semantics: LSTM cells with gate blocks i, j, f, o and a +1 forget bias, MultiRNNCell
stacking, initial states tanh(dense(cond)) split c0, h0, c1, h1, inputs concat(previous
one-hot, cond), a conductor with zero input, bar u starting from bar u-1's last token, and
a bidirectional LSTM encoder whose final fw/bw h feed ``mu``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from export import musicvae_onnx
from export.convert_magenta_js import convert, read_checkpoint, to_musicvae

MEL, DRUMS, ROLL = 90, 512, 10
ATOL = 1e-5
ENC_CELL = "encoder/cell_{}/bidirectional_rnn/{}/multi_rnn_cell/cell_0/lstm_cell/"

# ---- writing magenta.js checkpoints -------------------------------------------------------


def _lstm(w: dict, cell: str, in_size: int, size: int, rng: np.random.Generator) -> None:
    w[cell + "kernel"] = rng.normal(0.0, 0.4, (in_size + size, 4 * size)).astype(np.float32)
    w[cell + "bias"] = rng.normal(0.0, 0.2, 4 * size).astype(np.float32)


def _dense(w: dict, scope: str, n_in: int, n_out: int, rng: np.random.Generator) -> None:
    w[scope + "kernel"] = rng.normal(0.0, 0.4, (n_in, n_out)).astype(np.float32)
    w[scope + "bias"] = rng.normal(0.0, 0.2, n_out).astype(np.float32)


def _flat_encoder(w: dict, in_size: int, size: int, layers: int, z: int,
                  rng: np.random.Generator, sigma: bool = True) -> None:
    for layer in range(layers):
        for direction in ("fw", "bw"):
            cell = ENC_CELL.format(layer, direction)
            _lstm(w, cell, in_size if layer == 0 else 2 * size, size, rng)
    _dense(w, "encoder/mu/", 2 * size, z, rng)
    if sigma:
        _dense(w, "encoder/sigma/", 2 * size, z, rng)


def _core(w: dict, prefix: str, depth: int, cond: int, size: int, layers: int,
          rng: np.random.Generator) -> None:
    _dense(w, prefix + "z_to_initial_state/", cond, 2 * size * layers, rng)
    for layer in range(layers):
        _lstm(w, f"{prefix}multi_rnn_cell/cell_{layer}/lstm_cell/",
              depth + cond if layer == 0 else size, size, rng)
    _dense(w, prefix + "output_projection/", size, depth, rng)


def _conductor(w: dict, z: int, size: int, layers: int, in_size: int,
               rng: np.random.Generator) -> None:
    prefix = "decoder/hierarchical_level_0/"
    _dense(w, prefix + "initial_state/", z, 2 * size * layers, rng)
    for layer in range(layers):
        _lstm(w, f"{prefix}cell_{layer}/lstm_cell/", in_size if layer == 0 else size, size, rng)


def write_checkpoint(folder: Path, config: dict, weights: dict[str, np.ndarray],
                     quant: str | None = None, shard_bytes: int = 2048) -> dict[str, np.ndarray]:
    """Write a magenta.js folder (2 weight groups, shards of ``shard_bytes``); return the
    weights exactly as a reader must see them (after quantization)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    names = list(weights)
    half = len(names) // 2
    manifest, seen = [], {}
    for g, group in enumerate((names[:half], names[half:])):
        blob, entries = b"", []
        for name in group:
            value = weights[name]
            entry = {"name": name, "shape": list(value.shape), "dtype": "float32"}
            if quant is None:
                raw, seen[name] = value.astype("<f4").tobytes(), value
            elif quant == "float16":
                q = value.astype("<f2")
                raw, seen[name] = q.tobytes(), q.astype(np.float32)
                entry["quantization"] = {"dtype": "float16"}
            else:
                top = 255 if quant == "uint8" else 65535
                lo, hi = float(value.min()), float(value.max())
                scale = (hi - lo) / top or 1.0
                q = np.clip(np.round((value - lo) / scale), 0, top).astype(
                    "u1" if quant == "uint8" else "<u2")
                raw = q.tobytes()
                seen[name] = (q.astype(np.float64) * scale + lo).astype(np.float32)
                entry["quantization"] = {"dtype": quant, "scale": scale, "min": lo}
            blob += raw
            entries.append(entry)
        count = max(1, -(-len(blob) // shard_bytes))
        paths = [f"group{g + 1}-shard{i + 1}of{count}" for i in range(count)]
        for i, path in enumerate(paths):
            (folder / path).write_bytes(blob[i * shard_bytes:(i + 1) * shard_bytes])
        manifest.append({"paths": paths, "weights": entries})
    (folder / "weights_manifest.json").write_text(json.dumps(manifest))
    return seen


def _melody_args(steps: int, segments: int = 0) -> dict:
    args = {"numSteps": steps, "minPitch": 21, "maxPitch": 108}
    if segments:
        args["numSegments"] = segments
    return args


def _config(kind: str, args: dict) -> dict:
    return {"type": "MusicVAE", "dataConverter": {"type": kind, "args": args}}


def flat_melody(rng: np.random.Generator) -> tuple[dict, dict]:
    w: dict[str, np.ndarray] = {}
    _flat_encoder(w, MEL, 8, 1, 6, rng)
    _core(w, "decoder/", MEL, 6, 12, 2, rng)
    return _config("MelodyConverter", _melody_args(32)), w


def flat_drums(rng: np.random.Generator, kind: str) -> tuple[dict, dict]:
    w: dict[str, np.ndarray] = {}
    roll = kind == "DrumsConverter"  # magenta.js DrumsConverter: drum-roll encoder input
    _flat_encoder(w, ROLL if roll else DRUMS, 8, 1, 5, rng, sigma=not roll)
    _core(w, "decoder/", DRUMS, 5, 10, 2, rng)
    return _config(kind, {"numSteps": 32}), w


def hier_trio(rng: np.random.Generator) -> tuple[dict, dict]:
    w: dict[str, np.ndarray] = {}
    z, cond = 6, 8
    for level in range(2):  # magenta.js hierarchical encoder (not convertible)
        for direction in ("fw", "bw"):
            cell = (f"encoder/hierarchical_level_{level}/cell_0/bidirectional_rnn/{direction}/"
                    "multi_rnn_cell/cell_0/lstm_cell/")
            _lstm(w, cell, MEL + MEL + DRUMS if level == 0 else 16, 8, rng)
    _dense(w, "encoder/mu/", 16, z, rng)
    _conductor(w, z, cond, 2, 1, rng)
    for i, depth in enumerate((MEL, MEL, DRUMS)):
        _core(w, f"core_decoder/core_decoder_{i}/decoder/", depth, cond, 10, 2, rng)
    args = {"numSteps": 64, "numSegments": 4, "melArgs": _melody_args(64),
            "bassArgs": _melody_args(64), "drumsArgs": {"numSteps": 64}}
    return _config("TrioConverter", args), w


def hier_melody(rng: np.random.Generator) -> tuple[dict, dict]:
    """Python-hierdec style: flat 2-layer encoder, conductor with a 3-wide zero input."""
    w: dict[str, np.ndarray] = {}
    z, cond = 5, 7
    _flat_encoder(w, MEL, 6, 2, z, rng)
    _conductor(w, z, cond, 2, 3, rng)
    _core(w, "core_decoder/decoder/", MEL, cond, 9, 2, rng)
    return _config("MelodyConverter", _melody_args(64, 4)), w


# ---- independent numpy reference of the TF computation ----------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def tf_lstm_cell(kernel, bias, x, state):
    c, h = state
    gates = np.concatenate([x, h], axis=-1) @ kernel + bias
    i, j, f, o = np.split(gates, 4, axis=-1)
    c = c * _sigmoid(f + 1.0) + _sigmoid(i) * np.tanh(j)
    h = np.tanh(c) * _sigmoid(o)
    return h, (c, h)


def multi_rnn_cell(cells, x, states):
    new = []
    for (kernel, bias), state in zip(cells, states, strict=True):
        x, state = tf_lstm_cell(kernel, bias, x, state)
        new.append(state)
    return x, new


def initial_states(w, scope, cond, layers):
    flat = np.tanh(cond @ w[scope + "kernel"] + w[scope + "bias"])
    chunks = np.split(flat, 2 * layers, axis=-1)
    return [(chunks[2 * i], chunks[2 * i + 1]) for i in range(layers)]


def cells(w, prefix):
    out = []
    while f"{prefix}cell_{len(out)}/lstm_cell/kernel" in w:
        cell = f"{prefix}cell_{len(out)}/lstm_cell/"
        out.append((w[cell + "kernel"], w[cell + "bias"]))
    return out


@dataclass
class TFModel:
    w: dict[str, np.ndarray]  # float64
    cores: list[str]  # core decoder scopes, one per part
    depths: list[int]
    steps: int
    segments: int  # conductor steps; 0 for a flat decoder


def tf_model(weights: dict[str, np.ndarray], config: dict) -> TFModel:
    args = config["dataConverter"]["args"]
    segments = args.get("numSegments", 0)
    kind = config["dataConverter"]["type"]
    if kind == "TrioConverter":
        cores = [f"core_decoder/core_decoder_{i}/decoder/" for i in range(3)]
        depths = [MEL, MEL, DRUMS]
    else:
        cores = ["core_decoder/decoder/" if segments else "decoder/"]
        depths = [MEL if kind == "MelodyConverter" else DRUMS]
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    return TFModel(w, cores, depths, args["numSteps"], segments)


def tf_conds(m: TFModel, z: np.ndarray) -> list[np.ndarray]:
    if not m.segments:
        return [z]
    prefix = "decoder/hierarchical_level_0/"
    conductor = cells(m.w, prefix)
    states = initial_states(m.w, prefix + "initial_state/", z, len(conductor))
    in_size = conductor[0][0].shape[0] - conductor[0][1].shape[0] // 4
    zeros = np.zeros((z.shape[0], in_size))
    out = []
    for _ in range(m.segments):
        h, states = multi_rnn_cell(conductor, zeros, states)
        out.append(h)
    return out


def tf_decode(m: TFModel, z: np.ndarray, targets: list[np.ndarray] | None = None):
    """-> per-part logits [(B, T, depth)] and argmax events (B, P, T). With ``targets``
    (per-part one-hot (B, T, depth)) the inputs are teacher-forced."""
    conds = tf_conds(m, z)
    seg = m.steps // len(conds)
    batch = z.shape[0]
    all_logits, all_events = [], []
    for p, (scope, depth) in enumerate(zip(m.cores, m.depths, strict=True)):
        stack = cells(m.w, scope + "multi_rnn_cell/")
        prev = np.zeros((batch, depth))
        logits_p, events_p = [], []
        for u, cond in enumerate(conds):
            states = initial_states(m.w, scope + "z_to_initial_state/", cond, len(stack))
            for t in range(u * seg, (u + 1) * seg):
                h, states = multi_rnn_cell(stack, np.concatenate([prev, cond], -1), states)
                logits = h @ m.w[scope + "output_projection/kernel"] + \
                    m.w[scope + "output_projection/bias"]
                index = logits.argmax(-1)
                prev = targets[p][:, t] if targets is not None else np.eye(depth)[index]
                logits_p.append(logits)
                events_p.append(index)
        all_logits.append(np.stack(logits_p, 1))
        all_events.append(np.stack(events_p, 1))
    return all_logits, np.stack(all_events, 1)


def tf_encode_mu(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Stacked bidirectional LSTM (TF stack_bidirectional_dynamic_rnn) -> mu."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    batch, steps = x.shape[:2]
    inputs, layer = x, 0
    while ENC_CELL.format(layer, "fw") + "kernel" in w:
        outs, finals = [], []
        for direction in ("fw", "bw"):
            cell = ENC_CELL.format(layer, direction)
            kernel, bias = w[cell + "kernel"], w[cell + "bias"]
            size = bias.shape[0] // 4
            state = (np.zeros((batch, size)), np.zeros((batch, size)))
            order = range(steps) if direction == "fw" else reversed(range(steps))
            hs = [None] * steps
            for t in order:
                hs[t], state = tf_lstm_cell(kernel, bias, inputs[:, t], state)
            outs.append(np.stack(hs, 1))
            finals.append(state[1])
        inputs = np.concatenate(outs, -1)
        layer += 1
    code = np.concatenate(finals, -1)
    return code @ w["encoder/mu/kernel"] + w["encoder/mu/bias"]


def drum_roll(labels: np.ndarray) -> np.ndarray:
    """magenta.js DrumsConverter.toTensor: 9 drum bits + a final "no drum" column."""
    bits = (labels[..., None] >> np.arange(9)) & 1
    return np.concatenate([bits, (labels == 0)[..., None]], -1).astype(np.float64)


# ---- comparisons ----------------------------------------------------------------------


def check_decoder(model, m: TFModel, rng: np.random.Generator) -> np.ndarray:
    """Teacher-forced and free-running argmax decode against the reference; returns z."""
    z = rng.normal(size=(2, model.cfg.z_size)).astype(np.float32)
    labels = [rng.integers(0, d, size=(2, m.steps)) for d in m.depths]
    targets = [np.eye(d)[lab] for d, lab in zip(m.depths, labels, strict=True)]
    want_tf, _ = tf_decode(m, z.astype(np.float64), targets)
    with torch.no_grad():
        got_tf = model.teacher_forced_logits(
            torch.from_numpy(z), torch.from_numpy(np.concatenate(targets, -1).astype(np.float32)))
    for got, want in zip(got_tf, want_tf, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=ATOL)

    want_logits, want_events = tf_decode(m, z.astype(np.float64))
    uniform = torch.full((2, m.steps, sum(m.depths)), 0.5)
    with torch.no_grad():
        events, logits = model.decode(torch.from_numpy(z), torch.tensor(0.0), uniform)
    np.testing.assert_array_equal(events.numpy(), want_events)
    np.testing.assert_allclose(logits.numpy(), np.concatenate(want_logits, -1), rtol=0, atol=ATOL)
    assert len({tuple(e) for e in want_events.reshape(-1, m.steps)}) > 1  # not degenerate
    return z


def check_encoder(model, weights: dict, labels: np.ndarray, depth: int, tf_input: np.ndarray
                  ) -> None:
    x = torch.from_numpy(np.eye(depth, dtype=np.float32)[labels])
    with torch.no_grad():
        mu, sigma = model.encoder(x)
    np.testing.assert_allclose(mu.numpy(), tf_encode_mu(weights, tf_input), rtol=0, atol=ATOL)
    assert torch.all(sigma > 0)


def _convert_folder(folder: Path):
    config, weights = read_checkpoint(folder)
    return config, weights, to_musicvae(config, weights, name="t")


# ---- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("quant", [None, "uint8"])
def test_flat_melody(tmp_path: Path, quant: str | None) -> None:
    rng = np.random.default_rng(1)
    config, weights = flat_melody(rng)
    seen = write_checkpoint(tmp_path / "mel", config, weights, quant=quant, shard_bytes=3000)
    assert len(list((tmp_path / "mel").glob("group*-shard*"))) > 2
    read_config, read, model = _convert_folder(tmp_path / "mel")
    assert read_config == config
    assert set(read) == set(seen)
    for name, value in seen.items():
        np.testing.assert_array_equal(read[name], value, err_msg=name)
    if quant:
        assert not np.array_equal(seen["decoder/output_projection/kernel"],
                                  weights["decoder/output_projection/kernel"])
    cfg = model.cfg
    assert (cfg.parts, cfg.bars, cfg.z_size, cfg.dec_size, cfg.dec_layers, cfg.enc_size,
            cfg.enc_layers, cfg.hierarchical) == (("melody",), 2, 6, 12, 2, 8, 1, False)
    check_decoder(model, tf_model(seen, config), rng)
    labels = rng.integers(0, MEL, size=(3, 32))
    check_encoder(model, seen, labels, MEL, np.eye(MEL)[labels])


@pytest.mark.parametrize("kind", ["DrumsConverter", "DrumsOneHotConverter"])
def test_flat_drums(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(2)
    config, weights = flat_drums(rng, kind)
    seen = write_checkpoint(tmp_path / "drums", config, weights)
    if kind == "DrumsConverter":  # magenta.js drums checkpoints carry no encoder/sigma
        with pytest.warns(UserWarning, match="sigma"):
            _, _, model = _convert_folder(tmp_path / "drums")
        assert "folded" in model.cfg.extra["encoder"]
    else:
        _, _, model = _convert_folder(tmp_path / "drums")
    assert model.cfg.parts == ("drums",) and model.cfg.bars == 2
    check_decoder(model, tf_model(seen, config), rng)
    labels = rng.integers(0, DRUMS, size=(3, 32))
    labels[:, ::5] = 0  # some silent steps (the roll's "no drum" column)
    tf_input = drum_roll(labels) if kind == "DrumsConverter" else np.eye(DRUMS)[labels]
    check_encoder(model, seen, labels, DRUMS, tf_input)


def test_hierarchical_trio_decoder_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    config, weights = hier_trio(rng)
    seen = write_checkpoint(tmp_path / "trio", config, weights, shard_bytes=8192)
    with pytest.warns(UserWarning, match="encoder not converted"):
        _, _, model = _convert_folder(tmp_path / "trio")
    cfg = model.cfg
    assert (cfg.parts, cfg.bars, cfg.steps, cfg.z_size, cfg.conductor_size,
            cfg.conductor_layers, cfg.dec_size) == (("melody", "bass", "drums"), 4, 64, 6, 8, 2,
                                                    10)
    assert cfg.extra["encoder"].startswith("skipped")
    check_decoder(model, tf_model(seen, config), rng)


def test_hierarchical_melody_flat_encoder(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    config, weights = hier_melody(rng)
    seen = write_checkpoint(tmp_path / "hmel", config, weights)
    _, _, model = _convert_folder(tmp_path / "hmel")
    assert (model.cfg.enc_layers, model.cfg.conductor_size, model.cfg.bars) == (2, 7, 4)
    check_decoder(model, tf_model(seen, config), rng)
    labels = rng.integers(0, MEL, size=(2, 64))
    check_encoder(model, seen, labels, MEL, np.eye(MEL)[labels])


@pytest.mark.parametrize("quant", ["uint16", "float16"])
def test_read_other_quantizations(tmp_path: Path, quant: str) -> None:
    rng = np.random.default_rng(5)
    weights = {"a/kernel": rng.normal(size=(7, 5)).astype(np.float32),
               "b/bias": rng.normal(size=13).astype(np.float32),
               "c/kernel": rng.normal(size=(3, 3)).astype(np.float32)}
    seen = write_checkpoint(tmp_path / "q", _config("MelodyConverter", _melody_args(32)),
                            weights, quant=quant, shard_bytes=16)
    _, read = read_checkpoint(tmp_path / "q")
    for name, value in seen.items():
        np.testing.assert_array_equal(read[name], value)
        np.testing.assert_allclose(read[name], weights[name], atol=1e-2)


def test_truncated_missing_and_oversized_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    config, weights = flat_melody(rng)
    folder = tmp_path / "mel"
    write_checkpoint(folder, config, weights, shard_bytes=4000)
    manifest = json.loads((folder / "weights_manifest.json").read_text())
    inner = manifest[1]["paths"][1]
    good = (folder / inner).read_bytes()

    (folder / inner).write_bytes(good[:-10])
    with pytest.raises(ValueError, match=f"{inner}.*truncated"):
        read_checkpoint(folder)

    (folder / inner).write_bytes(good + b"\0" * 4)
    with pytest.raises(ValueError, match="disagree with the shapes"):
        read_checkpoint(folder)

    (folder / inner).unlink()
    with pytest.raises(ValueError, match=f"missing.*{inner}"):
        read_checkpoint(folder)

    (folder / inner).write_bytes(good)
    read_checkpoint(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json"):
        read_checkpoint(folder)


@pytest.mark.parametrize(("config", "match"), [
    ({"type": "MusicRNN", "dataConverter": {"type": "MelodyConverter"}}, "type is 'MusicRNN'"),
    (_config("MultitrackConverter", {"numSteps": 512}), "MultitrackConverter"),
    (_config("DrumRollConverter", {"numSteps": 32}), "DrumRollConverter"),
    (_config("MelodyConverter", {"numSteps": 32, "minPitch": 48, "maxPitch": 83}),
     "minPitch/maxPitch 48/83"),
    (_config("DrumsConverter", {"numSteps": 32, "pitchClasses": [[36], [38]]}),
     "2 drum pitch classes"),
    ({**_config("MelodyConverter", _melody_args(32)), "chordEncoder": "PitchChordEncoder"},
     "chord"),
    (_config("MelodyConverter", _melody_args(30)), "whole number"),
])
def test_config_errors(config: dict, match: str) -> None:
    _, weights = flat_melody(np.random.default_rng(7))
    with pytest.raises(ValueError, match=match):
        to_musicvae(config, weights)


def test_layout_errors() -> None:
    config, weights = flat_melody(np.random.default_rng(8))
    broken = {k: v for k, v in weights.items() if not k.startswith("decoder/output_projection")}
    with pytest.raises(ValueError, match="output_projection.*Names found.*z_to_initial_state"):
        to_musicvae(config, broken)
    hier = _config("MelodyConverter", _melody_args(32, 2))
    with pytest.raises(ValueError, match="numSegments"):
        to_musicvae(hier, weights)


def test_convert_onnx_matches_reference(tmp_path: Path) -> None:
    import onnxruntime as ort

    from export.musicvae import load_checkpoint

    rng = np.random.default_rng(9)
    config, weights = flat_melody(rng)
    seen = write_checkpoint(tmp_path / "mel_2bar_tiny", config, weights)
    paths = convert(tmp_path / "mel_2bar_tiny", tmp_path / "out")
    assert [p.name for p in paths] == ["mel_2bar_tiny.pt", "mel_2bar_tiny.encoder.onnx",
                                       "mel_2bar_tiny.decoder.onnx"]
    model, blob = load_checkpoint(paths[0])
    assert model.cfg.name == "mel_2bar_tiny" and blob["extra"]["source"] == "magenta-js"

    m = tf_model(seen, config)
    z = rng.normal(size=(3, 6)).astype(np.float32)
    _, want_events = tf_decode(m, z.astype(np.float64))
    decoder = ort.InferenceSession(str(paths[2]), providers=["CPUExecutionProvider"])
    events, _ = decoder.run(None, {"z": z, "temperature": np.array(0.0, np.float32),
                                   "uniform": np.full((3, 32, MEL), 0.5, np.float32)})
    np.testing.assert_array_equal(events, want_events)

    labels = rng.integers(0, MEL, size=(2, 32))
    encoder = ort.InferenceSession(str(paths[1]), providers=["CPUExecutionProvider"])
    mu, _ = encoder.run(None, {"inputs": np.eye(MEL, dtype=np.float32)[labels]})
    np.testing.assert_allclose(mu, tf_encode_mu(seen, np.eye(MEL)[labels]), rtol=0, atol=ATOL)


def test_convert_skipped_encoder_exports_decoder_only(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_decoder(model, path: Path) -> Path:
        calls.append(("decoder", path.name))
        path.write_bytes(b"onnx")
        return path

    def fake_all(model, out_dir: Path):
        calls.append(("all", out_dir))
        raise AssertionError("the encoder must not be exported")

    monkeypatch.setattr(musicvae_onnx, "export_decoder", fake_decoder)  # imported late
    monkeypatch.setattr(musicvae_onnx, "export_all", fake_all)
    config, weights = hier_trio(np.random.default_rng(10))
    write_checkpoint(tmp_path / "trio", config, weights, shard_bytes=1 << 20)
    with pytest.warns(UserWarning, match="decoder-only"):
        paths = convert(tmp_path / "trio", tmp_path / "out", name="trio_4bar")
    assert [p.name for p in paths] == ["trio_4bar.pt", "trio_4bar.decoder.onnx"]
    assert calls == [("decoder", "trio_4bar.decoder.onnx")]
