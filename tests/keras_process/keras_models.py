"""Keras models built from the zoo's :class:`ModelSpec`, on whatever backend Keras runs."""

from __future__ import annotations

import hashlib
from typing import Any

from agnostic_saliency.testing import ModelSpec
from agnostic_saliency.testing.builders import build_keras

__all__ = ["build_channels_first_cnn", "build_keras_model", "shared_keras_model"]

_shared: dict[tuple[str, ...], Any] = {}


build_keras_model = build_keras


def shared_keras_model(spec: ModelSpec) -> Any:
    """One model per distinct spec in this process, built by :func:`build_keras_model`.

    Callers must not change it; conformance checks assert that explaining does not.
    """
    digest = hashlib.sha256()
    for layer in spec.layers:
        for value in vars(layer).values():
            digest.update(value.tobytes())
    key = (spec.name, spec.layout, str(spec.layers[-1].bias.dtype), digest.hexdigest())
    if key not in _shared:
        _shared[key] = build_keras_model(spec)
    return _shared[key]


def build_channels_first_cnn(spec: ModelSpec) -> Any:
    """The zoo's ``cnn`` for ``layout="channels_first"`` as a Keras model whose
    ``Conv2D`` and pooling layers say ``data_format="channels_first"``.

    Keras stores a kernel as ``(kh, kw, in, out)`` in either data format, and the
    pooling comes before the dense layer, so the spec's weights are used as they are.
    """
    import keras

    assert spec.name == "cnn" and spec.layout == "channels_first", spec
    conv, _, _, dense = spec.layers
    kh, kw, _, cout = conv.kernel.shape
    model = keras.Sequential([
        keras.Input(spec.input_shape),
        keras.layers.Conv2D(cout, (kh, kw), data_format="channels_first"),
        keras.layers.Activation("tanh"),
        keras.layers.GlobalAveragePooling2D(data_format="channels_first"),
        keras.layers.Dense(dense.weight.shape[1]),
    ])
    model.layers[0].set_weights([conv.kernel, conv.bias])
    model.layers[-1].set_weights([dense.weight, dense.bias])
    return model
