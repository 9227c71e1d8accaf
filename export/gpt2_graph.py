"""A transformers GPT-2 written out as one ONNX graph whose key/value cache is updated in place.

    graph = build_graph(model, half_weights=True)     # model: GPT2LMHeadModel, eval mode
    onnx.save(graph, "model.onnx")

The graph is built node by node from the model's weights (no tracing), so every operator is
the one chosen here: ONNX Runtime's fused ``GroupQueryAttention`` (com.microsoft) does the
attention, reading and writing the cache in buffers that the caller binds as both the past
input and the present output of each layer, so a step copies nothing but the new keys and
values into place. The contract (``engine/lyrics/gpt2_runner.py`` runs it)::

    input_ids        int64   [batch, seq]
    total_length     int32   []        positions filled after this run (cached + seq)
    logits_start     int64   []        first position whose logits are computed (seq - 1:
                                       the next-token logits only; 0: every position)
    past_key.{i}     float32 [batch, n_head, capacity, head_dim]     i = 0 .. n_layer - 1
    past_value.{i}   float32 [batch, n_head, capacity, head_dim]
    logits           float32 [batch, seq - logits_start, vocab]
    present_key.{i}  float32 [batch, n_head, capacity, head_dim]     (the same buffer when
    present_value.{i} float32 [batch, n_head, capacity, head_dim]     bound to past_key.{i})

The position of ``input_ids[:, j]`` is ``total_length - seq + j``. ``capacity`` is whatever
the caller allocates (at least ``total_length``). ONNX Runtime's operator takes several
tokens on a filled cache only at batch 1: a batch continues one token at a time.

Per block (pre-norm, as transformers' ``GPT2Block``): ``LayerNormalization`` (ln_1) ->
``MatMul + Add`` (c_attn: the packed q, k, v) -> ``GroupQueryAttention`` (causal, scale as
the config asks) -> ``MatMul + Add`` (c_proj) -> residual; ``LayerNormalization`` (ln_2) ->
``MatMul`` -> ``FastGelu`` with the bias (gelu_new) or ``BiasGelu`` (exact gelu) -> ``MatMul
+ Add`` -> residual. Then ln_f, the slice from ``logits_start``, and the LM head as ``Gemm``
with the embedding matrix transposed in the kernel (the tied weight is stored once).

Every initializer carries its transformers name (``transformer.h.0.attn.c_attn.weight``),
``_f16`` added when ``half_weights`` stores it as float16 behind a ``Cast`` that ONNX Runtime
folds into float32 when the session opens; nothing is merged, so ``hf_from_export`` can read
every weight back.
"""

from __future__ import annotations

import numpy as np

HALF_SUFFIX = "_f16"
HALF_MIN_ELEMENTS = 4096  # smaller tensors (biases, layer norms) stay float32
MS_DOMAIN = "com.microsoft"
OPSET = 17
ACTIVATIONS = {"gelu_new": "FastGelu", "gelu_pytorch_tanh": "FastGelu", "gelu": "BiasGelu"}


def past_names(n_layer: int) -> list[str]:
    return [f"past_{kind}.{i}" for i in range(n_layer) for kind in ("key", "value")]


def present_names(n_layer: int) -> list[str]:
    return [f"present_{kind}.{i}" for i in range(n_layer) for kind in ("key", "value")]


def check_supported(cfg) -> None:
    """Refuse what this graph does not compute (ValueError naming the setting)."""
    if cfg.activation_function not in ACTIVATIONS:
        raise ValueError(f"activation_function {cfg.activation_function!r} is not supported "
                         f"(one of {sorted(ACTIVATIONS)})")
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"n_embd {cfg.n_embd} is not a multiple of n_head {cfg.n_head}")


def attention_scaling(cfg, layer: int, attn=None) -> float:
    """The factor on q.k: the attention module's own ``scaling`` when it has one, else
    1/sqrt(head_dim) (and 1/(layer+1)) as the config asks."""
    if getattr(attn, "scaling", None) is not None:
        return float(attn.scaling)
    scaling = (cfg.n_embd // cfg.n_head) ** -0.5 if cfg.scale_attn_weights else 1.0
    if cfg.scale_attn_by_inverse_layer_idx:
        scaling /= float(layer + 1)
    return scaling


class _Builder:
    """Nodes and initializers of one graph, with fresh names for intermediate values."""

    def __init__(self, state: dict[str, np.ndarray], half_weights: bool):
        self.state = state
        self.half = half_weights
        self.nodes: list = []
        self.initializers: list = []
        self.stored: set[str] = set()
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def node(self, op: str, inputs: list[str], hint: str, *, outputs: int = 1,
             domain: str = "", **attrs) -> list[str]:
        from onnx import helper

        names = [self.name(hint) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=names[0], domain=domain,
                                           **attrs))
        return names

    def one(self, op: str, inputs: list[str], hint: str, **attrs) -> str:
        return self.node(op, inputs, hint, **attrs)[0]

    def weight(self, key: str) -> str:
        """The model's tensor ``key`` as an initializer (once), float16 behind a Cast if big."""
        from onnx import TensorProto, helper, numpy_helper

        if key in self.stored:
            return key
        self.stored.add(key)
        array = np.ascontiguousarray(self.state[key], dtype=np.float32)
        if self.half and array.size >= HALF_MIN_ELEMENTS:
            half = numpy_helper.from_array(array.astype(np.float16), key + HALF_SUFFIX)
            self.initializers.append(half)
            self.nodes.insert(0, helper.make_node("Cast", [half.name], [key], name=key + "_cast",
                                                  to=TensorProto.FLOAT))
        else:
            self.initializers.append(numpy_helper.from_array(array, key))
        return key

    def constant(self, value, hint: str) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name


