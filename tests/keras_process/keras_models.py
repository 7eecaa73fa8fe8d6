"""Keras models built from the zoo's :class:`ModelSpec`, on whatever backend Keras runs."""

from __future__ import annotations

import hashlib
from typing import Any

from agnostic_saliency.testing import ModelSpec
from agnostic_saliency.testing.builders import build_keras

__all__ = ["build_keras_model", "shared_keras_model"]

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
