"""The GPT-2 lyricist's key/value cache: preallocated buffers that the graph updates in place.

    cache = KVCache.empty(session, n_layer=4, n_head=4, head_dim=64, batch=1, capacity=40)
    logits = cache.run(np.asarray([ids]))          # [1, vocab]: the next token's logits
    lines = cache.repeated(8)                      # the prompt's cache for 8 lines
    logits = lines.run(tokens[:, None])            # one token per line, cache filled in place

Each layer's keys and values live in one numpy array [batch, n_head, capacity, head_dim]
each, bound (ONNX Runtime I/O binding) as both the layer's past input and its present
output, so a run writes only the new positions and copies nothing else
(``export/gpt2_graph.py`` describes the graph). ``length`` counts the filled positions.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def layer_names(n_layer: int, side: str) -> list[str]:
    """``past_key.0, past_value.0, past_key.1, ...`` (side ``past``) or the ``present`` ones."""
    return [f"{side}_{kind}.{i}" for i in range(n_layer) for kind in ("key", "value")]


class KVCache:
    """Cache buffers of one batch, bound to ``session``; :meth:`run` feeds tokens through."""

    def __init__(self, session: ort.InferenceSession, buffers: list[np.ndarray], length: int):
        self.session = session
        self.buffers = buffers                       # per layer: key, value
        self.length = length
        self.batch, _, self.capacity, _ = buffers[0].shape
        self._binding = session.io_binding()
        self._feeds: list[np.ndarray] = []            # kept alive while bound
        self._binding.bind_output("logits")  # first: get_outputs() lists in binding order
        n_layer = len(buffers) // 2
        for buffer, past, present in zip(buffers, layer_names(n_layer, "past"),
                                         layer_names(n_layer, "present"), strict=True):
            value = ort.OrtValue.ortvalue_from_numpy(buffer)
            self._binding.bind_ortvalue_input(past, value)
            self._binding.bind_ortvalue_output(present, value)

    @classmethod
    def empty(cls, session: ort.InferenceSession, *, n_layer: int, n_head: int, head_dim: int,
              batch: int, capacity: int) -> KVCache:
        shape = (batch, n_head, capacity, head_dim)
        return cls(session, [np.zeros(shape, np.float32) for _ in range(2 * n_layer)], 0)

    def run(self, input_ids: np.ndarray, *, all_logits: bool = False) -> np.ndarray:
        """Feed ``input_ids`` [batch, seq] after the cached positions; the cache grows by seq.

        Returns the last position's logits [batch, vocab], or every position's [batch, seq,
        vocab] with ``all_logits``. Several tokens on a filled cache only at batch 1 (ONNX
        Runtime's attention operator): a batch goes one token at a time.
        """
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        batch, seq = ids.shape
        total = self.length + seq
        if batch != self.batch:
            raise ValueError(f"{batch} rows of tokens for a cache of {self.batch}")
        if total > self.capacity:
            raise ValueError(f"{total} positions do not fit the cache's {self.capacity}")
        if seq > 1 and self.length and batch > 1:
            raise ValueError("several tokens on a filled cache need batch 1; feed a batch "
                             "one token at a time")
        self._feeds = [ids, np.array(total, np.int32),
                       np.array(0 if all_logits else seq - 1, np.int64)]
        for name, value in zip(("input_ids", "total_length", "logits_start"), self._feeds,
                               strict=True):
            self._binding.bind_cpu_input(name, value)
        # logits afresh: a bound output keeps its first shape (and memory) on the next run
        self._binding.bind_output("logits")
        self.session.run_with_iobinding(self._binding)
        self.length = total
        logits = np.array(self._binding.get_outputs()[0].numpy())  # a copy of ORT's memory
        return logits if all_logits else logits[:, -1]

    def repeated(self, batch: int, capacity: int | None = None) -> KVCache:
        """A new cache of ``batch`` rows, each a copy of this batch-1 cache's filled part."""
        if self.batch != 1:
            raise ValueError(f"only a batch-1 cache can be repeated, this one has {self.batch}")
        capacity = self.capacity if capacity is None else capacity
        if capacity < self.length:
            raise ValueError(f"capacity {capacity} is less than the {self.length} filled")
        buffers = []
        for source in self.buffers:
            _, n_head, _, head_dim = source.shape
            target = np.zeros((batch, n_head, capacity, head_dim), np.float32)
            target[:, :, : self.length] = source[:, :, : self.length]
            buffers.append(target)
        return KVCache(self.session, buffers, self.length)
