"""Targets: which output (or weighted combination of outputs) is explained.

Everything is turned into one form the backends understand: weights of the
model's outputs, of the output's shape, so the score of a sample is
``sum(output * weights)``. Class indices become one-hot rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agnostic_saliency import messages

__all__ = ["OutputSpec", "TargetPlan", "plan_targets"]


@dataclass(frozen=True)
class OutputSpec:
    """Per-sample shape of a model's output: ``()`` or ``(n_outputs,)``."""

    sample_shape: tuple[int, ...]

    @property
    def n_outputs(self) -> int:
        return self.sample_shape[0] if self.sample_shape else 1

    @property
    def single(self) -> bool:
        """One output per sample (a regression model): no target is needed."""
        return self.n_outputs == 1


@dataclass(frozen=True)
class TargetPlan:
    """Targets resolved for ``n`` samples.

    Exactly one of ``indices`` (one class per sample) and ``weights`` (a weight
    per output) describes the targets.
    """

    spec: OutputSpec
    indices: np.ndarray | None = None
    weights: np.ndarray | None = None

    def weights_for(self, ids: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Output weights of the samples ``ids``, of the output's shape, in ``dtype``."""
        if self.weights is not None:
            return np.ascontiguousarray(self.weights[ids], dtype=dtype)
        assert self.indices is not None
        if self.spec.single:
            return np.ones((len(ids), *self.spec.sample_shape), dtype=dtype)
        weights = np.zeros((len(ids), self.spec.n_outputs), dtype=dtype)
        weights[np.arange(len(ids)), self.indices[ids]] = 1
        return weights


def plan_targets(targets: Any, n: int, spec: OutputSpec) -> TargetPlan:
    """Validate the given ``targets`` for ``n`` samples of a model with outputs ``spec``.

    Raises
    ------
    TypeError
        For targets that are not integers (or integral floats) nor 2-D weights.
    ValueError
        For a wrong length, an out-of-range index or a weight matrix of the
        wrong shape.
    """
    array = np.asarray(targets)
    if array.ndim == 2:
        return TargetPlan(spec, weights=_check_weights(array, n, spec))
    if array.ndim > 2:
        raise ValueError(messages.targets_wrong_rank(array.shape))
    indices = _as_indices(array)
    if spec.single and np.any(indices != 0):
        raise ValueError(messages.single_output_target(targets))
    if indices.ndim == 0:
        indices = np.full(n, int(indices), dtype=np.int64)
    elif len(indices) == 1:
        indices = np.repeat(indices, n)
    elif len(indices) != n:
        raise ValueError(messages.targets_wrong_length(len(indices), n))
    _check_range(indices, spec.n_outputs)
    return TargetPlan(spec, indices=indices)


def _as_indices(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise TypeError(messages.targets_not_integer(array.dtype))
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
        raise TypeError(messages.targets_not_integer(array.dtype))
    return array.astype(np.int64)


def _check_range(indices: np.ndarray, n_outputs: int) -> None:
    bad = indices[(indices < 0) | (indices >= n_outputs)]
    if bad.size:
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
