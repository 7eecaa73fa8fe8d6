"""A Flax NNX model's layer weights and copies with new weights, for the sanity checks
(:mod:`agnostic_saliency.sanity`).

``nnx.Linear`` and ``nnx.Conv`` store their kernels in the canonical layout already
(dense ``(in, out)``, convolution ``(*kernel, in, out)``). A layer is a module that owns
``nnx.Param`` attributes itself. Plain JAX functions have no layers to list.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["layer_weights", "with_layer_weights"]


def layer_weights(model: Any) -> list[tuple[str, list[np.ndarray]]]:
    """``(name, params)`` of each NNX module that owns ``nnx.Param`` attributes, in
    ``nnx.iter_modules`` order; the name is the module's path joined by ``/``."""
    return [(name, [np.asarray(_get(p)) for p in params])
            for name, params in _layers(model).items()]


def with_layer_weights(model: Any, weights: Mapping[str, list[np.ndarray]]) -> Any:
    """A copy of ``model`` (``nnx.clone``) whose modules named in ``weights`` hold those
    weights."""
    import jax.numpy as jnp

    nnx = _nnx(model)
    clone = nnx.clone(model)
    layers = _layers(clone)
    for name, values in weights.items():
        if name not in layers:
            raise KeyError(f"the model has no layer {name!r}; its layers are {list(layers)}")
        params = layers[name]
        if len(params) != len(values):
            raise ValueError(f"layer {name!r} holds {len(params)} weights; {len(values)} given")
        for param, value in zip(params, values, strict=True):
            stored = _get(param)
            if tuple(stored.shape) != np.shape(value):
                raise ValueError(f"layer {name!r}: a weight of shape {np.shape(value)} for a "
                                 f"parameter of shape {tuple(stored.shape)}")
            param.set_value(jnp.asarray(value, dtype=stored.dtype))
    return clone


def _nnx(model: Any) -> Any:
    nnx = sys.modules.get("flax.nnx")
    if nnx is None or not isinstance(model, nnx.Module):
        raise NotImplementedError(
            f"listing the layers of a {type(model).__name__} is not supported by the JAX "
            "backend: model randomization needs a Flax NNX module (a plain function has "
            "no layers)")
    return nnx


def _layers(model: Any) -> dict[str, list[Any]]:
    nnx = _nnx(model)
    found: dict[str, list[Any]] = {}
    for path, module in nnx.iter_modules(model):
        owned = {key: value for key, value in vars(module).items()
                 if isinstance(value, nnx.Param)}
        # kernel before bias, as Keras and PyTorch list them; then the rest as defined
        first = [owned.pop(key) for key in ("kernel", "bias") if key in owned]
        params = first + list(owned.values())
        if params:
            found["/".join(str(part) for part in path) or type(module).__name__] = params
    return found


def _get(param: Any) -> Any:
    return param.get_value()
