"""Validation of the inputs, in NumPy, before any backend is called."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import Backend

__all__ = [
    "FEW", "SMALL", "all_finite", "as_input_array", "check_finite", "is_dot_ready",
    "resolve_channel_axis",
]

#: Arrays of at most this many values are checked in one exact pass: for them the
#: fixed cost of NumPy calls, not the data, dominates.
SMALL = 1 << 15
#: Up to this many numbers, ``tolist()`` and Python's ``min``/``max`` beat NumPy's
#: reductions where it counts: right after a model's forward pass, when NumPy's code
#: has left the caches (measured on 2 cores: 36 against 65 µs for 256 class indices,
#: 50 against 62 for 512, in a loop of PyTorch MLP calls). With hot caches NumPy is
#: faster from 64 numbers on, but a saliency call never starts with hot caches.
FEW = 512


def as_input_array(inputs: Any, backend: Backend, check: bool = True) -> np.ndarray:
    """Return ``inputs`` as a floating, finite, C-contiguous NumPy array with a batch axis.

    The caller's array is never modified: a read-only or strided view is copied only
    when the backend needs a contiguous buffer, and backends never write to it.
    ``check=False`` leaves the finite check (:func:`check_finite`) to the caller.

    Raises
    ------
    TypeError
        For something that is not an array, or a non-floating dtype.
    ValueError
        For a missing batch axis or non-finite values.
    """
    array = inputs if isinstance(inputs, np.ndarray) else _convert(inputs, backend)
    if array.dtype.kind != "f" and not _is_floating(array.dtype):
        raise TypeError(messages.inputs_not_floating(array.dtype))
    if array.ndim < 2:
        raise ValueError(messages.inputs_without_batch_axis(array.shape))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    if check:
        check_finite(array)
    return array


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
    return dtype.kind == "f" or np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"


def check_finite(array: np.ndarray) -> None:
    """Raise ``ValueError`` naming the count and first sample of non-finite values."""
    if all_finite(array):
        return
    # bfloat16 has no isfinite loop; float32 holds its range.
    bad = ~np.isfinite(array if array.dtype.kind == "f" else array.astype(np.float32))
    count = int(bad.sum())
    if count:
        first = int(np.argmax(bad.reshape(len(array), -1).any(axis=1)))
        raise ValueError(messages.inputs_not_finite(count, first))


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of ``array`` is finite; one cheap pass, one NumPy call.

    A finite sum of squares proves every value finite, since a NaN or an infinity
    makes it non-finite; only when it is not (or on overflow) does the exact test
    run. For 32- and 64-bit floats the sum is a dot product (BLAS, no floating-point
    warnings, whatever the size: in a loop of model calls each distinct NumPy routine
    pays for its code being evicted, so one routine beats two cheaper ones); for
    16-bit floats a float64 sum.
    """
    floating = array.dtype.kind == "f"
    if is_dot_ready(array):
        if math.isfinite(np.vdot(array, array)):
            return True
    elif floating and array.size <= SMALL:  # the ufunc's reduce: no ndarray.all wrapper
        return bool(np.logical_and.reduce(np.isfinite(array), axis=None))
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            total = array.sum(dtype=np.float64 if array.dtype.itemsize < 4 else None)
        if np.isfinite(total):
            return True
    # bfloat16 has no isfinite loop; float32 holds its range.
    return bool(np.isfinite(array if floating else array.astype(np.float32)).all())


def is_dot_ready(array: np.ndarray) -> bool:
    """Whether ``np.vdot(array, array)`` is a sum of squares in ``array``'s own
    precision without a copy: C-contiguous floats of 32 bits or more."""
    return array.dtype.kind == "f" and array.dtype.itemsize >= 4 and array.flags.c_contiguous


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
