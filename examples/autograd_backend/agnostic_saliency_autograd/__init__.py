"""An agnostic-saliency backend for HIPS autograd, the worked example of "Adding a backend".

Found through its entry point only (``autograd = "agnostic_saliency_autograd:AutogradBackend"``).
Models are :class:`AutogradModel` objects (``forward(params, x)`` in ``autograd.numpy``),
or plain functions with ``backend="autograd"``. A score that does not depend on the input
gives ``None`` (autograd would return zeros), so the frontend raises its "gradient is None"
error. Importing this module does not import autograd.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import (
    BackendBase,
    CallOptions,
    Magnitude,
    Operator,
    outputs_to_numpy,
)

__all__ = ["AutogradBackend", "AutogradModel"]


class AutogradModel:
    """A model for the autograd backend: ``forward(params, x)`` and its weights.

    Parameters
    ----------
    forward
        ``forward(params, x) -> outputs``, written with ``autograd.numpy``; ``x`` is a
        batch (first axis) and ``outputs`` has shape ``(N,)`` or ``(N, n_outputs)``.
    params
        The weights, any nesting of NumPy arrays, passed to ``forward`` unchanged.

    Examples
    --------
    >>> import autograd.numpy as anp
    >>> model = AutogradModel(lambda w, x: anp.tanh(x @ w), np.ones((3, 2)))
    >>> model(np.zeros((4, 3))).shape
    (4, 2)
    """

    def __init__(self, forward: Callable[[Any, Any], Any], params: Any = None) -> None:
        self.forward = forward
        self.params = params

    def __call__(self, x: Any) -> Any:
        return self.forward(self.params, x)

    def __repr__(self) -> str:
        name = getattr(self.forward, "__qualname__", type(self.forward).__name__)
        return f"AutogradModel(forward={name})"


class AutogradBackend(BackendBase):
    """Backend for :class:`AutogradModel` objects and ``autograd.numpy`` functions.

    :class:`~agnostic_saliency.backend.BackendBase` gives every optional member a
    default; this backend writes ``can_handle``, ``to_numpy``, ``predict`` and
    ``gradient``.
    """

    name = "autograd"
    modules = ("agnostic_saliency_autograd",)

    def can_handle(self, model: Any) -> bool:
        # No import: this module is loaded already, or the model could not be an
        # AutogradModel.
        return isinstance(model, AutogradModel)

    def to_numpy(self, array: Any) -> np.ndarray:
        tracer = sys.modules.get("autograd.tracer")
        if tracer is not None and tracer.isbox(array):
            array = tracer.getval(array)
        return np.asarray(array)

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        # A copy: a forward that writes into its input must not reach the caller's array.
        outputs = _forward(model, inputs.copy(), options)
        return outputs_to_numpy(outputs, lambda value: isinstance(value, np.ndarray)
                                or np.isscalar(value), np.asarray)

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Operator | None,
                 options: CallOptions, magnitude: Magnitude | None = None
                 ) -> np.ndarray | None:
        from autograd import grad

        try:
            gradient = grad(_scorer(model, targets, operator, options))(inputs)
        except _Disconnected:
            return None
        # autograd may compute parts of the backward pass in float64 (mean, for one).
        return np.asarray(gradient, dtype=inputs.dtype)


class _Disconnected(Exception):
    """The score was computed without the traced input."""


def _scorer(model: Any, targets: Any, operator: Operator | None,
            options: CallOptions) -> Callable[[Any], Any]:
    """``score(x)``: the sum over the batch of the per-sample scores, in at least float32."""
    import autograd.numpy as anp
    from autograd.tracer import isbox

    def score(x: Any) -> Any:
        if operator is not None:
            scores = operator(model, x, _operator_targets(targets, x.dtype))
            if tuple(np.shape(scores)) != (len(x),):
                raise ValueError(messages.operator_wrong_shape(tuple(np.shape(scores)), len(x)))
            total = anp.sum(_upcast(scores))
        else:
            outputs = _forward(model, x, options)
            if not (isbox(outputs) or isinstance(outputs, np.ndarray)):
                raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
            if np.shape(outputs) != np.shape(targets):  # no silent broadcasting
                raise ValueError(messages.output_wrong_shape(np.shape(outputs), len(x)))
            total = anp.sum(_upcast(outputs) * targets)
        if not isbox(total):
            raise _Disconnected
        return total

    return score


def _forward(model: Any, x: Any, options: CallOptions) -> Any:
    try:
        outputs = model(x)
    except Exception as error:
        raise ValueError(messages.model_failed(tuple(np.shape(x)), error)) from error
    return options.output_selector(outputs) if options.output_selector else outputs


def _upcast(values: Any) -> Any:
    dtype = getattr(values, "dtype", None)
    if dtype is not None and np.issubdtype(dtype, np.floating) and dtype.itemsize < 4:
        return values.astype(np.float32)
    return values


def _operator_targets(targets: Any, dtype: np.dtype) -> Any:
    """The user's targets for the operator: NumPy already; floats in the inputs' dtype."""
    if targets is None:
        return None
    array = np.asarray(targets)
    return array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array
