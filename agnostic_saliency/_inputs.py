"""Validation of the inputs, in NumPy, before any backend is called."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import Backend

__all__ = ["as_input_array", "check_finite", "resolve_channel_axis"]


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
    _refuse_datasets(inputs)
    try:
        array = backend.to_numpy(inputs)
    except Exception as error:
        raise TypeError(messages.inputs_not_array(inputs)) from error
    if not isinstance(array, np.ndarray) or array.dtype == object:
        raise TypeError(messages.inputs_not_array(inputs))
    return array


def _refuse_datasets(inputs: Any) -> None:
    """A whole data set is never read into one fake batch."""
    kind = type(inputs)
    if kind.__module__.startswith(_DATASET_MODULES) or (
            hasattr(inputs, "__iter__") and not hasattr(inputs, "__len__")
            and not hasattr(inputs, "shape")):
        raise TypeError(messages.inputs_are_a_dataset(f"{kind.__module__}.{kind.__qualname__}"))


#: Where the data-set classes of the frameworks live (a torch Dataset, a tf.data.Dataset).
_DATASET_MODULES = ("torch.utils.data", "tensorflow.python.data", "datasets.")


def _is_floating(dtype: np.dtype) -> bool:
    # ml_dtypes' bfloat16 is a NumPy "V" kind; accept it by name.
    return dtype.kind == "f" or np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"


def check_finite(array: np.ndarray, ids: np.ndarray | None = None) -> None:
    """Raise ``ValueError`` naming the count and first sample of non-finite values (by
    its global id in ``ids`` where given).

    A finite sum proves every value finite (a NaN or an infinity makes it NaN or
    infinite); only when it is not, or on overflow, does the exact test run.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum(dtype=np.float64 if array.dtype.itemsize < 4 else None)):
            return
    # bfloat16 has no isfinite loop; float32 holds its range.
    finite = np.isfinite(array if array.dtype.kind == "f" else array.astype(np.float32))
    if finite.all():
        return
    bad = ~finite
    first = int(np.argmax(bad.reshape(len(array), -1).any(axis=1)))
    first = first if ids is None else int(ids[first])
    raise ValueError(messages.inputs_not_finite(int(bad.sum()), first))


def resolve_channel_axis(channel_axis: int | None, default: int, shape: tuple[int, ...],
                         declared: bool = False) -> int:
    """Return the non-negative channel axis of inputs of ``shape``.

    An explicit ``channel_axis`` is trusted, and so is one the model ``declared``
    (a Keras layer's ``data_format``). A framework's ``default`` is refused for
    images when it is implausible: its axis is large (more than 4 entries) while the
    other candidate axis (1 or the last) has 1, 3 or 4 entries.
    """
    axis = default if channel_axis is None else channel_axis
    if not -len(shape) < axis < len(shape) or axis % len(shape) == 0:
        raise ValueError(messages.bad_channel_axis(axis, shape))
    axis %= len(shape)
    if channel_axis is None and not declared and len(shape) == 4:
        other = len(shape) - 1 if axis == 1 else 1
        if shape[axis] > 4 and shape[other] in (1, 3, 4):
            raise ValueError(messages.ambiguous_channel_axis(axis, shape))
    return axis
