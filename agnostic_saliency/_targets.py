"""Targets: which output (or weighted combination of outputs) is explained.

Everything is turned into one form the backends understand: weights of the
model's outputs, of the output's shape, so the score of a sample is
``sum(output * weights)``. Class indices become one-hot rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from agnostic_saliency import messages

__all__ = ["OutputSpec", "TargetPlan", "plan_targets"]


@dataclass(frozen=True)
class OutputSpec:
    """Per-sample shape of a model's output: ``()`` or ``(n_outputs,)``."""

    sample_shape: tuple[int, ...]

    @cached_property
    def n_outputs(self) -> int:
        return self.sample_shape[0] if self.sample_shape else 1

    @cached_property
    def single(self) -> bool:
        """One output per sample (a regression model): no target is needed."""
        return self.n_outputs == 1

    def one_hot(self, indices: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Rows of weights selecting ``indices``: a new ``(len(indices), n_outputs)`` array.

        """
        weights = np.zeros((len(indices), self.n_outputs), dtype=dtype)
        weights[np.arange(len(indices)), indices] = 1
        return weights


@dataclass(slots=True)
class TargetPlan:
    """Targets resolved for ``n`` samples.

    Exactly one of ``indices`` (one class per sample) and ``weights`` (a weight
    per output) describes the targets.
    """

    spec: OutputSpec
    indices: np.ndarray | None = None
    weights: np.ndarray | None = None

    def class_indices_for(self, ids: np.ndarray | slice | None) -> np.ndarray | None:
        """Class index of each sample ``ids`` (int64; ``None``: every sample), or
        ``None`` if the targets are weights or the model has a single output: the
        form of targets a backend with ``class_index_targets`` takes instead of
        one-hot rows."""
        if self.indices is None or self.spec.single:
            return None
        return self.indices if ids is None else self.indices[ids]

    def check_range(self) -> None:
        """Raise ``ValueError`` for a class index outside the model's outputs."""
        if self.indices is not None:
            _check_range(self.indices, self.spec.n_outputs)

    def weights_for(self, ids: np.ndarray | slice | None, dtype: np.dtype) -> np.ndarray:
        """Output weights of the samples ``ids`` (indices, a slice, or ``None`` for
        every sample), of the output's shape, in ``dtype``."""
        if self.weights is not None:
            weights = self.weights if ids is None else self.weights[ids]
            return np.ascontiguousarray(weights, dtype=dtype)
        assert self.indices is not None
        indices = self.indices if ids is None else self.indices[ids]
        spec = self.spec
        if spec.single:
            return np.ones((len(indices), *spec.sample_shape), dtype=dtype)
        return spec.one_hot(indices, dtype)


def plan_targets(targets: Any, n: int, spec: OutputSpec, check_range: bool = True
                 ) -> TargetPlan:
    """Validate the given ``targets`` for ``n`` samples of a model with outputs ``spec``.

    ``check_range=False`` leaves the range of class indices to the caller
    (:meth:`TargetPlan.check_range`).

    Raises
    ------
    TypeError
        For targets that are not integers (or integral floats) nor 2-D weights.
    ValueError
        For a wrong length, an out-of-range index or a weight matrix of the
        wrong shape.
    """
    array = targets if isinstance(targets, np.ndarray) else np.asarray(targets)
    if array.ndim == 2:
        return TargetPlan(spec, None, _check_weights(array, n, spec))
    if array.ndim > 2:
        raise ValueError(messages.targets_wrong_rank(array.shape))
    # Class indices of a signed 64-bit integer type are used as they are.
    indices = array if array.dtype.kind == "i" and array.itemsize == 8 else _as_indices(array)
    if spec.single and np.any(indices != 0):
        raise ValueError(messages.single_output_target(targets))
    if indices.ndim == 0:
        indices = np.full(n, int(indices), dtype=np.int64)
    elif len(indices) == 1 and n != 1:
        indices = np.repeat(indices, n)
    elif len(indices) != n:
        raise ValueError(messages.targets_wrong_length(len(indices), n))
    if check_range:
        _check_range(indices, spec.n_outputs)
    return TargetPlan(spec, indices)


def _as_indices(array: np.ndarray) -> np.ndarray:
    """The targets as int64 class indices: the array itself when it already is one."""
    if array.dtype.kind in "iu":  # uint64 beyond int64 wraps to negative: out of range
        return array.astype(np.int64, copy=False)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise TypeError(messages.targets_not_integer(array.dtype))
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
        raise TypeError(messages.targets_not_integer(array.dtype))
    return array.astype(np.int64)


def _check_range(indices: np.ndarray, n_outputs: int) -> None:
    """Raise ``ValueError`` naming the first class index outside ``[0, n_outputs)``."""
    if not len(indices) or (indices.min() >= 0 and indices.max() < n_outputs):
        return
    bad = indices[(indices < 0) | (indices >= n_outputs)]
    raise ValueError(messages.targets_out_of_range(int(bad[0]), n_outputs))


def _check_weights(array: np.ndarray, n: int, spec: OutputSpec) -> np.ndarray:
    expected = (n, spec.n_outputs)
    if array.shape != expected:
        raise ValueError(messages.weights_wrong_shape(array.shape, expected))
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise TypeError(messages.targets_not_integer(array.dtype))
    if not np.all(np.isfinite(array)):
        raise ValueError(messages.weights_not_finite())
    if not spec.sample_shape:
        return array[:, 0]
    return array
