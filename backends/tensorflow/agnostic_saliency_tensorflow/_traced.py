"""The forward and gradient computations, traced once per model and input signature.

Each computation is written once, as a body that runs both eagerly and inside
``tf.function``. :class:`Compiled` traces it with an ``input_signature`` whose
batch axis is ``None``, so a new batch size never retraces:

- the first non-batch shape it sees is traced with static dimensions (models that
  use ``x.shape[1]`` in Python keep working);
- any other non-batch shape of the same rank shares one relaxed trace with every
  dimension unknown, so variable-length inputs do not retrace either;
- a signature whose trace fails in user code (a forward pass that calls
  ``.numpy()``, Python control flow on tensors, a fixed-batch ``input_signature``)
  is run eagerly instead, from then on if the eager run succeeds; if it fails too,
  the eager run raises the precise error.

Model, operator and output selector are reached through weak keys, so a traced
function does not keep them alive. A loaded SavedModel that is not callable is
called through its ``serve`` endpoint or its only signature (see :mod:`._loading`).
Out-of-memory errors are raised as they are, never reported as the model's fault.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import user_stacklevel
from agnostic_saliency.cache import ObjectKey
from agnostic_saliency_tensorflow import _messages
from agnostic_saliency_tensorflow._loading import endpoint, unwrap

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["Compiled", "gradient_body", "is_out_of_memory", "predict_body", "trace_count"]

Body = Callable[..., Any]


class _TraceCounter:
    """Counts the traces of every body, for tests and diagnostics."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def increment(self) -> None:
        with self._lock:
            self.value += 1


_traces = _TraceCounter()


def trace_count() -> int:
    """Number of times this backend has traced a computation into a graph, in all.

    Repeated calls with the same model, dtype and non-batch shape add nothing,
    whatever their batch sizes; tests compare the count before and after.
    """
    return _traces.value


def _count_trace(tf: Any) -> None:
    if not tf.executing_eagerly():
        _traces.increment()


# --- bodies -----------------------------------------------------------------------------


def predict_body(model_key: ObjectKey, selector_key: ObjectKey | None,
                 compute_dtype: tf.DType) -> Body:
    """``body(x) -> outputs``: the selected model output, any structure."""

    def body(x: tf.Tensor) -> Any:
        tf = sys.modules["tensorflow"]
        _count_trace(tf)
        outputs = _forward(model_key.get(), tf.cast(x, compute_dtype), _get(selector_key))
        if not tf.executing_eagerly() and not all(
                tf.is_tensor(leaf) for leaf in tf.nest.flatten(outputs)):
            raise TypeError("a graph can only return tensors; the forward runs eagerly")
        return outputs

    return body


def gradient_body(model_key: ObjectKey, operator_key: ObjectKey | None,
                  selector_key: ObjectKey | None, compute_dtype: tf.DType) -> Body:
    """``body(x[, targets]) -> (gradient or None, operator scores' shape or None)``."""

    def body(x: tf.Tensor, *targets: tf.Tensor) -> tuple[Any, Any]:
        tf = sys.modules["tensorflow"]
        _count_trace(tf)
        return _gradient(tf, model_key.get(), _get(operator_key), _get(selector_key),
                         compute_dtype, x, targets[0] if targets else None)

    return body


def _get(key: ObjectKey | None) -> Any:
    return None if key is None else key.get()


def _gradient(tf: Any, model: Any, operator: Any, selector: Any, compute_dtype: tf.DType,
              x: tf.Tensor, targets: tf.Tensor | None) -> tuple[Any, Any]:
    """Gradient of the summed scores with respect to ``x``, in at least float32."""
    # 16-bit inputs are differentiated in float32, so the gradient is not rounded back.
    watched = tf.cast(x, tf.float32) if x.dtype.size < 4 else x
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(watched)
        inputs = tf.cast(watched, compute_dtype)
        if operator is None:
            outputs = _upcast(tf, _as_output_tensor(tf, _forward(model, inputs, selector)))
            scores, shape = _selected(tf, outputs, targets), None
        else:
            scores = _operator_scores(tf, operator, model, inputs, targets)
            shape = tf.shape(scores)
        total = tf.reduce_sum(_upcast(tf, scores))
    return tape.gradient(total, watched), shape


def _selected(tf: Any, outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """The outputs selected by class indices (N,), or weighted by output weights."""
    if targets.dtype.is_integer:
        return tf.gather(outputs, targets, batch_dims=1)
    return outputs * tf.reshape(tf.cast(targets, outputs.dtype), tf.shape(outputs))


def _forward(model: Any, inputs: tf.Tensor, selector: Any) -> Any:
    call, one_entry = endpoint(model)
    try:
        outputs = call(inputs)
    except Exception as error:
        if is_out_of_memory(error):
            raise
        raise ValueError(messages.model_failed(tuple(inputs.shape), error)) from error
    if selector is not None:
        return selector(outputs)
    return unwrap(outputs) if one_entry else outputs


def _as_output_tensor(tf: Any, outputs: Any) -> tf.Tensor:
    """The model output as a tensor; NumPy outputs become constants (gradient ``None``)."""
    if tf.is_tensor(outputs):
        return tf.convert_to_tensor(outputs)
    if isinstance(outputs, (np.ndarray, np.generic)):
        return tf.constant(outputs)
    raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))


