"""The composite models of :mod:`agnostic_saliency.testing.composite` in PyTorch, Keras
and TensorFlow, for the conformance suite's builder hooks.

A PyTorch backend needs ``torch.nn.Module`` objects and a Keras backend Keras models, so
the plain callables of :mod:`~agnostic_saliency.testing.composite` do not serve them.
Every framework is imported inside the function that needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency.testing.builders import build_keras, build_torch
from agnostic_saliency.testing.composite import EMBEDDING_LENGTH
from agnostic_saliency.testing.models import ModelSpec

__all__ = [
    "keras_embedding_model",
    "keras_masked_model",
    "keras_product_model",
    "keras_static_batch_model",
    "tensorflow_masked_model",
    "tensorflow_static_batch_model",
    "torch_embedding_model",
    "torch_masked_model",
    "torch_product_model",
    "torch_static_batch_model",
]


def _refuse(batch: int, found: Any) -> ValueError:
    return ValueError(f"this model takes batches of exactly {batch} samples, not {found}")


# --- PyTorch ----------------------------------------------------------------------------


def torch_static_batch_model(spec: ModelSpec, batch: int) -> Any:
    """``spec`` as a module that raises for any batch size but ``batch``."""
    import torch

    class StaticBatch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = build_torch(spec)

        def forward(self, x: Any) -> Any:
            if x.shape[0] != batch:
                raise _refuse(batch, x.shape[0])
            return self.inner(x)

    return StaticBatch().eval()


def torch_product_model(first: ModelSpec, second: ModelSpec,
                        names: tuple[str, str] | None = None) -> Any:
    """``forward(a, b) = first(a) * second(b)``; with ``names``, keyword-only arguments."""
    import torch

    class Product(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = build_torch(first), build_torch(second)

        def forward(self, *args: Any, **named: Any) -> Any:
            a, b = args if names is None else (named[name] for name in names)
            return self.first(a) * self.second(b)

    return Product().eval()


def torch_masked_model(spec: ModelSpec) -> Any:
    """``forward(x, mask) = spec(x * mask)`` with an integer mask."""
    import torch

    class Masked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = build_torch(spec)

        def forward(self, x: Any, mask: Any) -> Any:
            assert not mask.is_floating_point()  # a side input keeps its dtype
            return self.inner(x * mask)

    return Masked().eval()


def torch_embedding_model(spec: ModelSpec, table: np.ndarray) -> tuple[Any, Any]:
    """``(model, embedding)``: ``model(ids) = spec(embedding(ids).flatten(1))``."""
    import torch

    class Embedded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding.from_pretrained(  # type: ignore[no-untyped-call]
                torch.from_numpy(table))
            self.inner = build_torch(spec)

        def forward(self, ids: Any) -> Any:
            return self.inner(self.embedding(ids.long()).flatten(1))

    model = Embedded().eval()
    return model, model.embedding


# --- Keras ------------------------------------------------------------------------------


def keras_static_batch_model(spec: ModelSpec, batch: int) -> Any:
    """``spec`` as a functional model that reshapes its input to ``(batch, ...)``: any
    other batch size fails, in eager runs and in traced ones alike."""
    import keras

    class StaticBatch(keras.layers.Layer):  # type: ignore[misc]
        def call(self, x: Any) -> Any:
            return keras.ops.reshape(x, (batch, *spec.input_shape))

        def compute_output_shape(self, shape: Any) -> Any:
            return (batch, *spec.input_shape)

    inputs = keras.Input(spec.input_shape)
    return keras.Model(inputs, build_keras(spec)(StaticBatch()(inputs)))


def keras_product_model(first: ModelSpec, second: ModelSpec,
                        names: tuple[str, str] | None = None) -> Any:
    """A functional model of a list (or, with ``names``, a dict) of two inputs."""
    import keras

    a = keras.Input(first.input_shape, name=None if names is None else names[0])
    b = keras.Input(second.input_shape, name=None if names is None else names[1])
    outputs = keras.layers.Multiply()([build_keras(first)(a), build_keras(second)(b)])
    return keras.Model([a, b] if names is None else {names[0]: a, names[1]: b}, outputs)


def keras_masked_model(spec: ModelSpec) -> Any:
    """A functional model of ``[x, mask]`` (``mask`` int32) computing ``spec(x * mask)``."""
    import keras

    class Keep(keras.layers.Layer):  # type: ignore[misc]
        def call(self, x: Any, keep: Any) -> Any:
            return x * keras.ops.cast(keep, x.dtype)

    x, mask = keras.Input(spec.input_shape), keras.Input(spec.input_shape, dtype="int32")
    return keras.Model([x, mask], build_keras(spec)(Keep()(x, mask)))


def keras_embedding_model(spec: ModelSpec, table: np.ndarray) -> tuple[Any, Any]:
    """``(model, embedding)``: an ``Embedding`` layer holding ``table``, flattened into
    ``spec``."""
    import keras

    ids = keras.Input((EMBEDDING_LENGTH,), dtype="int32")
    embedding = keras.layers.Embedding(*table.shape)
    values = embedding(ids)
    embedding.set_weights([table])
    flat = keras.layers.Reshape((EMBEDDING_LENGTH * table.shape[1],))(values)
    return keras.Model(ids, build_keras(spec)(flat)), embedding


# --- TensorFlow -------------------------------------------------------------------------


def tensorflow_static_batch_model(model: Any, spec: ModelSpec, batch: int) -> Any:
    """``model`` behind ``tf.ensure_shape``: a batch of another size fails, also in a
    trace whose batch axis is unknown."""
    import tensorflow as tf

    return lambda x: model(tf.ensure_shape(x, (batch, *spec.input_shape)))


def tensorflow_masked_model(model: Any) -> Any:
    """``model(x * mask)`` for an integer ``mask`` (TensorFlow multiplies no mixed dtypes)."""
    import tensorflow as tf

    return lambda x, mask: model(x * tf.cast(mask, x.dtype))
