"""Keras models built from the zoo's :class:`ModelSpec`, on whatever backend Keras runs."""

from __future__ import annotations

import hashlib
from typing import Any

from agnostic_saliency.testing import ModelSpec
from agnostic_saliency.testing.builders import build_keras

__all__ = ["CHANNELS_FIRST_SIZE", "build_channels_first_cnn", "build_keras_model",
           "shared_keras_model"]

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


#: Height and width of the images :func:`build_channels_first_cnn` takes: its global
#: pooling makes any size work, and these keep the convolution's output width (6)
#: apart from its number of channels (4). Keras on TensorFlow adds a bias the
#: channels-last way when the last axis has as many entries as there are channels
#: (``keras.ops.add`` takes such a sum for a ``BiasAdd``), so a channels-first
#: convolution with output width 4 computes a different function there.
CHANNELS_FIRST_SIZE = (9, 8)


def build_channels_first_cnn(spec: ModelSpec) -> Any:
    """The zoo's ``cnn`` for ``layout="channels_first"`` as a Keras model whose
    ``Conv2D`` and pooling layers say ``data_format="channels_first"``, for inputs of
    shape ``(N, 3, *CHANNELS_FIRST_SIZE)``.

    Keras stores a kernel as ``(kh, kw, in, out)`` in either data format, and the
    pooling comes before the dense layer, so the spec's weights are used as they are.
    """
    import keras

    assert spec.name == "cnn" and spec.layout == "channels_first", spec
    conv, _, _, dense = spec.layers
    kh, kw, cin, cout = conv.kernel.shape
    model = keras.Sequential([
        keras.Input((cin, *CHANNELS_FIRST_SIZE)),
        keras.layers.Conv2D(cout, (kh, kw), data_format="channels_first"),
        keras.layers.Activation("tanh"),
        keras.layers.GlobalAveragePooling2D(data_format="channels_first"),
        keras.layers.Dense(dense.weight.shape[1]),
    ])
    model.layers[0].set_weights([conv.kernel, conv.bias])
    model.layers[-1].set_weights([dense.weight, dense.bias])
    return model
