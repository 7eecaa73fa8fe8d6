"""A PyTorch model's layer weights in the canonical layout, and copies with new weights,
for the sanity checks (:mod:`agnostic_saliency.sanity`).

The canonical layout is Keras's: a linear layer's weight ``(in, out)`` (PyTorch stores
``(out, in)``), a convolution's ``(*kernel, in, out)`` (PyTorch: ``(out, in, *kernel)``),
anything else as stored. A layer is a module that owns parameters itself.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["layer_weights", "with_layer_weights"]


def layer_weights(model: Any) -> list[tuple[str, list[np.ndarray]]]:
    """``(name, weights)`` of each module that owns trainable parameters, in the order
    of ``named_modules`` (registration order: input to output for ``Sequential``)."""
    layers = []
    for name, module in model.named_modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if params:
            layers.append((name or type(module).__name__,
                           [_canonical(module, p.detach().cpu().numpy()) for p in params]))
    return layers


def with_layer_weights(model: Any, weights: Mapping[str, list[np.ndarray]]) -> Any:
    """A deep copy of ``model`` whose modules named in ``weights`` hold those weights."""
    import torch

    clone = copy.deepcopy(model)
    modules = {name or type(module).__name__: module for name, module in clone.named_modules()}
    for name, values in weights.items():
        if name not in modules:
            raise KeyError(f"the model has no layer {name!r}; its layers are {sorted(modules)}")
        module = modules[name]
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if len(params) != len(values):
            raise ValueError(f"layer {name!r} holds {len(params)} weights; {len(values)} given")
        with torch.no_grad():
            for param, value in zip(params, values, strict=True):
                stored = _stored(module, np.asarray(value))
                if stored.shape != tuple(param.shape):
                    raise ValueError(f"layer {name!r}: a weight of canonical shape "
                                     f"{np.shape(value)} for a parameter of shape "
                                     f"{tuple(param.shape)}")
                param.copy_(torch.from_numpy(np.ascontiguousarray(stored)).to(param.dtype))
    return clone


def _is_conv(module: Any) -> bool:
    import torch

    return isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))


def _canonical(module: Any, value: np.ndarray) -> np.ndarray:
    import torch

    if value.ndim == 2 and isinstance(module, torch.nn.Linear):
        return np.ascontiguousarray(value.T)
    if value.ndim >= 3 and _is_conv(module):
        return np.ascontiguousarray(np.transpose(value, (*range(2, value.ndim), 1, 0)))
    return value


def _stored(module: Any, value: np.ndarray) -> np.ndarray:
    import torch

    if value.ndim == 2 and isinstance(module, torch.nn.Linear):
        return value.T
    if value.ndim >= 3 and _is_conv(module):
        k = value.ndim - 2
        return np.transpose(value, (k + 1, k, *range(k)))
    return value
