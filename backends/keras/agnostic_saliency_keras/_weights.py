"""A Keras model's layer weights (already in the canonical layout: dense ``(in, out)``,
convolution ``(*kernel, in, out)``), and copies with new weights, for the sanity checks
(:mod:`agnostic_saliency.sanity`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["layer_weights", "with_layer_weights"]


def layer_weights(model: Any) -> list[tuple[str, list[np.ndarray]]]:
    """``(name, trainable weights)`` of each layer that has some, input to output;
    the layers of nested models are listed as ``"outer/inner"``."""
    return [(name, [np.array(w.numpy()) for w in layer.trainable_weights])
            for name, layer in _layers(model)]


def with_layer_weights(model: Any, weights: Mapping[str, list[np.ndarray]]) -> Any:
    """A clone of ``model`` (``keras.models.clone_model``, its weights copied) whose layers
    named in ``weights`` hold those weights."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    names = [name for name, _ in _layers(model)]
    layers = dict(zip(names, (layer for _, layer in _layers(clone)), strict=True))
    for name, values in weights.items():
        if name not in layers:
            raise KeyError(f"the model has no layer {name!r}; its layers are {names}")
        variables = layers[name].trainable_weights
        if len(variables) != len(values):
            raise ValueError(f"layer {name!r} holds {len(variables)} weights; "
                             f"{len(values)} given")
        for variable, value in zip(variables, values, strict=True):
            if tuple(variable.shape) != np.shape(value):
                raise ValueError(f"layer {name!r}: a weight of shape {np.shape(value)} for a "
                                 f"variable of shape {tuple(variable.shape)}")
            variable.assign(np.asarray(value, dtype=variable.dtype))
    return clone


def _layers(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    import keras

    found: list[tuple[str, Any]] = []
    for layer in model.layers:
        name = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            found.extend(_layers(layer, f"{name}/"))
        elif layer.trainable_weights:
            found.append((name, layer))
    return found
