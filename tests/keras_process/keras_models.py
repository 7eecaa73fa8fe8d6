"""Keras models built from the zoo's :class:`ModelSpec`, on whatever backend Keras runs."""

from __future__ import annotations

import hashlib
from typing import Any

from agnostic_saliency.testing import ModelSpec
from agnostic_saliency.testing.models import Conv2D, Dense, Flatten, GlobalAveragePool, Tanh

__all__ = ["build_keras_model", "shared_keras_model"]

_shared: dict[tuple[str, ...], Any] = {}


def build_keras_model(spec: ModelSpec, dropout: float | None = None) -> Any:
    """``spec`` as a channels-last ``keras.Sequential`` in the weights' dtype.

    Parameters
    ----------
    spec
        A zoo model for the ``"channels_last"`` layout.
    dropout
        Rate of a ``Dropout`` layer put after every ``tanh``; ``None`` for none.
        At ``training=False`` it is the identity, so the function is unchanged.
    """
    import keras

    dtype = next(str(layer.bias.dtype) for layer in spec.layers
                 if isinstance(layer, (Dense, Conv2D)))
    model = keras.Sequential([keras.Input(spec.input_shape, dtype=dtype)])
    for layer in spec.layers:
        if isinstance(layer, Dense):
            dense = keras.layers.Dense(layer.weight.shape[1], dtype=dtype)
            model.add(dense)
            dense.set_weights([layer.weight, layer.bias])
        elif isinstance(layer, Conv2D):
            kh, kw, _, cout = layer.kernel.shape
            conv = keras.layers.Conv2D(cout, (kh, kw), padding="valid",
                                       data_format="channels_last", dtype=dtype)
            model.add(conv)
            conv.set_weights([layer.kernel, layer.bias])
        elif isinstance(layer, Tanh):
            model.add(keras.layers.Activation("tanh", dtype=dtype))
            if dropout is not None:
                model.add(keras.layers.Dropout(dropout, dtype=dtype))
        elif isinstance(layer, Flatten):
            model.add(keras.layers.Flatten(dtype=dtype))
        elif isinstance(layer, GlobalAveragePool):
            model.add(keras.layers.GlobalAveragePooling2D(data_format="channels_last",
                                                          dtype=dtype))
    return model


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
