"""Plots of the metrics: Deletion/Insertion curves and the model randomisation report.

matplotlib is optional and imported on the first call (through
:mod:`agnostic_saliency.plots`); figures are ``matplotlib.figure.Figure`` objects with
an Agg canvas, never ``pyplot`` state. :mod:`agnostic_saliency.plots` re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency._plot_draw import new_figure
from agnostic_saliency.plots import figure_to_rgba

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from agnostic_saliency.metrics import Curve
    from agnostic_saliency.sanity import RandomizationReport

__all__ = ["plot_curves", "plot_randomization"]

_MEASURES = (("spearman", "Spearman rank correlation"), ("ssim", "SSIM"),
             ("top_k_overlap", "top-k overlap"))


def plot_curves(curves: Curve | Mapping[str, Curve], *, title: str | None = None,
                samples: bool = False, figsize: tuple[float, float] = (5.0, 3.5),
                return_rgba: bool = False) -> Figure | np.ndarray:
    """Deletion or Insertion curves: the mean score against the fraction of features
    perturbed, one line per curve, its area in the legend.

    Parameters
    ----------
    curves
        One :class:`~agnostic_saliency.metrics.Curve` or name -> curve (e.g. one per
        method, to compare them).
    title
        The axes' title.
    samples
        Also draw each sample's curve, thin and translucent.
    figsize
        Figure size in inches.
    return_rgba
        Return the rendered pixels ``(H, W, 4)`` instead of the figure.
    """
    named = {"": curves} if not isinstance(curves, Mapping) else dict(curves)
    if not named:
        raise ValueError("plot_curves got no curves; give a Curve or a dict of them")
    fig = new_figure(figsize)
    axes = fig.add_subplot()
    for name, curve in named.items():
        label = f"{name} (area {float(curve.areas.mean()):.3f})".strip()
        (line,) = axes.plot(curve.fractions, curve.mean, label=label)
        if samples:
            for row in curve.scores:
                axes.plot(curve.fractions, row, color=line.get_color(), alpha=0.15,
                          linewidth=0.7)
    axes.set_xlabel("fraction of features perturbed")
    axes.set_ylabel("target score")
    axes.legend(fontsize="small")
    if title:
        axes.set_title(title)
    return figure_to_rgba(fig) if return_rgba else fig


def plot_randomization(report: RandomizationReport, *, figsize: tuple[float, float] = (6.0, 3.5),
                       return_rgba: bool = False) -> Figure | np.ndarray:
    """The model randomisation report: each similarity measure (mean over samples, with
    the range of the samples shaded) against the layers, output first, as in Adebayo et
    al. (2018), Figure 2.

    Parameters
    ----------
    report
        What :func:`agnostic_saliency.sanity.model_randomization` returned.
    figsize
        Figure size in inches.
    return_rgba
        Return the rendered pixels ``(H, W, 4)`` instead of the figure.
    """
    fig = new_figure(figsize)
    axes = fig.add_subplot()
    steps = np.arange(len(report.layers) + 1)
    for key, label in _MEASURES:
        values: np.ndarray = getattr(report, key)
        values = np.vstack([np.ones((1, values.shape[1])), values])  # the original model
        label = label if key != "top_k_overlap" else f"top-{report.top_k:g} overlap"
        with np.errstate(all="ignore"):
            mean = np.array([_nanmean(row) for row in values])
        (line,) = axes.plot(steps, mean, marker="o", label=label)
        axes.fill_between(steps, np.nanmin(values, axis=1), np.nanmax(values, axis=1),
                          color=line.get_color(), alpha=0.15)
    prefix = "" if not report.cascade else "up to "
    axes.set_xticks(steps, ["original", *(f"{prefix}{name}" for name in report.layers)],
                    rotation=45, ha="right", fontsize="small")
    axes.set_ylabel("similarity to the original maps")
    axes.set_title("cascading randomisation" if report.cascade else
                   "independent randomisation", fontsize="medium")
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.legend(fontsize="small")
    return figure_to_rgba(fig) if return_rgba else fig


def _nanmean(row: Any) -> float:
    finite = np.asarray(row)[np.isfinite(row)]
    return float(finite.mean()) if finite.size else float("nan")
