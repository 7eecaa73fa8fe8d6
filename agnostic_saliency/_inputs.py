"""Validation of the inputs, in NumPy, before any backend is called."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import Backend

__all__ = ["as_input_array", "check_finite", "resolve_channel_axis"]


def as_input_array(inputs: Any, backend: Backend) -> np.ndarray:
    """Return ``inputs`` as a floating, finite, C-contiguous NumPy array with a batch axis.

    The caller's array is never modified: a read-only or strided view is copied only
    when the backend needs a contiguous buffer, and backends never write to it.

    Raises
    ------
    TypeError
        For something that is not an array, or a non-floating dtype.
    ValueError
        For a missing batch axis or non-finite values.
    """
    array = inputs if isinstance(inputs, np.ndarray) else _convert(inputs, backend)
    if not _is_floating(array.dtype):
        raise TypeError(messages.inputs_not_floating(array.dtype))
    if array.ndim < 2:
        raise ValueError(messages.inputs_without_batch_axis(array.shape))
    check_finite(array)
    return np.ascontiguousarray(array)


def _convert(inputs: Any, backend: Backend) -> np.ndarray:
    try:
        array = backend.to_numpy(inputs)
    except Exception as error:
        raise TypeError(messages.inputs_not_array(inputs)) from error
    if not isinstance(array, np.ndarray) or array.dtype == object:
        raise TypeError(messages.inputs_not_array(inputs))
    return array


def _is_floating(dtype: np.dtype) -> bool:
    # ml_dtypes' bfloat16 is a NumPy "V" kind; accept it by name.
    return np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"


def check_finite(array: np.ndarray) -> None:
    """Raise ``ValueError`` naming the count and first sample of non-finite values.

    The sum is a cheap first test: a finite sum proves every value finite; an
    infinite one (overflow, or a NaN/Inf in the data) triggers the exact check.
    """
    accumulator = np.float64 if array.dtype.itemsize < 4 else None
    with np.errstate(over="ignore", invalid="ignore"):
        total = array.sum(dtype=accumulator)
    if np.isfinite(total):
        return
    bad = ~np.isfinite(array.astype(np.float32, copy=False))
    count = int(bad.sum())
    if count:
        first = int(np.argmax(bad.reshape(len(array), -1).any(axis=1)))
        raise ValueError(messages.inputs_not_finite(count, first))


def resolve_channel_axis(
    channel_axis: int | None, default: int, shape: tuple[int, ...]
) -> int:
    """Return the non-negative channel axis of image inputs of ``shape``.

    An explicit ``channel_axis`` is trusted. The backend's default is refused when
    it is implausible: a channels-first default on an array whose axis 1 is large
    while the last axis has 1, 3 or 4 entries.
    """
    axis = default if channel_axis is None else channel_axis
    if not -len(shape) < axis < len(shape) or axis % len(shape) == 0:
        raise ValueError(messages.bad_channel_axis(axis, shape))
    axis %= len(shape)
    if channel_axis is None and axis == 1 and shape[1] > 4 and shape[-1] in (1, 3, 4):
        raise ValueError(messages.ambiguous_channel_axis(axis, shape))
    return axis
