"""Keras on TensorFlow: a ``GradientTape`` inside one cached ``tf.function`` per signature.

The function's input signature leaves the batch axis unknown, so a new batch size
does not retrace it; it is traced once into a concrete function, which is called
directly (that skips ``tf.function``'s argument binding on every call). Targets
enter as tensors, and the model's variables are captured by reference, so weights
changed after the first call are used. Predictions run through a cached graph of
their own per signature, in the same way.

XLA (``jit_compile``) is used for models without convolution kernels: on CPU it
makes dense networks faster and convolutional ones slower (``benchmarks/``). A
graph that XLA cannot compile runs as a plain graph instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency.backend import CallOptions, Operator
from agnostic_saliency.cache import BoundedCache, object_key
from agnostic_saliency_keras._common import (
    ModelCallError,
    OperatorShapeError,
    cached_function,
    call_model,
    gradient_to_numpy,
    note_trace,
    require_tensor,
    score_dtype,
)

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["gradient", "is_out_of_memory", "is_tensor", "predict", "to_numpy"]

_functions: BoundedCache[Any] = BoundedCache(32)
_predictions: BoundedCache[Any] = BoundedCache(32)


def is_out_of_memory(error: BaseException) -> bool:
    """TensorFlow's ``ResourceExhaustedError`` (device or host memory)."""
    import tensorflow as tf

    return isinstance(error, tf.errors.ResourceExhaustedError)


def is_tensor(value: Any) -> bool:
    import tensorflow as tf

    return bool(tf.is_tensor(value))


def to_numpy(tensor: Any) -> np.ndarray:
    return np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor)


def predict(model: Any, x: np.ndarray, dtype: str, options: CallOptions) -> Any:
    """``model(x, training=False)`` with the selector applied, through one cached graph per
    signature: an eager Keras call costs more than a small model's compute, and the
    metrics call ``predict`` once per chunk. A model not built yet (its variables are
    created eagerly) or one that cannot be traced is called eagerly."""
    tensor = _tensor(x, dtype)
    selector = options.output_selector
    if getattr(model, "built", True):
        key = (object_key(selector), dtype, x.shape[1:])
        graph = cached_function(_predictions, model, key, lambda get_model: _PredictGraph(
            get_model, selector, dtype, x.shape[1:]))
        concrete = graph.concrete()
        if concrete is not None:
            try:
                return concrete(tensor)
            except Exception as error:
                if is_out_of_memory(error):
                    raise
                raise ModelCallError(error) from error
    return call_model(model, tensor, selector)


class _PredictGraph:
    """The concrete predict function of one signature (batch axis unknown), traced on first
    use; ``None`` when tracing failed, for the eager call to run (and report its error)."""

    def __init__(self, get_model: Callable[[], Any], selector: Callable[[Any], Any] | None,
                 dtype: str, sample_shape: tuple[int, ...]) -> None:
        self._get_model, self._selector = get_model, selector
        self._signature = (dtype, sample_shape)
        self._concrete: Any = None
        self._traced = False
        self._lock = threading.Lock()

    def concrete(self) -> Any:
        if not self._traced:
            with self._lock:
                if not self._traced:
                    self._concrete = self._trace()
                    self._traced = True
        return self._concrete

    def _trace(self) -> Any:
        import tensorflow as tf

        dtype, sample_shape = self._signature

        def call(x: tf.Tensor) -> Any:
            return call_model(self._get_model(), x, self._selector)

        function = tf.function(call, input_signature=[tf.TensorSpec((None, *sample_shape),
                                                                    dtype)], autograph=False)
        try:
            return function.get_concrete_function()
        except Exception as error:
            if is_out_of_memory(error):
                raise
            return None


def gradient(model: Any, x: np.ndarray, dtype: str, targets: Any, operator: Operator | None,
             options: CallOptions, jit_compile: bool | None = None) -> np.ndarray | None:
    """Gradient of the summed scores with respect to ``x`` (``None`` if disconnected).

    ``jit_compile``: ``None`` uses XLA for models without convolution kernels.
    """
    import tensorflow as tf

    target_array = None if targets is None else np.asarray(targets)
    key = (object_key(operator), object_key(options.output_selector), dtype, x.shape[1:],
           jit_compile, None if target_array is None else (
               target_array.dtype.str, target_array.shape[1:], target_array.ndim))
    function = cached_function(_functions, model, key, lambda get_model: _Traced(_build(
        get_model, operator, options, dtype, x.shape[1:], target_array),
        _use_xla(model) if jit_compile is None else jit_compile))
    args = [_tensor(x, dtype)]
    if target_array is not None:
        args.append(tf.convert_to_tensor(target_array))
    grad, n_scores = function(*args)
    # Without an operator the scores have one row per input by construction.
    if operator is not None and int(n_scores) != len(x):
        raise OperatorShapeError((int(n_scores),))
    return None if grad is None else gradient_to_numpy(grad.numpy())


class _Traced:
    """The concrete function of one signature, traced on the first call, with or without XLA.

    If the XLA function fails on its first call (an op that XLA cannot compile), the
    plain graph is traced and used from then on; a failure of both is the model's.
    """

    def __init__(self, function: Callable[[bool], Any], jit_compile: bool) -> None:
        self._make = function
        self._jit = jit_compile
        self._concrete: Any = None
        self._proven = not jit_compile
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        concrete = self._concrete
        if concrete is None:
            with self._lock:
                if self._concrete is None:
                    self._concrete = self._make(self._jit).get_concrete_function()
                concrete = self._concrete
        if self._proven:
            return concrete(*args)
        try:
            result = concrete(*args)
        except Exception as error:
            if is_out_of_memory(error):
                raise
            with self._lock:
                self._jit, self._proven = False, True
                self._concrete = self._make(False).get_concrete_function()
            return self._concrete(*args)
        self._proven = True
        return result


def _tensor(x: np.ndarray, dtype: str) -> tf.Tensor:
    import tensorflow as tf

    tensor = tf.convert_to_tensor(x)
    return tensor if tensor.dtype.name == dtype else tf.cast(tensor, dtype)


def _use_xla(model: Any) -> bool:
    """XLA for models with weights but no convolution kernels (no variable of rank 3 or more)."""
    ranks = [len(variable.shape) for variable in getattr(model, "weights", ())]
    return bool(ranks) and max(ranks) < 3


def _build(get_model: Callable[[], Any], operator: Operator | None, options: CallOptions,
           dtype: str, sample_shape: tuple[int, ...], targets: np.ndarray | None
           ) -> Callable[[bool], Any]:
    """``make(jit_compile)``: a ``tf.function`` returning ``(gradient, number of scores)``."""
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

    def make(jit_compile: bool) -> Any:
        # Keras runs its own steps without autograph too; errors then reach us unchanged.
        return tf.function(compute, input_signature=signature, autograph=False,
                           jit_compile=jit_compile)

    return make


def _weighted_outputs(model: Any, x: tf.Tensor, weights: tf.Tensor | None,
                      selector: Callable[[Any], Any] | None) -> tf.Tensor:
    """Per-sample ``sum(output * weights)`` in at least float32; ``output[i, weights[i]]``
    for class indices."""
    import tensorflow as tf

    outputs = require_tensor(call_model(model, x, selector), tf.is_tensor)
    outputs = tf.cast(outputs, score_dtype(outputs.dtype.name))
    if weights.dtype.is_integer:
        return tf.gather(outputs, weights, batch_dims=1)
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