def build_graph(model, *, half_weights: bool = True, opset: int = OPSET):
    """The ONNX model (``onnx.ModelProto``) of ``model`` (a ``GPT2LMHeadModel``)."""
    from onnx import TensorProto, helper

    cfg = model.config
    check_supported(cfg)
    n_layer, n_head, n_embd, vocab = cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size
    head_dim = n_embd // n_head
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    b = _Builder(state, half_weights)
    eps = float(cfg.layer_norm_epsilon)

    def layer_norm(x: str, prefix: str) -> str:
        return b.one("LayerNormalization", [x, b.weight(prefix + ".weight"),
                                            b.weight(prefix + ".bias")], prefix.split(".")[-1],
                     axis=-1, epsilon=eps)

    def linear(x: str, prefix: str) -> str:  # transformers' Conv1D: x @ weight + bias
        product = b.one("MatMul", [x, b.weight(prefix + ".weight")], "matmul")
        return b.one("Add", [product, b.weight(prefix + ".bias")], "add")

    # positions total_length - seq .. total_length - 1, and each row's filled length - 1
    shape = b.one("Shape", ["input_ids"], "shape")                              # [2]
    batch = b.one("Slice", [shape, b.constant([0], "zero"), b.constant([1], "one")], "batch")
    seq = b.one("Gather", [shape, b.constant(1, "axis1")], "seq")              # scalar
    total = b.one("Cast", ["total_length"], "total64", to=TensorProto.INT64)
    first = b.one("Sub", [total, seq], "first")
    positions = b.one("Range", [first, total, b.constant(np.int64(1), "step")], "positions")
    last = b.one("Sub", ["total_length", b.constant(np.int32(1), "one32")], "last")
    seqlens = b.one("Expand", [last, batch], "seqlens_k")                     # int32 [batch]

    tokens = b.one("Gather", [b.weight("transformer.wte.weight"), "input_ids"], "tokens")
    places = b.one("Gather", [b.weight("transformer.wpe.weight"), positions], "places")
    hidden = b.one("Add", [tokens, places], "embed")                           # (B, S, E)
    gelu = ACTIVATIONS[cfg.activation_function]
    for i in range(n_layer):
        p = f"transformer.h.{i}"
        qkv = linear(layer_norm(hidden, p + ".ln_1"), p + ".attn.c_attn")       # (B, S, 3E)
        attn, _, _ = b.node(
            "GroupQueryAttention",
            [qkv, "", "", f"past_key.{i}", f"past_value.{i}", seqlens, "total_length"],
            "attention", outputs=3, domain=MS_DOMAIN, num_heads=n_head, kv_num_heads=n_head,
            scale=attention_scaling(cfg, i, model.transformer.h[i].attn))
        b.nodes[-1].output[1:] = [f"present_key.{i}", f"present_value.{i}"]
        hidden = b.one("Add", [hidden, linear(attn, p + ".attn.c_proj")], "residual")
        inner = b.one("MatMul", [layer_norm(hidden, p + ".ln_2"), b.weight(p + ".mlp.c_fc.weight")],
                      "matmul")
        inner = b.one(gelu, [inner, b.weight(p + ".mlp.c_fc.bias")], "gelu", domain=MS_DOMAIN)
        hidden = b.one("Add", [hidden, linear(inner, p + ".mlp.c_proj")], "residual")

    final = layer_norm(hidden, "transformer.ln_f")
    start = b.one("Unsqueeze", ["logits_start", b.constant([0], "axes0")], "start")
    kept = b.one("Slice", [final, start, b.constant([np.iinfo(np.int64).max], "end"),
                           b.constant([1], "axes1")], "kept")                  # (B, S', E)
    flat = b.one("Reshape", [kept, b.constant([-1, n_embd], "flat")], "flat")
    head = "lm_head.weight"
    tied = np.array_equal(state.get(head), state["transformer.wte.weight"])
    head_weight = b.weight("transformer.wte.weight" if tied else head)         # (V, E)
    scores = b.one("Gemm", [flat, head_weight], "lm_head", transB=1)           # (B*S', V)
    out_shape = b.one("Concat", [batch, b.constant([-1, vocab], "rest")], "out_shape", axis=0)
    b.nodes.append(helper.make_node("Reshape", [scores, out_shape], ["logits"], name="logits"))

    cache = ["batch", n_head, "capacity", head_dim]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("total_length", TensorProto.INT32, []),
              helper.make_tensor_value_info("logits_start", TensorProto.INT64, [])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, cache)
               for n in past_names(n_layer)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch", "logits_seq", vocab])]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, cache)
                for n in present_names(n_layer)]
    graph = helper.make_graph(b.nodes, "encore_gpt2", inputs, outputs, b.initializers)
    return helper.make_model(graph, producer_name="encore",
                             opset_imports=[helper.make_opsetid("", opset),
                                            helper.make_opsetid(MS_DOMAIN, 1)])
