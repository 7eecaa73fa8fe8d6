"""Registry of backends and detection of a model's framework.

Plugins are read once from the entry-point group ``agnostic_saliency.backends``
and imported on first use. Detection never imports a framework: a backend is asked
only when one of its modules is already in :data:`sys.modules` and a class of that
module appears in the model type's MRO.
"""

from __future__ import annotations

import sys
import threading
import warnings
from importlib import metadata
from typing import Any

from agnostic_saliency import messages
from agnostic_saliency.backend import (
    Backend,
    BackendBase,
    as_backend_base,
    plugin_of,
    user_stacklevel,
)

__all__ = ["get_backend", "list_backends", "register_backend", "resolve_backend"]

ENTRY_POINT_GROUP = "agnostic_saliency.backends"
_REQUIRED_MEMBERS = ("name", "modules", "priority", "channel_axis", "can_handle", "predict",
                     "gradient", "to_numpy")

_lock = threading.RLock()
_registered: dict[str, BackendBase] = {}
_entry_points: dict[str, metadata.EntryPoint] | None = None
_failed: set[str] = set()


def _discover() -> dict[str, metadata.EntryPoint]:
    """Read the entry points once; report names claimed by several plugins."""
    global _entry_points
    with _lock:
        if _entry_points is None:
            found: dict[str, list[metadata.EntryPoint]] = {}
            for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
                found.setdefault(entry.name, []).append(entry)
            for name, entries in found.items():
                targets = sorted({entry.value for entry in entries})
                if len(targets) > 1:
                    warnings.warn(messages.plugin_duplicate(name, targets),
                                  messages.SaliencyWarning, stacklevel=user_stacklevel())
                found[name] = sorted(entries, key=lambda entry: entry.value)
            _entry_points = {name: entries[0] for name, entries in found.items()}
        return _entry_points


def _load(name: str) -> BackendBase | None:
    """Import a plugin's backend on first use; a plugin that fails warns once."""
    with _lock:
        if name in _registered:
            return _registered[name]
        entry = _discover().get(name)
        if entry is None or name in _failed:
            return None
        try:
            factory = entry.load()
            backend = factory() if isinstance(factory, type) else factory
            _check_backend(backend)
            backend = as_backend_base(backend)
        except Exception as error:  # a broken plugin must not break the others
            _failed.add(name)
            warnings.warn(messages.plugin_failed(name, entry.value, error),
                          messages.SaliencyWarning, stacklevel=user_stacklevel())
            return None
        _registered[name] = backend
        return backend


def _check_backend(backend: object) -> None:
    missing = [member for member in _REQUIRED_MEMBERS if not hasattr(backend, member)]
    if missing:
        raise TypeError(messages.not_a_backend(backend, missing))


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Register a backend object under ``backend.name``.

    Parameters
    ----------
    backend
        An object implementing :class:`agnostic_saliency.backend.Backend`.
    replace
        Replace a different backend already registered under the same name.

    Returns
    -------
    Backend
        The registered backend (handy as a decorator on a class instance).

    Raises
    ------
    TypeError
        If ``backend`` lacks members of the protocol.
    ValueError
        If the name is taken by another object and ``replace`` is false.
    """
    _check_backend(backend)
    with _lock:
        current = _registered.get(backend.name)
        if current is None and backend.name in _discover() and backend.name not in _failed:
            current = _load(backend.name)
        if current is not None and plugin_of(current) is not backend and not replace:
            raise ValueError(messages.backend_name_taken(backend.name))
        _registered[backend.name] = as_backend_base(backend)
    return backend


def registered_as(name: str) -> BackendBase | None:
    """The backend loaded or registered under ``name`` so far, without loading any."""
    return _registered.get(name)


def list_backends() -> list[str]:
    """Names of all registered and installed backends, sorted."""
    with _lock:
        names = set(_registered) | (set(_discover()) - _failed)
    return sorted(names)


def get_backend(name: str) -> BackendBase:
    """Return the backend instance registered as ``name``.

    Raises
    ------
    ValueError
        If no backend of that name is registered or installed.
    """
    backend = _load(name)
    if backend is None:
        raise ValueError(messages.unknown_backend(name, list_backends()))
    return backend


def _all_backends() -> list[BackendBase]:
    backends = [_load(name) for name in list_backends()]
    present = [backend for backend in backends if backend is not None]
    return sorted(present, key=lambda backend: (-backend.priority, backend.name))


def _type_modules(model: Any) -> list[str]:
    """Top-level module names of the classes in the MRO of ``type(model)``."""
    modules: list[str] = []
    for cls in type(model).__mro__:
        top = cls.__module__.split(".")[0]
        if top not in modules and top != "builtins":
            modules.append(top)
    return modules


def resolve_backend(model: Any, backend: str | Backend | None = None) -> BackendBase:
    """Pick the backend for ``model``; an explicit ``backend`` always wins.

    Raises
    ------
    TypeError
        If no backend handles the model, or ``backend`` is not a backend.
    ValueError
        If ``backend`` names no registered backend.
    """
    if isinstance(backend, str):
        return get_backend(backend)
    if backend is not None:
        _check_backend(backend)
        return as_backend_base(backend)
    return _detect(model)


def _detect(model: Any) -> BackendBase:
    modules = _type_modules(model)
    found = _first_handler(model, _likely_backends(modules), modules)
    if found is not None:
        return found
    candidates = _all_backends()
    if not candidates:
        raise TypeError(messages.no_backend_installed())
    found = _first_handler(model, candidates, modules)
    if found is not None:
        return found
    raise TypeError(_no_match_message(model, modules, candidates))


def _likely_backends(modules: list[str]) -> list[BackendBase]:
    """The backends loaded so far, and the plugins named after the model's framework:
    building an explainer imports only what it needs."""
    with _lock:
        names = set(_registered) | ({_FRAMEWORK_EXTRAS.get(module, module) for module in modules}
                                    & (set(_discover()) - _failed))
    backends = [_load(name) for name in sorted(names)]
    return sorted((backend for backend in backends if backend is not None),
                  key=lambda backend: (-backend.priority, backend.name))


def _first_handler(model: Any, candidates: list[BackendBase], modules: list[str]
                   ) -> BackendBase | None:
    for candidate in candidates:
        if not any(module in sys.modules and module in modules for module in candidate.modules):
            continue
        try:
            if candidate.can_handle(model):
                return candidate
        except Exception as error:  # one faulty plugin must not break detection
            warnings.warn(messages.can_handle_failed(candidate.name, _type_name(model), error),
                          messages.SaliencyWarning, stacklevel=user_stacklevel())
    return None


def _type_name(model: Any) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


_FRAMEWORK_EXTRAS = {"torch": "torch", "tensorflow": "tensorflow", "keras": "keras",
                     "jax": "jax", "jaxlib": "jax", "flax": "jax", "equinox": "jax"}


def _no_match_message(model: Any, modules: list[str], candidates: list[BackendBase]) -> str:
    installed = [candidate.name for candidate in candidates]
    for module in modules:
        framework = _FRAMEWORK_EXTRAS.get(module)
        if framework is not None and framework not in installed:
            return messages.backend_missing_for(_type_name(model), framework)
    if callable(model) and modules in ([], ["functools"]):
        return messages.undetectable_function(model, installed)
    return messages.unsupported_model(_type_name(model), modules, installed)
