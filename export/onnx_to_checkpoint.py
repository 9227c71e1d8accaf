"""A shipped MusicVAE's weights back from its ONNX files into a training checkpoint.

    python -m export.onnx_to_checkpoint trio_4bar runs/from_trio_4bar/last.pt
    python -m export.train_musicvae --init runs/from_trio_4bar/last.pt ...

The encoder and decoder graphs carry every weight: the linear layers under their PyTorch
names and the LSTMs as ONNX ``LSTM`` nodes, one per layer, in the order PyTorch exported
them (the conductor, then each part's core decoder; the encoder's one bidirectional
layer). ONNX orders an LSTM's gates input, output, forget, cell where PyTorch has input,
forget, cell, output, and keeps both biases in one tensor; this undoes that. The result
is checked: the rebuilt model must decode exactly the events the ONNX decoder does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from export.musicvae import MusicVAE, MusicVAEConfig, save_checkpoint


def _torch_gates(block: np.ndarray, hidden: int) -> np.ndarray:
    """ONNX gate order (i, o, f, c) along axis 0 -> PyTorch's (i, f, c, o)."""
    i, o, f, c = (block[k * hidden:(k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, c, o])


def _lstm_nodes(graph) -> list:
    nodes = []
    for node in graph.node:
        if node.op_type == "LSTM":
            nodes.append(node)
        for attribute in node.attribute:  # a Loop or If body
            if attribute.g is not None and attribute.g.node:
                nodes += _lstm_nodes(attribute.g)
    return nodes


def _lstm_weights(model, prefix: str, modules: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
    """``modules``: (PyTorch LSTM name, layers) in export order -> its parameters."""
    import onnx.numpy_helper as nh

    values = {i.name: nh.to_array(i) for i in model.graph.initializer}
    # An unrolled decode repeats each layer's node; the repeats read copies of the
    # weights (Identity outputs), the first one reads the initializers themselves.
    nodes = [node for node in _lstm_nodes(model.graph) if node.input[1] in values]
    need = sum(layers for _, layers in modules)
    if len(nodes) != need:
        raise ValueError(f"{prefix}: {len(nodes)} LSTM nodes, expected {need}")
    out, index = {}, 0
    for name, layers in modules:
        for layer in range(layers):
            node = nodes[index]
            index += 1
            w, r, b = (values[node.input[k]] for k in (1, 2, 3))
            hidden = r.shape[-1]
            for direction in range(w.shape[0]):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                out[f"{name}.weight_ih{suffix}"] = _torch_gates(w[direction], hidden)
                out[f"{name}.weight_hh{suffix}"] = _torch_gates(r[direction], hidden)
                out[f"{name}.bias_ih{suffix}"] = _torch_gates(b[direction][:4 * hidden], hidden)
                out[f"{name}.bias_hh{suffix}"] = _torch_gates(b[direction][4 * hidden:], hidden)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}


def model_from_onnx(name: str, model_dir: Path) -> MusicVAE:
    """The PyTorch model of ``model_dir/<name>.{encoder,decoder}.onnx``, checked."""
    import onnx
    import onnx.numpy_helper as nh

    decoder = onnx.load(str(model_dir / f"{name}.decoder.onnx"))
    encoder = onnx.load(str(model_dir / f"{name}.encoder.onnx"))
    meta = {p.key: p.value for p in decoder.metadata_props}
    cfg = MusicVAEConfig.from_json(meta["encore.config"])
    model = MusicVAE(cfg)
    state = {}
    for graph, strip in ((decoder.graph, "model."), (encoder.graph, "")):
        for init in graph.initializer:
            if not init.name.startswith("onnx::"):
                key = init.name[len(strip):] if init.name.startswith(strip) else init.name
                state[key] = torch.from_numpy(nh.to_array(init).copy())
    cores = [(f"cores.{p}.rnn", cfg.dec_layers) for p in range(len(cfg.parts))]
    conductor = [("conductor", cfg.conductor_layers)] if cfg.hierarchical else []
    state |= _lstm_weights(decoder, "decoder", conductor + cores)
    state |= _lstm_weights(encoder, "encoder", [("encoder.rnn", cfg.enc_layers)])
    model.load_state_dict(state, strict=True)
    model.eval()
    _check(model, model_dir / f"{name}.decoder.onnx")
    return model


def _check(model: MusicVAE, decoder: Path, n: int = 4) -> None:
    import onnxruntime as ort

    cfg = model.cfg
    session = ort.InferenceSession(str(decoder), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, cfg.z_size)).astype(np.float32)
    uniform = rng.random((n, cfg.steps, sum(cfg.depths))).astype(np.float32)
    events, _ = session.run(None, {"z": z, "temperature": np.array(1.0, np.float32),
                                   "uniform": uniform})
    with torch.no_grad():
        mine, _ = model.decode(torch.from_numpy(z), torch.tensor(1.0), torch.from_numpy(uniform))
    if not (mine.numpy() == events).all():
        raise ValueError(f"{decoder}: the rebuilt weights decode differently from the graph")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="model name in --model-dir (e.g. trio_4bar)")
    parser.add_argument("out", type=Path, help="checkpoint to write (.pt); never replaced")
    parser.add_argument("--model-dir", type=Path, default=Path("models_onnx"))
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; give another path")
    model = model_from_onnx(args.name, args.model_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, model, 0, {"from_onnx": args.name})
    print(json.dumps({"checkpoint": str(args.out), "name": args.name,
                      "parameters": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