def _operator_scores(tf: Any, operator: Any, model: Any, inputs: tf.Tensor,
                     targets: tf.Tensor | None) -> tf.Tensor:
    scores = operator(model, inputs, targets)
    try:
        return tf.convert_to_tensor(scores)
    except (TypeError, ValueError) as error:
        shape = tuple(getattr(scores, "shape", ()))
        raise ValueError(messages.operator_wrong_shape(shape, inputs.shape[0])) from error


def _upcast(tf: Any, tensor: tf.Tensor) -> tf.Tensor:
    """``tensor`` in at least float32 (16-bit and non-floating outputs are cast)."""
    if tensor.dtype.is_floating and tensor.dtype.size >= 4:
        return tensor
    return tf.cast(tensor, tf.float32)


# --- tracing ---------------------------------------------------------------------------

_EAGER = object()  # marks a signature whose trace failed but whose eager run works


class Compiled:
    """One computation of one model, for inputs of one dtype and rank.

    Each input signature is traced once into a concrete function, which is called
    directly: that skips ``tf.function``'s per-call argument binding and dispatch.
    Tracing holds this object's lock, so concurrent first calls trace only once.

    Parameters
    ----------
    body
        ``body(x, *args)``, written for eager and graph execution alike.
    x_dtype
        Dtype of the inputs ``x``.
    arg_specs
        ``(rank, dtype)`` of each further argument; every axis is left unknown.
    compute_dtype
        The dtype the model computes in (the caller warns about casts to it).
    jit_compile
        Compile with XLA. If the first XLA call fails (an op XLA cannot compile),
        the body is traced again without XLA and run that way from then on.
    """

    def __init__(self, body: Body, x_dtype: tf.DType, arg_specs: Sequence[tuple[int, Any]],
                 compute_dtype: tf.DType, jit_compile: bool = False) -> None:
        self.compute_dtype = compute_dtype
        self.jit_compile = jit_compile
        self._xla_proven = False
        self.arg_dtypes = tuple(dtype for _, dtype in arg_specs)
        self._body = body
        self._x_dtype = x_dtype
        self._arg_specs = tuple(arg_specs)
        self._first_shape: tuple[int, ...] | None = None
        self._functions: dict[tuple[int, ...] | None, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, x: tf.Tensor, *args: tf.Tensor) -> Any:
        """Run the traced body on ``x``; run it eagerly where tracing fails.

        Raises
        ------
        ValueError
            If the model fails while the graph runs (``tf.errors.OpError``), or
            eagerly (see the bodies).
        """
        signature, function = self._function(tuple(x.shape[1:]))
        if function is not _EAGER and not isinstance(function, Exception):
            try:
                result = function(x, *args)
            except Exception as error:
                if is_out_of_memory(error):
                    raise
                if self.jit_compile and not self._xla_proven:
                    self._drop_xla()
                    return self(x, *args)
                if _is_op_error(error):
                    raise ValueError(messages.model_failed(tuple(x.shape), error)) from error
                raise
            self._xla_proven = True
            return result
        result = self._body(x, *args)  # raises the precise error if the model is at fault
        if isinstance(function, Exception):  # the trace failed, the eager run worked
            self._store(signature, _EAGER)
            warnings.warn(_messages.runs_eagerly(function), messages.SaliencyWarning,
                          stacklevel=user_stacklevel())
        return result

    def _function(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...] | None, Any]:
        """The signature for ``shape`` and its concrete function (or why its trace failed)."""
        with self._lock:
            signature = shape if self._first_shape in (None, shape) else None
            function = self._functions.get(signature)
            if function is None:
                function = self._trace(signature, len(shape))
                if not isinstance(function, Exception):
                    self._store_locked(signature, function)
            return signature, function

    def _trace(self, shape: tuple[int, ...] | None, rank: int) -> Any:
        """A concrete function of the body for non-batch ``shape`` (``None``: any), or the error."""
        import tensorflow as tf

        dims = list(shape) if shape is not None else [None] * rank
        specs = [tf.TensorSpec([None, *dims], self._x_dtype)]
        specs += [tf.TensorSpec([None] * arg_rank, dtype) for arg_rank, dtype in self._arg_specs]
        function = tf.function(self._body, input_signature=specs, reduce_retracing=False,
                               jit_compile=self.jit_compile)
        try:
            return function.get_concrete_function()
        except Exception as error:  # user code that only runs eagerly; the eager run will tell
            return error

    def _drop_xla(self) -> None:
        """Forget the XLA functions: every signature is traced again without XLA."""
        with self._lock:
            if self.jit_compile:
                self.jit_compile = False
                self._functions.clear()
                self._first_shape = None

    def _store(self, signature: tuple[int, ...] | None, function: Any) -> None:
        with self._lock:
            self._store_locked(signature, function)

    def _store_locked(self, signature: tuple[int, ...] | None, function: Any) -> None:
        self._functions[signature] = function
        if signature is not None:
            self._first_shape = signature

    @property
    def eager_signatures(self) -> int:
        """How many input signatures run eagerly because their trace failed."""
        with self._lock:
            return sum(function is _EAGER for function in self._functions.values())


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure: TensorFlow's ``ResourceExhaustedError``
    (device or host memory) or Python's ``MemoryError``."""
    tf = sys.modules.get("tensorflow")
    return isinstance(error, MemoryError) or (
        tf is not None and isinstance(error, tf.errors.ResourceExhaustedError))


def _is_op_error(error: Exception) -> bool:
    """Whether ``error`` is a TensorFlow op failing while a graph runs (the model's fault)."""
    return isinstance(error, sys.modules["tensorflow"].errors.OpError)
