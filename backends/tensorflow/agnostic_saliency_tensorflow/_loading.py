"""Saved TensorFlow models: SavedModel folders, and what a loaded one is called through.

``tf.saved_model.load`` returns a ``_UserObject`` (an ``AutoTrackable``): callable
when the saved object defined ``__call__``, else reached through an endpoint. A
Keras ``model.export(path)`` saves a ``serve`` endpoint and a ``serving_default``
signature, whose output is a dict with one entry. The loaded type is private, so
it is recognised by its public ``signatures`` attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agnostic_saliency_tensorflow import _messages

__all__ = [
    "endpoint", "is_loaded_saved_model", "is_saved_model", "load_model", "unwrap",
]


def is_saved_model(path: Path) -> bool:
    """Whether ``path`` is a SavedModel folder (checked without importing TensorFlow)."""
    return path.is_dir() and (path / "saved_model.pb").exists()


def load_model(path: Path) -> Any:
    """The loaded object; the backend calls it, or its endpoint (see :func:`endpoint`)."""
    import tensorflow as tf

    return tf.saved_model.load(str(path))


def is_loaded_saved_model(model: Any) -> bool:
    """Whether ``model`` is an object loaded by ``tf.saved_model.load`` that is not
    callable itself but has a ``serve`` endpoint or serving signatures."""
    if callable(model) or not type(model).__module__.startswith("tensorflow."):
        return False
    signatures = getattr(model, "signatures", None)
    return isinstance(signatures, Mapping) and (
        callable(getattr(model, "serve", None)) or len(signatures) > 0)


def endpoint(model: Any) -> tuple[Callable[[Any], Any], bool]:
    """What to call for ``model``, and whether a one-entry dict output is to be unwrapped.

    A callable model is called itself; a loaded SavedModel through its ``serve``
    endpoint, else through its only signature, whose output is a dict.

    Raises
    ------
    TypeError
        For a loaded SavedModel with neither ``serve`` nor exactly one signature.
    """
    if callable(model):
        return model, False
    serve = getattr(model, "serve", None)
    if callable(serve):
        return serve, True
    signatures = getattr(model, "signatures", None)
    if isinstance(signatures, Mapping) and len(signatures) == 1:
        return next(iter(signatures.values())), True
    cls = type(model)
    raise TypeError(_messages.no_serving_endpoint(f"{cls.__module__}.{cls.__qualname__}",
                                                  list(signatures or ())))


def unwrap(outputs: Any) -> Any:
    """The value of a one-entry dict output, else ``outputs`` as it is."""
    if isinstance(outputs, Mapping) and len(outputs) == 1:
        return next(iter(outputs.values()))
    return outputs
