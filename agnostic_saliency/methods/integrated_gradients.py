"""Integrated Gradients (Sundararajan et al. 2017) with each library's quadrature."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._definitions import (
    DEFAULT,
    check_choice,
    check_positive,
    layer_reducer,
    resolve_definitions,
)
from agnostic_saliency._duck import as_numpy
from agnostic_saliency._run import Run
from agnostic_saliency.methods._perturbation import (
    PerturbationExplainer,
    input_rows,
    inputs_count,
)

__all__ = ["QUADRATURES", "IntegratedGradients", "quadrature"]

Quadrature = Literal["trapezoid", "gausslegendre", "riemann_left", "riemann_right",
                     "riemann_middle", "riemann_trapezoid", "uniform"]
QUADRATURES = ("trapezoid", "gausslegendre", "riemann_left", "riemann_right",
               "riemann_middle", "riemann_trapezoid", "uniform")

_PRESETS: dict[str, dict[str, Any] | None] = {
    "xplique": {"steps": 50, "baseline_value": 0.0, "quadrature": "trapezoid",
                "reducer": "mean"},
    "captum": {"steps": 50, "baseline_value": 0.0, "quadrature": "gausslegendre",
               "reducer": None},
    "pair": {"steps": 25, "baseline_value": 0.0, "quadrature": "uniform", "reducer": None},
}


def quadrature(name: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alphas`` in [0, 1] and weights of a quadrature rule.

    ``"trapezoid"`` is Xplique's rule; ``"gausslegendre"`` is Captum's default;
    ``"uniform"`` averages ``linspace(0, 1, steps)`` with equal weights (PAIR).
    ``"riemann_trapezoid"`` is Captum's rule of that name, which weights the nodes of
    ``linspace(0, 1, steps)`` by ``1/steps`` (halved at both ends), so its weights sum
    to ``(steps - 1) / steps``, not 1: it underestimates the integral by that factor.
    Every other rule's weights sum to 1.
    """
    if name == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    if name == "trapezoid":
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    equal = np.full(steps, 1.0 / steps)
    if name == "riemann_trapezoid":
        equal[[0, -1]] /= 2
    alphas = {
        "riemann_left": np.arange(steps) / steps,
        "riemann_right": np.arange(1, steps + 1) / steps,
        "riemann_middle": (np.arange(steps) + 0.5) / steps,
        "uniform": np.linspace(0.0, 1.0, steps),
        "riemann_trapezoid": np.linspace(0.0, 1.0, steps),
    }[name]
    return alphas, equal


