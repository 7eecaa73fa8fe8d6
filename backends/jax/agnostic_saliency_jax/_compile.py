"""Compiled functions: traced once per model structure and shape, cached, counted.

``make_gradient_function`` returns ``jax.jit(jax.grad(score))`` where ``score``
rebuilds the model from its parameters (a jit argument), runs it and sums the
per-sample scores; ``make_predict_function`` is the jitted forward pass.
:class:`CompiledCache` keeps a bounded number of them, least recently used first
out, behind a lock. :class:`TraceCounter` counts traces, which is what a test
needs to prove that equal shapes never recompile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

from agnostic_saliency import messages
from agnostic_saliency.backend import Magnitude, Operator, OutputSelector
from agnostic_saliency_jax._models import IdentityKey

if TYPE_CHECKING:
    import jax

__all__ = [
    "CompiledCache",
    "TraceCounter",
    "call_model",
    "make_gradient_function",
    "make_predict_function",
]

CompiledFunction = Callable[..., Any]
T = TypeVar("T")


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


class CompiledCache:
    """A thread-safe LRU cache of compiled functions (or of anything known per key).

    Keys that hold an :class:`IdentityKey` whose object was collected are dropped
    on the next access; :meth:`note_dead` (a weak-reference callback) only flags
    that, because it may run inside the garbage collector at any moment.

    Parameters
    ----------
    maxsize
        Most functions kept; the least recently used one goes first.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"cache_size={maxsize!r}; expected a positive int such as 32.")
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._pending = False

    def __len__(self) -> int:
        return len(self._entries)

    def note_dead(self, ref: Any) -> None:
        """Weak-reference callback: some keyed object is gone, purge on next access."""
        self._pending = True

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The value stored under ``key``, made by ``build()`` (cheap, no trace) if absent."""
        with self._lock:
            if self._pending:
                self._purge()
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            value = build()
            self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _purge(self) -> None:
        self._pending = False
        for key in [key for key in self._entries if _holds_dead(key)]:
            del self._entries[key]


def _holds_dead(key: Any) -> bool:
    if isinstance(key, IdentityKey):
        return key.dead
    return isinstance(key, tuple) and any(_holds_dead(part) for part in key)


def call_model(model: Any, x: Any, selector: OutputSelector | None) -> Any:
    """``model(x)``, failures reported with the input shape, then the output selector."""
    try:
        outputs = model(x)
    except Exception as error:
        raise ValueError(messages.model_failed(tuple(x.shape), error)) from error
    return selector(outputs) if selector is not None else outputs


def make_predict_function(
    rebuild: Callable[[Any], Any], selector: OutputSelector | None, counter: TraceCounter
) -> CompiledFunction:
    """``jax.jit`` of ``(x, params) -> selector(rebuild(params)(x))``."""
    import jax

    def forward(x: jax.Array, params: Any) -> Any:
        counter.increment()
        return call_model(rebuild(params), x, selector)

    return jax.jit(forward)


def make_gradient_function(
    rebuild: Callable[[Any], Any],
    operator: Operator | None,
    selector: OutputSelector | None,
    counter: TraceCounter,
    magnitude: Magnitude | None = None,
) -> CompiledFunction:
    """``jax.jit(jax.grad(score))`` with ``score(x, params, targets)`` a scalar.

    Parameters
    ----------
    rebuild
        ``params -> model`` (see :class:`agnostic_saliency_jax._models.SplitModel`).
    operator
        ``operator(model, x, targets) -> (N,)``, or ``None`` for
        ``sum(output * targets)`` with ``targets`` of the output's shape, or the sum
        of ``output[i, targets[i]]`` for integer class indices ``targets`` (N,).
    selector
        Applied to the raw output without an operator.
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
        if operator is not None:
            return _operator_score(operator, model, x, targets)
        outputs = call_model(model, x, selector)
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
