"""Keras on TensorFlow: a ``GradientTape`` inside one cached ``tf.function`` per signature.

The function's input signature leaves the batch axis unknown, so a new batch size
does not retrace it. Targets enter as tensors, and the model's variables are
captured by reference, so weights changed after the first call are used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency.backend import CallOptions, Operator
from agnostic_saliency_keras._common import (
    FunctionCache,
    OperatorShapeError,
    call_model,
    gradient_to_numpy,
    note_trace,
    require_tensor,
    score_dtype,
)

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["gradient", "is_tensor", "predict", "to_numpy"]

_functions = FunctionCache()


def is_tensor(value: Any) -> bool:
    import tensorflow as tf

    return bool(tf.is_tensor(value))


def to_numpy(tensor: Any) -> np.ndarray:
    return np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor)


def predict(model: Any, x: np.ndarray, dtype: str, options: CallOptions) -> Any:
    """Eager ``model(x, training=False)`` with the selector applied."""
    return call_model(model, _tensor(x, dtype), options.output_selector)


def gradient(model: Any, x: np.ndarray, dtype: str, targets: Any, operator: Operator | None,
             options: CallOptions) -> np.ndarray | None:
    """Gradient of the summed scores with respect to ``x`` (``None`` if disconnected)."""
    import tensorflow as tf

    target_array = None if targets is None else np.asarray(targets)
    key = (operator, options.output_selector, dtype, x.shape[1:],
           None if target_array is None else (target_array.dtype.str, target_array.shape[1:],
                                              target_array.ndim))
    function = _functions.get(model, key, lambda get_model: _build(
        get_model, operator, options, dtype, x.shape[1:], target_array))
    args = [_tensor(x, dtype)]
    if target_array is not None:
        args.append(tf.convert_to_tensor(target_array))
    grad, n_scores = function(*args)
    if n_scores != len(x):
        raise OperatorShapeError((int(n_scores),))
    return None if grad is None else gradient_to_numpy(grad.numpy())


def _tensor(x: np.ndarray, dtype: str) -> tf.Tensor:
    import tensorflow as tf

    tensor = tf.convert_to_tensor(x)
    return tensor if tensor.dtype.name == dtype else tf.cast(tensor, dtype)


def _build(get_model: Callable[[], Any], operator: Operator | None, options: CallOptions,
           dtype: str, sample_shape: tuple[int, ...], targets: np.ndarray | None) -> Any:
    """A ``tf.function`` returning ``(gradient, number of scores)`` for this signature."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *sample_shape), dtype)]
    if targets is not None:
        batch: tuple[int | None, ...] = (None,) if targets.ndim else ()
        signature.append(tf.TensorSpec((*batch, *targets.shape[1:]), targets.dtype))
    selector = options.output_selector

    def compute(x: tf.Tensor, targets: tf.Tensor | None = None) -> Any:
        note_trace()
        model = get_model()
        with tf.GradientTape() as tape:
            tape.watch(x)
            if operator is None:
                scores = _weighted_outputs(model, x, targets, selector)
            else:
                scores = _operator_scores(operator, model, x, targets)
            total = tf.reduce_sum(scores)
        return tape.gradient(total, x), tf.shape(scores)[0]

    # Keras runs its own steps without autograph too; errors then reach us unchanged.
    return tf.function(compute, input_signature=signature, autograph=False)


def _weighted_outputs(model: Any, x: tf.Tensor, weights: tf.Tensor | None,
                      selector: Callable[[Any], Any] | None) -> tf.Tensor:
    """Per-sample ``sum(output * weights)`` in at least float32."""
    import tensorflow as tf

    outputs = require_tensor(call_model(model, x, selector), tf.is_tensor)
    outputs = tf.cast(outputs, score_dtype(outputs.dtype.name))
    product = outputs * tf.cast(weights, outputs.dtype)
    return tf.reshape(product, (tf.shape(product)[0], -1))


def _operator_scores(operator: Operator, model: Any, x: tf.Tensor,
                     targets: tf.Tensor | None) -> tf.Tensor:
    import tensorflow as tf

    if targets is not None and targets.dtype.is_floating:
        targets = tf.cast(targets, x.dtype)
    scores = operator(model, x, targets)
    if not tf.is_tensor(scores) or scores.shape.rank != 1:
        shape = tuple(scores.shape) if hasattr(scores, "shape") else np.shape(scores)
        raise OperatorShapeError(tuple(shape))
    return tf.cast(scores, score_dtype(scores.dtype.name))


@contextmanager
def full_precision() -> Iterator[None]:
    """TensorFloat-32 execution off; restored on exit."""
    import tensorflow as tf

    enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(enabled)
