"""Checks on what backends return: model outputs and gradients."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._targets import OutputSpec
from agnostic_saliency.backend import warn

__all__ = ["check_gradient", "output_spec"]



def output_spec(outputs: Any, n: int) -> OutputSpec:
    """Describe a model output for a batch of ``n``; refuse anything but ``(N,)``/``(N, C)``.

    Raises
    ------
    TypeError
        If the output is a tuple, list, mapping or another object, not one array.
    ValueError
        If the output's first axis is not the batch or its rank is not 1 or 2.
    """
    if not isinstance(outputs, np.ndarray):
        raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
    if outputs.ndim not in (1, 2) or outputs.shape[0] != n:
        raise ValueError(messages.output_wrong_shape(outputs.shape, n))
    spec = OutputSpec(outputs.shape[1:])
    if _looks_like_probabilities(outputs, spec):
        warn(messages.probabilities_output())
    return spec


def _looks_like_probabilities(outputs: np.ndarray, spec: OutputSpec) -> bool:
    if spec.single or outputs.size == 0:
        return False
    values = outputs.astype(np.float64)
    in_unit = bool(np.all((values >= 0) & (values <= 1)))
    return in_unit and bool(np.allclose(values.sum(axis=1), 1.0, atol=1e-3))


def check_gradient(
    gradient: Any, shape: tuple[int, ...], backend: str, samples: np.ndarray | slice,
    absolute: bool = False, nonnegative: bool = False,
) -> tuple[np.ndarray, np.ndarray | bool]:
    """Check that the backend's gradient is a finite float array of ``shape``.

    ``samples`` gives, for each row of the gradient, the index of the input sample it
    belongs to (an array, or a slice of consecutive samples); messages name those.
    ``nonnegative=True`` says that the gradient holds absolute values already (a
    backend's magnitude map). The sums of the rows' absolute values tell it all in
    the common case: finite and positive for rows that are finite and not all zero.

    Returns
    -------
    gradient : numpy.ndarray
        The gradient, unchanged; with ``absolute=True`` a new array of its absolute
        values.
    nonzero : numpy.ndarray or True
        Boolean, one entry per row: whether the row has a non-zero value; ``True``
        when every row has.

    Raises
    ------
    RuntimeError
        If the gradient is ``None`` (disconnected input), of the wrong shape or not float.
    FloatingPointError
        If it holds NaN or Inf; the message names the samples.
    """
    if gradient is None:
        raise RuntimeError(messages.gradient_is_none())
    if not isinstance(gradient, np.ndarray) or gradient.shape != shape:
        raise RuntimeError(messages.gradient_wrong_shape(
            backend, getattr(gradient, "shape", type(gradient).__name__), shape))
    if gradient.dtype.kind != "f" and not np.issubdtype(gradient.dtype, np.floating):
        raise RuntimeError(messages.gradient_not_float(backend, gradient.dtype))
    magnitude = gradient if nonnegative else np.abs(gradient)
    rows = magnitude.reshape(len(magnitude), -1)
    if rows.dtype.kind != "f":  # bfloat16 has no isfinite loop
        rows = rows.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        totals = rows.sum(axis=1, dtype=np.float64 if rows.dtype.itemsize < 4 else None)
    if np.isfinite(totals).all() and (totals > 0).all():  # the common case, in one pass
        return (magnitude if absolute else gradient), True
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        _raise_not_finite(np.flatnonzero(~finite), samples)
    nonzero = np.asarray(rows.any(axis=1))
    return (magnitude if absolute else gradient), (True if nonzero.all() else nonzero)


def _raise_not_finite(bad: np.ndarray, samples: np.ndarray | slice) -> None:
    ids = np.arange(samples.stop)[samples] if isinstance(samples, slice) else samples
    raise FloatingPointError(messages.gradient_not_finite(np.unique(ids[bad]).tolist()))
