"""Keras on JAX: ``jax.jit(jax.grad(...))`` of a function built on ``stateless_call``.

One jitted function is cached per model, operator and selector. The variables'
current values are passed to it as arguments on every call, so weights updated by
the user are seen and no parameter is baked into the compiled code as a constant.
The gradient is taken with respect to the inputs only. Predictions run through a
jitted forward pass of their own per signature, in the same way.
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
    import jax

__all__ = ["effective_dtype", "gradient", "is_out_of_memory", "is_tensor", "predict",
           "predict_trace_count", "to_numpy"]

_functions: BoundedCache[Any] = BoundedCache(32)
_predictions: BoundedCache[Any] = BoundedCache(32)
_predict_lock = threading.Lock()
_predict_traces = 0


def is_out_of_memory(error: BaseException) -> bool:
    """XLA's ``RESOURCE_EXHAUSTED`` errors (a device or host allocation failed)."""
    return isinstance(error, RuntimeError) and "RESOURCE_EXHAUSTED" in str(error)


def effective_dtype(dtype: str) -> str:
    """``dtype``, or float32 for float64 while JAX runs without ``jax_enable_x64``."""
    import jax

    has_float64 = jax.dtypes.canonicalize_dtype(np.float64) == np.float64
    return "float32" if dtype == "float64" and not has_float64 else dtype


def is_tensor(value: Any) -> bool:
    import jax

    return isinstance(value, jax.Array)


def to_numpy(tensor: Any) -> np.ndarray:
    return np.asarray(tensor)


def predict(model: Any, x: np.ndarray, dtype: str, options: CallOptions) -> Any:
    """``model(x, training=False)`` with the selector applied, through one jitted forward
    pass per signature: an eager Keras call costs more than a small model's compute, and
    the metrics call ``predict`` once per chunk. A model not built yet (its variables are
    created eagerly) or one that cannot be traced is called eagerly."""
    array = _array(x, dtype)
    selector = options.output_selector
    if getattr(model, "built", True):
        key = (object_key(selector), dtype, x.shape[1:])
        forward: _Forward = cached_function(_predictions, model, key, _Forward)
        if not forward.eager:
            outputs = forward(model, array)
            if outputs is not None:
                return selector(outputs) if selector is not None else outputs
    return call_model(model, array, selector)


def predict_trace_count() -> int:
    """Number of forward passes traced for :func:`predict` so far (one per signature and
    batch shape; changed weights do not retrace)."""
    return _predict_traces


class _Forward:
    """``jit`` of the forward pass of one signature, or the note that the model cannot be
    traced (Python branching on values), after which it is called eagerly.

    The selector is applied outside, on the outputs, so it may return any structure.
    """

    def __init__(self, get_model: Callable[[], Any]) -> None:
        import jax

        def forward(x: jax.Array, trainable: list[jax.Array],
                    non_trainable: list[jax.Array]) -> Any:
            global _predict_traces
            with _predict_lock:
                _predict_traces += 1
            outputs, _ = get_model().stateless_call(trainable, non_trainable, x,
                                                    **_inference(get_model()))
            return outputs

        self._function = jax.jit(forward)
        self.eager = False

    def __call__(self, model: Any, x: jax.Array) -> Any:
        """The outputs, or ``None`` when the eager call must answer (the model cannot be
        traced, or it raised: the eager call then raises its own error)."""
        from agnostic_saliency_keras._structured_compiled import untraceable

        trainable = [variable.value for variable in model.trainable_variables]
        non_trainable = [variable.value for variable in model.non_trainable_variables]
        try:
            return self._function(x, trainable, non_trainable)
        except Exception as error:
            if isinstance(error, MemoryError) or is_out_of_memory(error):
                raise  # not the model's fault: the frontend retries with smaller chunks
            if untraceable(error):
                self.eager = True  # Python control flow on tensor values: eager from now on
            return None


def _inference(model: Any) -> dict[str, Any]:
    """``{"training": False}`` when the model's ``call`` takes it, as ``Layer.__call__`` does."""
    return {"training": False} if "training" in getattr(
        model, "call_signature_parameters", ("training",)) else {}


