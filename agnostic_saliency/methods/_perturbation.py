"""Shared machinery of methods that evaluate gradients at many points per input.

Perturbed points (noisy copies, or points on an integration path) are generated
and reduced chunk by chunk, so at most ``batch_size`` points exist at once
whatever ``nb_samples`` or ``steps`` are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from agnostic_saliency._run import Run
from agnostic_saliency.backend import Magnitude
from agnostic_saliency.explainer import GradientExplainer

__all__ = ["DEFAULT_POINTS", "CopiesRun", "PerturbationExplainer", "RunningMoments",
           "input_rows", "inputs_count"]

#: Points per backend call when ``batch_size`` is None (or the number of inputs, if larger).
DEFAULT_POINTS = 128

#: ``make_points(x_rows, first, count)`` -> ``(len(x_rows) * count, ...)``, sample-major.
PointMaker = Callable[[np.ndarray, int, int], np.ndarray]


class PerturbationExplainer(GradientExplainer):
    """An explainer that needs gradients at ``count`` points per input sample."""

    def _count(self) -> int:
        """Points per sample (``nb_samples`` or ``steps``)."""
        raise NotImplementedError

    def _points_per_sample(self) -> int:
        return self._count()

    def _everything_at_once(self, n_points: int) -> int:
        return max(n_points // self._count(), DEFAULT_POINTS)

    def _gradients_at(self, run: Run, rows: slice, make_points: PointMaker
                      ) -> Iterator[np.ndarray]:
        """Yield gradients of shape ``(samples, points, ...)``, chunk by chunk."""
        samples = rows.stop - rows.start
        count = self._count()
        per_sample = min(count, max(1, run.model_batch // samples))
        ids = np.arange(rows.start, rows.stop)
        for first in range(0, count, per_sample):
            size = min(per_sample, count - first)
            points = make_points(run.x[rows], first, size)
            gradient = run.gradient(points, np.repeat(ids, size))
            yield gradient.reshape(samples, size, *run.x.shape[1:])


class CopiesRun(Run):
    """A run over copies of some samples of ``parent`` (e.g. noisy copies).

    ``origin[i]`` is the parent's sample that row ``i`` copies: each copy is explained
    with that sample's target, and its gradients count for that sample. Gradients come
    back with the channels kept (a wrapping method aggregates before reducing).
    """

    def __init__(self, parent: Run, x: np.ndarray, origin: np.ndarray) -> None:
        super().__init__(parent.explainer, x, parent.layout, plan=parent.plan,
                         raw_targets=parent.raw_targets)
        self.model_batch = parent.model_batch
        self.parent = parent
        self.origin = origin
        self.state["sample_ids"] = parent.state["sample_ids"][origin]

    def magnitude(self, absolute: bool) -> Magnitude | None:
        return None

    def gradient(self, points: np.ndarray, samples: np.ndarray | slice,
                 absolute: bool = False, magnitude: Magnitude | None = None) -> np.ndarray:
        return self.parent.gradient(points, self.origin[samples], absolute=absolute)


def input_rows(run: Run, rows: slice) -> slice | np.ndarray:
    """The rows of the explained inputs that ``rows`` of ``run`` stand for."""
    return run.origin[rows] if isinstance(run, CopiesRun) else rows


def inputs_count(run: Run) -> int:
    """The number of explained inputs (the parent's, for a run over copies)."""
    return len(run.parent.x) if isinstance(run, CopiesRun) else len(run.x)


class RunningMoments:
    """Mean and sum of squared deviations over a growing axis, merged chunk by chunk.

    Chan et al.'s pairwise update in float64: exact zeros stay exact (the variance
    of identical gradients is 0, not rounding noise).
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | float = 0.0
        self.squares: np.ndarray | float = 0.0

    def update(self, values: np.ndarray) -> None:
        """Add ``values`` of shape ``(samples, k, ...)`` along axis 1."""
        values = values.astype(np.float64, copy=False)
        size = values.shape[1]
        chunk_mean = values.mean(axis=1)
        chunk_squares = ((values - chunk_mean[:, None]) ** 2).sum(axis=1)
        delta = chunk_mean - self.mean
        total = self.count + size
        self.mean = self.mean + delta * (size / total)
        self.squares = self.squares + chunk_squares + delta**2 * (self.count * size / total)
        self.count = total

    def variance(self, ddof: int) -> np.ndarray:
        return np.asarray(self.squares) / (self.count - ddof)
