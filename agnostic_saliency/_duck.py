"""Framework tensors to NumPy by duck typing, without importing any framework.

Used where no backend is at hand (plots, token plots, baselines): a PyTorch tensor
is detached and moved to the CPU through its own methods; TensorFlow and JAX
arrays, and anything else with ``__array__``, go through ``np.asarray``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_numpy"]


def as_numpy(value: Any) -> np.ndarray:
    """``value`` as a NumPy array: NumPy, lists, and tensors of any framework.

    Raises
    ------
    TypeError, ValueError
        Where ``np.asarray`` cannot convert it.
    """
    if isinstance(value, np.ndarray):
        return value
    if callable(getattr(value, "detach", None)):  # PyTorch: no grad, host memory
        value = value.detach()
        if callable(getattr(value, "cpu", None)):
            value = value.cpu()
    elif not hasattr(value, "__array__") and callable(getattr(value, "numpy", None)):
        value = value.numpy()
    return np.asarray(value)
