"""Channel reductions of attribution maps, in NumPy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from agnostic_saliency import messages

__all__ = ["REDUCERS", "Reducer", "check_reducer", "reduce_channels"]

Reducer = Literal["max", "mean", "min", "sum", "l2"] | None


def _l2(values: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    """The Euclidean norm over ``axis`` (the default for a layer's hidden axis)."""
    norm = np.sqrt(np.sum(np.square(values), axis=axis))
    if out is None:
        return norm
    out[...] = norm
    return out


REDUCERS: dict[str, Callable[..., np.ndarray]] = {
    "max": np.max,
    "mean": np.mean,
    "min": np.min,
    "sum": np.sum,
    "l2": _l2,
}


def check_reducer(reducer: object) -> Reducer:
    """Return ``reducer`` if it names a channel reduction (or is ``None``).

    Raises
    ------
    ValueError
        For any other value.
    """
    if reducer is None or (isinstance(reducer, str) and reducer in REDUCERS):
        return reducer  # type: ignore[return-value]
    raise ValueError(messages.bad_reducer(reducer, [*REDUCERS, None]))


def is_image(ndim: int) -> bool:
    """Image inputs are rank 4: a batch axis, a channel axis and two spatial axes."""
    return ndim == 4


def reduce_channels(maps: np.ndarray, channel_axis: int, reducer: Reducer,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Reduce the channel axis of maps; ``reducer=None`` passes them through.

    Parameters
    ----------
    maps
        Attribution maps, channels kept.
    channel_axis
        Non-negative channel axis of the maps.
    reducer
        A name of :data:`REDUCERS`, or ``None``.
    out
        Where to write the result (same dtype as ``maps`` for a reduction); a new
        array (or ``maps`` itself, when nothing is reduced) if ``None``.

    Returns
    -------
    numpy.ndarray
        ``out`` if given.
    """
    if reducer is None:
        if out is None:
            return maps
        out[...] = maps
        return out
    if _channels_innermost(maps, channel_axis):
        # NumPy reduces a short axis of stride 1 one tiny loop per pixel (~20x slower
        # than over an outer axis): lay the channels out first, then reduce.
        maps = np.ascontiguousarray(np.moveaxis(maps, channel_axis, 1))
        channel_axis = 1
    return REDUCERS[reducer](maps, axis=channel_axis, out=out)


def _channels_innermost(maps: np.ndarray, channel_axis: int) -> bool:
    """Whether the channel axis is the fastest-varying axis in memory (NHWC storage)."""
    if maps.shape[channel_axis] < 2:
        return False
    stride = abs(maps.strides[channel_axis])
    return all(abs(maps.strides[axis]) > stride for axis in range(maps.ndim)
               if axis != channel_axis and maps.shape[axis] > 1)


def reduced_shape(shape: tuple[int, ...], channel_axis: int, reducer: Reducer) -> tuple[int, ...]:
    """Shape of :func:`reduce_channels` applied to an array of ``shape``."""
    if reducer is None:
        return shape
    return shape[:channel_axis] + shape[channel_axis + 1:]
