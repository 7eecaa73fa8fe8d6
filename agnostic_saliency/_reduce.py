"""Channel reductions of attribution maps, in NumPy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from agnostic_saliency import messages

__all__ = ["REDUCERS", "Reducer", "check_reducer", "reduce_channels"]

Reducer = Literal["max", "mean", "min", "sum"] | None

REDUCERS: dict[str, Callable[..., np.ndarray]] = {
    "max": np.max,
    "mean": np.mean,
    "min": np.min,
    "sum": np.sum,
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


def reduce_channels(maps: np.ndarray, channel_axis: int, reducer: Reducer) -> np.ndarray:
    """Reduce the channel axis of image maps; other ranks and ``reducer=None`` pass through."""
    if reducer is None or not is_image(maps.ndim):
        return maps
    return REDUCERS[reducer](maps, axis=channel_axis)


def reduced_shape(shape: tuple[int, ...], channel_axis: int, reducer: Reducer) -> tuple[int, ...]:
    """Shape of :func:`reduce_channels` applied to an array of ``shape``."""
    if reducer is None or not is_image(len(shape)):
        return shape
    return shape[:channel_axis] + shape[channel_axis + 1:]
