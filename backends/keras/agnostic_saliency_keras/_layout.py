"""The channel axis a Keras model declares for its image inputs.

Keras layers that see images spatially (convolutions, pooling, upsampling,
padding, cropping) carry a ``data_format``: ``"channels_first"`` puts the channels
on axis 1, ``"channels_last"`` on the last axis. A ``BatchNormalization`` with
``axis=1`` normalises channels on axis 1. The first such layer in the model's
order sees the input, so it decides; a model without any (a dense network) says
nothing, and the frontend keeps its default. So does a model that moves axes
(``Permute``, ``Reshape``) before such a layer: its layers then see another layout
than the inputs have.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["model_channel_axis"]

_AXES = {"channels_first": 1, "channels_last": -1}
#: Layers whose ``data_format`` orders features only, without reading channels.
_IGNORED = ("Flatten",)
#: Layers after which the layers' layout is no longer the inputs' layout.
_REARRANGING = ("Permute", "Reshape")


def model_channel_axis(model: Any, ndim: int) -> int | None:
    """The channel axis of ``model``'s rank-``ndim`` inputs, or ``None`` if it declares none.

    Parameters
    ----------
    model
        A Keras layer or model.
    ndim
        Rank of the inputs, batch axis included; inputs of rank 2 or less have no
        channels.

    Returns
    -------
    int or None
        ``1`` for channels first, ``-1`` for channels last.
    """
    if ndim < 3:
        return None
    for layer in _layers(model, 0):
        if type(layer).__name__ in _REARRANGING:
            return None
        axis = _declared_axis(layer)
        if axis is not None:
            return axis
    return None


def _declared_axis(layer: Any) -> int | None:
    if type(layer).__name__ in _IGNORED:
        return None
    if hasattr(layer, "data_format"):
        data_format = layer.data_format
        if data_format is None:  # a layer that defers to the global setting
            import keras

            data_format = keras.config.image_data_format()
        return _AXES.get(str(data_format))
    if type(layer).__name__ == "BatchNormalization":
        axis = getattr(layer, "axis", None)
        return 1 if axis in (1, [1], (1,)) else None
    return None


def _layers(layer: Any, depth: int) -> Iterator[Any]:
    """``layer`` and its sub-layers in order (``layers`` of models, nested models too)."""
    yield layer
    try:
        children = getattr(layer, "layers", None)
    except Exception:  # an odd property must not stop the explanation
        children = None
    if isinstance(children, (list, tuple)) and depth < 16:
        for child in children:
            yield from _layers(child, depth + 1)
