"""What the backend remembers about a model, weakly keyed so models are never kept alive.

- Its submodules and tensors, listed once: every call still reads their current
  ``training`` flags, devices and dtypes, but does not walk the module tree again.
- Whether to feed it channels-last image inputs. PyTorch's CPU (oneDNN) and cuDNN
  convolutions are faster on channels-last tensors; only the input's layout
  changes, never the user's parameters, and values are identical. A model whose
  forward cannot take a channels-last tensor (it calls ``.view()`` on activations,
  say) is remembered and gets the plain layout.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelInfo", "info"]

_lock = threading.Lock()
_infos: weakref.WeakKeyDictionary[Any, ModelInfo] = weakref.WeakKeyDictionary()


@dataclass
class ModelInfo:
    """Submodules (with names), parameters and buffers of a model, and its layout choice."""

    modules: tuple[tuple[str, Any], ...]
    tensors: tuple[Any, ...]
    channels_last: bool
    size: int

    def prefers_channels_last(self, tensor: Any) -> bool:
        """Whether to feed the model a channels-last copy of ``tensor``."""
        return self.channels_last and tensor.ndim == 4


def info(model: Any) -> ModelInfo:
    """The cached :class:`ModelInfo` of ``model``, rebuilt if its module tree changed size."""
    with _lock:
        known = _infos.get(model)
    size = len(model._modules) + len(model._parameters) + len(model._buffers)
    if known is not None and known.size == size:
        return known
    import torch

    modules = tuple(model.named_modules())
    fresh = ModelInfo(
        modules=modules,
        tensors=(*model.parameters(), *model.buffers()),
        channels_last=any(isinstance(module, torch.nn.Conv2d) for _, module in modules),
        size=size,
    )
    with _lock:
        _infos[model] = fresh
    return fresh


def refuse_channels_last(model: Any) -> None:
    """Remember that ``model`` fails on channels-last inputs."""
    info(model).channels_last = False
