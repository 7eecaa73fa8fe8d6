"""What the backend remembers about a model, weakly keyed so models are never kept alive.

- Its submodules and tensors, listed once: every call still reads their current
  ``training`` flags, devices and dtypes, but does not walk the module tree again
  (42 µs for a 5-layer MLP, 1.5 ms for 180 modules).
- Whether to feed it channels-last image inputs. PyTorch's CPU (oneDNN) and cuDNN
  convolutions are faster on channels-last tensors; only the input's layout
  changes, never the user's parameters, and values are identical. A model whose
  forward cannot take a channels-last tensor (it calls ``.view()`` on activations,
  say) is remembered and gets the plain layout.

The list goes stale when a submodule, parameter or buffer is added, replaced or
removed at any depth. Two cheap tests catch that before each call: PyTorch's
global registration hooks count every assignment of a module, parameter or buffer
in the process (a replaced Dropout, say), and the number of entries of every
listed module catches what bypasses them (``ModuleList.insert``, ``del``). Either
change rebuilds the list.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelInfo", "info", "refuse_channels_last"]

_lock = threading.Lock()
_infos: weakref.WeakKeyDictionary[Any, ModelInfo] = weakref.WeakKeyDictionary()
#: Models that failed on a channels-last input: they keep the plain layout.
_plain_layout: weakref.WeakSet[Any] = weakref.WeakSet()


def _nothing() -> None:
    return None


#: Weak references to the model of the latest call and to its info: one tuple,
#: replaced whole, so a reader never sees the model of one pair with the other's info.
_last: tuple[Any, Any] = (_nothing, _nothing)


class _Registrations:
    """How many modules, parameters and buffers were assigned in this process so far."""

    count = 0
    installed = False

    @classmethod
    def install(cls) -> None:
        """Register the counting hooks with PyTorch, once per process."""
        from torch.nn.modules import module

        with _lock:
            if cls.installed:
                return
            for register in (module.register_module_module_registration_hook,
                             module.register_module_parameter_registration_hook,
                             module.register_module_buffer_registration_hook):
                register(cls.note)
            cls.installed = True

    @classmethod
    def note(cls, module: Any, name: str, value: Any) -> None:
        """Hook: count one registration; returning ``None`` leaves the value as it is."""
        cls.count += 1  # a lost increment under a race still changes the count


@dataclass
class ModelInfo:
    """Submodules (with names), parameters and buffers of a model, and its layout choice.

    The model itself is held weakly: an entry of the weakly keyed cache that held its
    key would keep every model alive.
    """

    root: weakref.ref[Any]
    submodules: tuple[tuple[str, Any], ...]
    tensors: tuple[Any, ...]
    #: The submodules without their names, for the loops that run on every call.
    submodule_objects: tuple[Any, ...]
    channels_last: bool
    registrations: int
    entries: int
    #: Whether the forward changes its input in place; ``None`` until a call tells.
    changes_inputs: bool | None = None

    @property
    def modules(self) -> tuple[tuple[str, Any], ...]:
        """Every module with its name, the model itself first (named ``""``)."""
        return (("", self.root()), *self.submodules)

    def any_training(self, model: Any) -> bool:
        """Whether ``model`` (this info's model) or one of its submodules is training."""
        if model.training:
            return True
        for module in self.submodule_objects:
            if module.training:
                return True
        return False

    def prefers_channels_last(self, tensor: Any) -> bool:
        """Whether to feed the model a channels-last copy of ``tensor``."""
        return self.channels_last and tensor.ndim == 4

    def is_current(self, model: Any) -> bool:
        """Whether no module, parameter or buffer was added to, replaced in or removed
        from ``model`` (this info's model) since."""
        return (self.registrations == _Registrations.count
                and self.entries == _entries(model) + _entries(*self.submodule_objects))


def info(model: Any) -> ModelInfo:
    """The cached :class:`ModelInfo` of ``model``, rebuilt if its module tree changed."""
    global _last
    last_model, last_info = _last
    latest = last_model() is model  # the usual case, a loop over one model, skips the dict
    if latest:
        known = last_info()
    else:
        with _lock:
            known = _infos.get(model)
    if known is not None and known.is_current(model):
        if not latest:
            _last = known.root, weakref.ref(known)
        return known
    import torch

    _Registrations.install()
    registrations = _Registrations.count  # read before the walk: a change during it rebuilds
    modules = tuple(model.named_modules())
    root = weakref.ref(model)
    fresh = ModelInfo(
        root=root,
        submodules=tuple(entry for entry in modules if entry[1] is not model),
        tensors=(*model.parameters(), *model.buffers()),
        submodule_objects=tuple(module for _, module in modules if module is not model),
        channels_last=model not in _plain_layout
        and any(isinstance(module, torch.nn.Conv2d) for _, module in modules),
        registrations=registrations,
        entries=_entries(*(module for _, module in modules)),
    )
    with _lock:
        _infos[model] = fresh
    _last = root, weakref.ref(fresh)
    return fresh


def refuse_channels_last(model: Any) -> None:
    """Remember that ``model`` fails on channels-last inputs."""
    with _lock:
        _plain_layout.add(model)
    info(model).channels_last = False


def _entries(*modules: Any) -> int:
    """Submodules, parameters and buffers held by ``modules``, counted."""
    total = 0
    for module in modules:  # a loop, not sum() of a generator: run on every call
        total += len(module._modules) + len(module._parameters) + len(module._buffers)
    return total
