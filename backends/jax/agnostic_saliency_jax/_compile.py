"""Compiled functions: traced once per model structure and shape, cached, counted.

``make_gradient_function`` returns ``jax.jit(jax.grad(score))`` where ``score``
rebuilds the model from its parameters (a jit argument), runs it and sums the
per-sample scores; ``make_predict_function`` is the jitted forward pass, and
``abstract_output_shape`` the shape of its output from a trace alone. The
backend keeps them in :class:`agnostic_saliency.cache.BoundedCache` instances.
:class:`TraceCounter` counts traces, which is what a test needs to prove that
equal shapes never recompile. Operators and output selectors are reached through
weak keys, so a compiled function does not keep them alive.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agnostic_saliency import messages
from agnostic_saliency.backend import Magnitude, Operator, OutputSelector
from agnostic_saliency.cache import ObjectKey
from agnostic_saliency_jax import _messages

if TYPE_CHECKING:
    import jax

__all__ = [
    "TraceCounter",
    "abstract_output_shape",
    "call_model",
    "make_gradient_function",
    "make_predict_function",
]

CompiledFunction = Callable[..., Any]


class TraceCounter:
    """Thread-safe count of traces (a Python side effect runs only while tracing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def increment(self) -> None:
        with self._lock:
            self._count += 1

    @property
    def value(self) -> int:
        return self._count


def call_model(model: Any, x: Any, selector: OutputSelector | None) -> Any:
    """``model(x)``, failures reported with the input shape, then the output selector.

    An Equinox module that fails is most often one written for a single sample:
    its message says how to map it over the batch.
    """
    try:
        outputs = model(x)
    except Exception as error:
        shape = tuple(x.shape)
        eqx = sys.modules.get("equinox")
        if eqx is not None and isinstance(model, eqx.Module):
            raise ValueError(_messages.equinox_model_failed(shape, error)) from error
        raise ValueError(messages.model_failed(shape, error)) from error
    return selector(outputs) if selector is not None else outputs


def _get(key: ObjectKey | None) -> Any:
    return None if key is None else key.get()


def make_predict_function(
    rebuild: Callable[[Any], Any], selector: ObjectKey | None, counter: TraceCounter
) -> CompiledFunction:
    """``jax.jit`` of ``(x, params) -> selector(rebuild(params)(x))``."""
    import jax

    def forward(x: jax.Array, params: Any) -> Any:
        counter.increment()
        return call_model(rebuild(params), x, _get(selector))

    return jax.jit(forward)


def abstract_output_shape(rebuild: Callable[[Any], Any], params: Any, x: Any,
                          selector: OutputSelector | None) -> tuple[int, ...] | None:
    """The shape of ``selector(rebuild(params)(x))`` from ``jax.eval_shape``: the forward
    pass of :func:`make_predict_function` traced on abstract values, never compiled nor
    run; ``None`` when the output is not one array.

    ``x`` may be a ``jax.ShapeDtypeStruct``. A model that fails raises as in
    :func:`call_model`.
    """
    import jax

    def forward(x: jax.Array, params: Any) -> Any:
        return call_model(rebuild(params), x, selector)

    outputs = jax.eval_shape(forward, x, params)
    return tuple(outputs.shape) if isinstance(outputs, jax.ShapeDtypeStruct) else None


def make_gradient_function(
    rebuild: Callable[[Any], Any],
    operator_key: ObjectKey | None,
    selector_key: ObjectKey | None,
    counter: TraceCounter,
    magnitude: Magnitude | None = None,
) -> CompiledFunction:
    """``jax.jit(jax.grad(score))`` with ``score(x, params, targets)`` a scalar.

    Parameters
    ----------
    rebuild
        ``params -> model`` (see :class:`agnostic_saliency_jax._models.SplitModel`).
    operator_key
        Key of ``operator(model, x, targets) -> (N,)``, or ``None`` for
        ``sum(output * targets)`` with ``targets`` of the output's shape, or the sum
        of ``output[i, targets[i]]`` for integer class indices ``targets`` (N,).
    selector_key
        Key of the output selector, applied to the raw output without an operator.
    counter
        Incremented on every trace.
    magnitude
        ``(reducer, axis)``: return ``reducer(|gradient|, axis)`` instead (``|gradient|``
        for ``reducer=None``), computed in the same program.

    Returns
    -------
    callable
        ``(x, params, targets) -> gradient`` of the summed scores with respect to
        ``x`` only, in ``x``'s dtype.
    """
    import jax
    import jax.numpy as jnp

    def score(x: jax.Array, params: Any, targets: Any) -> jax.Array:
        counter.increment()
        model = rebuild(params)
        if operator_key is not None:
            return _operator_score(operator_key.get(), model, x, targets)
        outputs = call_model(model, x, _get(selector_key))
        if not isinstance(outputs, jax.Array):
            raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
        outputs = _at_least_float32(outputs)
        if jnp.issubdtype(targets.dtype, jnp.integer):  # class indices (N,)
            return jnp.sum(jnp.take_along_axis(outputs, targets[:, None], axis=1))
        return jnp.sum(outputs * targets.astype(outputs.dtype))

    gradient = jax.grad(score)
    if magnitude is None:
        return jax.jit(gradient)
    reducer, axis = magnitude

    def absolute(x: jax.Array, params: Any, targets: Any) -> jax.Array:
        values = _at_least_float32(jnp.abs(gradient(x, params, targets)))  # 16-bit: sums
        return values if reducer is None else getattr(jnp, reducer)(values, axis=axis)

    return jax.jit(absolute)


def _operator_score(operator: Operator, model: Any, x: jax.Array, targets: Any) -> jax.Array:
    import jax
    import jax.numpy as jnp

    scores = operator(model, x, targets)
    shape = tuple(getattr(scores, "shape", ()))
    if not isinstance(scores, jax.Array) or shape != (x.shape[0],):
        raise ValueError(messages.operator_wrong_shape(shape, x.shape[0]))
    return jnp.sum(_at_least_float32(scores))


def _at_least_float32(array: jax.Array) -> jax.Array:
    import jax.numpy as jnp

    return array.astype(jnp.promote_types(array.dtype, jnp.float32))