def gradient(model: Any, x: np.ndarray, dtype: str, targets: Any, operator: Operator | None,
             options: CallOptions) -> np.ndarray:
    """Gradient of the summed scores with respect to ``x`` (JAX never returns ``None``)."""
    import jax.numpy as jnp

    key = (object_key(operator), object_key(options.output_selector))
    function = cached_function(_functions, model, key, lambda get_model: _build(
        get_model, operator, options.output_selector))
    trainable = [variable.value for variable in model.trainable_variables]
    non_trainable = [variable.value for variable in model.non_trainable_variables]
    target_array = None if targets is None else jnp.asarray(targets)
    if operator is not None and target_array is not None \
            and jnp.issubdtype(target_array.dtype, jnp.floating):
        target_array = target_array.astype(dtype)
    grad = function(_array(x, dtype), trainable, non_trainable, target_array)
    return gradient_to_numpy(np.asarray(grad))


def _array(x: np.ndarray, dtype: str) -> jax.Array:
    import jax.numpy as jnp

    array = jnp.asarray(x)
    return array if array.dtype.name == dtype else array.astype(dtype)


def _build(get_model: Callable[[], Any], operator: Operator | None,
           selector: Callable[[Any], Any] | None) -> Any:
    """``jit(grad(total_score))`` with respect to the first argument only."""
    import jax

    def total_score(x: jax.Array, trainable: list[jax.Array], non_trainable: list[jax.Array],
                    targets: jax.Array | None) -> jax.Array:
        note_trace()
        model = get_model()
        if operator is None:
            assert targets is not None  # output weights, always given without an operator
            return _weighted_total(model, x, trainable, non_trainable, targets, selector)
        return _operator_total(model, operator, x, trainable, non_trainable, targets)

    return jax.jit(jax.grad(total_score))


def _weighted_total(model: Any, x: jax.Array, trainable: list[jax.Array],
                    non_trainable: list[jax.Array], weights: jax.Array,
                    selector: Callable[[Any], Any] | None) -> jax.Array:
    """``sum(output * weights)`` (or of the outputs at class indices) in at least
    float32, through ``stateless_call``."""
    import jax.numpy as jnp

    try:
        outputs, _ = model.stateless_call(trainable, non_trainable, x, **_inference(model))
    except Exception as error:
        if isinstance(error, MemoryError) or is_out_of_memory(error):
            raise  # not the model's fault: the frontend retries with smaller chunks
        raise ModelCallError(error) from error
    if selector is not None:
        outputs = selector(outputs)
    outputs = require_tensor(outputs, is_tensor)
    outputs = outputs.astype(score_dtype(outputs.dtype.name))
    if jnp.issubdtype(weights.dtype, jnp.integer):  # class indices (N,)
        return jnp.sum(jnp.take_along_axis(outputs, weights[:, None], axis=1))
    return jnp.sum(outputs * weights.astype(outputs.dtype))


def _operator_total(model: Any, operator: Operator, x: jax.Array, trainable: list[jax.Array],
                    non_trainable: list[jax.Array], targets: jax.Array | None) -> jax.Array:
    """Sum of the operator's scores; the model reads the variables given as arguments.

    The operator calls the model itself, so the arguments are mapped onto the
    model's variables with a ``StatelessScope``, as ``stateless_call`` does.
    """
    import jax.numpy as jnp
    import keras

    mapping = [*zip(model.trainable_variables, trainable, strict=True),
               *zip(model.non_trainable_variables, non_trainable, strict=True)]
    with keras.StatelessScope(state_mapping=mapping):
        scores = operator(model, x, targets)
    if not is_tensor(scores) or scores.shape != (x.shape[0],):
        raise OperatorShapeError(tuple(np.shape(scores)))
    return jnp.sum(scores.astype(score_dtype(scores.dtype.name)))


@contextmanager
def full_precision() -> Iterator[None]:
    """Matmuls and convolutions at ``highest`` precision."""
    import jax

    with jax.default_matmul_precision("highest"):
        yield
