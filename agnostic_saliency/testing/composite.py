"""Models made of zoo models, for the suite's checks of static batches, several inputs,
side inputs and layers, with the exact gradients they must give.

The classes are plain Python callables, the defaults of the suite's builder hooks: they
work for a backend that runs any callable written with its framework's tensors (JAX,
TensorFlow functions, the NumPy reference). A backend whose models must be framework
objects (a ``torch.nn.Module``, a Keras model) builds the same functions in its
framework instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agnostic_saliency.testing.models import ModelSpec
from agnostic_saliency.testing.reference import LayeredModel, NumpyModel

__all__ = [
    "EMBEDDING_LENGTH",
    "Lookup",
    "MaskedModel",
    "ProductModel",
    "StaticBatchModel",
    "embedding_gradient",
    "embedding_table",
    "layered_embedding_model",
    "masked_gradient",
    "product_gradients",
]

#: Tokens per sample of the embedding model; with 2 values per token they feed the
#: 6 inputs of the zoo's ``mlp``.
EMBEDDING_LENGTH = 3


class StaticBatchModel:
    """``model`` that refuses every batch size but ``batch``, as a model exported with
    a static batch does."""

    def __init__(self, model: Any, batch: int) -> None:
        self.model = model
        self.batch = batch

    def __call__(self, x: Any) -> Any:
        if x.shape[0] != self.batch:
            raise ValueError(f"this model takes batches of exactly {self.batch} samples, "
                             f"not {x.shape[0]}")
        return self.model(x)


class ProductModel:
    """``model(a, b) = first(a) * second(b)``, class by class; with ``names``, the two
    inputs come as the keyword arguments of those names."""

    def __init__(self, first: Any, second: Any, names: Sequence[str] | None = None) -> None:
        self.first = first
        self.second = second
        self.names = None if names is None else tuple(names)

    def __call__(self, *args: Any, **named: Any) -> Any:
        a, b = args if self.names is None else (named[name] for name in self.names)
        return self.first(a) * self.second(b)


class MaskedModel:
    """``model(x, mask) = inner(x * mask)`` with an integer ``mask`` of ``x``'s shape: a
    side input that is passed through, never attributed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, x: Any, mask: Any) -> Any:
        return self.inner(x * mask)


class Lookup:
    """``ids -> table[ids]``: the embedding layer of :func:`layered_embedding_model`."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def __call__(self, ids: Any) -> np.ndarray:
        return self.table[np.asarray(ids)]


class _Flattened:
    """``inner`` applied to its input flattened per sample."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, values: Any) -> Any:
        return self.inner(np.reshape(values, (len(values), -1)))


def layered_embedding_model(spec: ModelSpec, table: np.ndarray) -> tuple[LayeredModel, Lookup]:
    """The embedding model for the NumPy reference backend: ``(model, layer)``."""
    model = LayeredModel(Lookup(table), _Flattened(NumpyModel(spec)))
    return model, model.embed


def embedding_table(seed: int = 11, vocabulary: int = 7, width: int = 2) -> np.ndarray:
    """Rows of an embedding, float32: ``EMBEDDING_LENGTH * width`` values per sample."""
    return np.random.default_rng(seed).normal(size=(vocabulary, width)).astype(np.float32)


def _exact(spec: ModelSpec) -> NumpyModel:
    return NumpyModel(spec.cast(np.float64))


def product_gradients(first: ModelSpec, second: ModelSpec, a: np.ndarray, b: np.ndarray,
                      weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``sum(first(a) * second(b) * weights)`` with respect to ``a`` and ``b``."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    left, right = _exact(first), _exact(second)
    return (left.input_gradient(a64, weights * right(b64)),
            right.input_gradient(b64, weights * left(a64)))


def masked_gradient(spec: ModelSpec, x: np.ndarray, mask: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
    """Gradient of ``sum(spec(x * mask) * weights)`` with respect to ``x``."""
    masked = x.astype(np.float64) * mask
    return _exact(spec).input_gradient(masked, weights) * mask


def embedding_gradient(spec: ModelSpec, table: np.ndarray, ids: np.ndarray,
                       weights: np.ndarray) -> np.ndarray:
    """Gradient of ``sum(spec(flat(table[ids])) * weights)`` with respect to the
    embedding's output ``table[ids]``, shape ``(N, L, width)``."""
    values = table[ids].astype(np.float64)
    flat = values.reshape(len(values), -1)
    return _exact(spec).input_gradient(flat, weights).reshape(values.shape)
