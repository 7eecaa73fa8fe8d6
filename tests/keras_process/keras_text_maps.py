"""The text classifier of ``text_same_weights`` as a Keras 3 functional model, and its maps.

Imported by ``tests/test_cross_framework_text.py`` for Keras on TensorFlow; run as
``python -m keras_process.keras_text_maps OUT.npz`` (from ``tests/``, with
``KERAS_BACKEND`` set) for Keras on JAX and on PyTorch, since ``KERAS_BACKEND`` is
fixed per process: one child computes every map of its backend and saves them.
"""

from __future__ import annotations

import sys
from typing import Any

import keras
import numpy as np
from text_same_weights import HIDDEN, LENGTH, VOCAB, explain_all, tokens, weights


class MaskedMean(keras.layers.Layer):
    """Mean over the unmasked tokens: ``sum(x * mask) / sum(mask)``."""

    def call(self, x: Any, mask: Any) -> Any:
        share = keras.ops.expand_dims(keras.ops.cast(mask, x.dtype), -1)
        return keras.ops.sum(x * share, axis=1) / keras.ops.sum(share, axis=1)


class MaskedAttention(keras.layers.Layer):
    """``softmax(q k^T / sqrt(D)) v`` with the padded keys' scores set to -1e9."""

    def call(self, query: Any, key: Any, value: Any, mask: Any) -> Any:
        scores = keras.ops.einsum("nld,nmd->nlm", query, key) / np.sqrt(HIDDEN)
        keep = keras.ops.expand_dims(keras.ops.equal(mask, 1), 1)
        scores = keras.ops.where(keep, scores, keras.ops.full_like(scores, -1e9))
        return keras.ops.matmul(keras.ops.softmax(scores, axis=-1), value)


def build(variant: str) -> Any:
    """The functional model ``[ids, mask] -> logits`` with the shared weights loaded."""
    params = weights()
    ids = keras.Input((LENGTH,), dtype="int32", name="ids")
    mask = keras.Input((LENGTH,), dtype="int32", name="mask")
    embedding = keras.layers.Embedding(VOCAB, HIDDEN, name="embedding")
    hidden = embedding(ids)
    loads: list[tuple[Any, list[np.ndarray]]] = [(embedding, [params["embedding"]])]
    if variant == "pool":
        mix = keras.layers.Dense(HIDDEN, activation="tanh", name="mix")
        per_token = mix(hidden)
        loads.append((mix, [params["mix_kernel"], params["mix_bias"]]))
    else:
        projections = {name: keras.layers.Dense(HIDDEN, use_bias=False, name=name)
                       for name in ("query", "key", "value")}
        attended = MaskedAttention()(*(layer(hidden) for layer in projections.values()), mask)
        per_token = keras.layers.Add()([hidden, attended])
        loads += [(layer, [params[name]]) for name, layer in projections.items()]
    head = keras.layers.Dense(3, name="head")
    model = keras.Model([ids, mask], head(MaskedMean()(per_token, mask)))
    loads.append((head, [params["head_kernel"], params["head_bias"]]))
    for layer, values in loads:
        layer.set_weights(values)
    return model


def all_maps() -> dict[str, np.ndarray]:
    """``"variant/method"`` -> token maps ``(N, L)`` on this process's Keras backend."""
    ids, mask = tokens()
    return explain_all(build, lambda model: model.get_layer("embedding"), [ids, mask],
                       backend="keras")


if __name__ == "__main__":
    np.savez(sys.argv[1], backend=keras.backend.backend(), **all_maps())