class IntegratedGradients(PerturbationExplainer):
    """Integrated Gradients: ``(x - baseline) * integral of the gradient along the path``.

    Parameters
    ----------
    model
        A model of any framework with an installed backend, or a function with ``backend=``.
    steps
        Points on the path from the baseline to the input (Xplique and Captum 50, PAIR 25);
        at least 2.
    baseline_value
        The baseline: a number filling a sample, an array broadcasting to one sample,
        or one baseline per input, ``(N, ...)`` (e.g. a blurred copy of each image), or
        ``(1, ...)``, as Captum's ``baselines``. An array with as many axes as the inputs
        has a leading batch axis; NumPy or any framework's tensor.
    quadrature
        How the path integral is approximated: ``"trapezoid"`` (Xplique),
        ``"gausslegendre"`` (Captum), ``"riemann_left"``, ``"riemann_right"``,
        ``"riemann_middle"``, ``"riemann_trapezoid"`` (Captum's, whose weights sum to
        ``(steps - 1) / steps``), or ``"uniform"`` (PAIR's mean over ``linspace(0, 1, steps)``).
    reducer
        Channel reduction of image maps (Xplique ``"mean"``; Captum, PAIR ``None``).
    multiply_by_inputs
        ``True``: ``(x - baseline)`` times the path integral (the method's definition);
        ``False``: the path integral of the gradient alone (Captum's
        ``multiply_by_inputs=False``, "local" attributions).
    preset
        ``"xplique"`` (default), ``"captum"`` or ``"pair"``.
    **options
        ``backend``, ``batch_size``, ``operator``, ``channel_axis``, ``output_selector``,
        ``allow_training_mode``, ``strict``: see
        :class:`~agnostic_saliency.explainer.GradientExplainer`. ``batch_size`` bounds the
        number of path points per model call.

    Raises
    ------
    ValueError
        For ``steps`` below 2 (a single point is no path: Captum refuses it too), a
        ``baseline_value`` that is no number or numeric array, or, when explaining, one
        whose shape fits neither a sample nor the batch.

    Notes
    -----
    Completeness: the attributions of a sample sum to ``f(x) - f(baseline)`` up to
    the quadrature error, which vanishes as ``steps`` grows (with
    ``multiply_by_inputs=True``).
    """

    def __init__(self, model: Any, *, steps: int = DEFAULT, baseline_value: Any = DEFAULT,
                 quadrature: Quadrature = DEFAULT, reducer: Any = DEFAULT,
                 multiply_by_inputs: bool = True, preset: str | None = None,
                 **options: Any) -> None:
        self.preset = preset
        reducer = layer_reducer(reducer, options)
        definitions = resolve_definitions(
            "IntegratedGradients", _PRESETS, preset,
            {"steps": steps, "baseline_value": baseline_value, "quadrature": quadrature,
             "reducer": reducer})
        super().__init__(model, reducer=definitions["reducer"], **options)
        self.steps = check_positive("steps", definitions["steps"], 2, True)
        self.quadrature = check_choice("quadrature", definitions["quadrature"], QUADRATURES)
        self.baseline_value = _baseline_array(definitions["baseline_value"])
        self.multiply_by_inputs = bool(multiply_by_inputs)

    def _count(self) -> int:
        return self.steps

    def _baseline(self, run: Run, rows: slice) -> np.ndarray:
        """The baselines of ``rows``: one sample's shape, or ``(len(rows), ...)``."""
        value = self.baseline_value.astype(run.x.dtype, copy=False)
        sample_shape = run.x.shape[1:]
        shape = sample_shape
        if value.ndim == run.x.ndim:  # a leading batch axis, as Captum's baselines
            n = inputs_count(run)
            if value.shape[0] not in (1, n):
                raise ValueError(messages.baselines_wrong_count(value.shape, n))
            if value.shape[0] == n and n > 1:
                value = value[input_rows(run, rows)]
                shape = value.shape[:1] + sample_shape
            else:
                value = value[0]
        try:
            return np.broadcast_to(value, shape)
        except ValueError:
            raise ValueError(messages.bad_baseline(self.baseline_value.shape,
                                                   sample_shape)) from None

    def _attribute(self, run: Run, rows: slice) -> np.ndarray:
        alphas, weights = quadrature(self.quadrature, self.steps)
        x_rows = run.x[rows]
        baseline = np.broadcast_to(self._baseline(run, rows), x_rows.shape)
        difference = x_rows - baseline
        shape = (1, -1) + (1,) * (run.x.ndim - 1)

        def make_points(_: np.ndarray, first: int, size: int) -> np.ndarray:
            path = alphas[first:first + size].reshape(shape).astype(run.x.dtype)
            points = baseline[:, None] + path * difference[:, None]
            return points.reshape(-1, *run.x.shape[1:])

        total: np.ndarray | float = 0.0
        first = 0
        for gradients in self._gradients_at(run, rows, make_points):
            size = gradients.shape[1]
            step_weights = weights[first:first + size].reshape(shape)
            total = total + (gradients * step_weights).sum(axis=1)
            first += size
        return difference * np.asarray(total) if self.multiply_by_inputs else np.asarray(total)


def _baseline_array(value: Any) -> np.ndarray:
    """``baseline_value`` as a numeric array, refused with our message otherwise."""
    try:
        array = as_numpy(value)
    except (TypeError, ValueError):
        array = None
    if array is None or array.dtype.kind not in "biuf" or isinstance(value, (str, bytes)):
        raise ValueError(messages.bad_baseline_value(value))
    return array
