"""Plots of attribution maps: one sample per panel, methods side by side, and tokens.

matplotlib is an optional dependency (``pip install 'agnostic-saliency[plot]'``),
imported on the first call. Figures are built as ``matplotlib.figure.Figure`` with
an Agg canvas, never through ``pyplot``: nothing global changes (the user's
backend, the current figure, the figure manager), and they work on a headless
server. Maps and images may be NumPy arrays or tensors of any framework.

Map kinds (``kind="auto"`` picks from the rank of one sample):

- ``"image"``: ``(N, H, W)``, or ``(N, H, W, C)`` / ``(N, C, H, W)`` with the channels
  reduced by ``reducer``; drawn as a heat map, over the image when ``images`` are given.
  Images must have the maps' height and width.
- ``"tabular"``: ``(N, F)``; a bar per feature, coloured by its value.
- ``"series"``: ``(N, T)`` or ``(N, T, F)`` (never picked by ``"auto"``); a heat
  strip per feature with the input drawn over it as a line.

Colours: a map with negative values is signed and drawn with a diverging colour
map centred at 0 (``RdBu_r``); a map without is a magnitude, drawn with the
perceptually uniform ``inferno``. The strongest colour goes to the
``clip_percentile`` percentile of the absolute values (larger values saturate).
Over an image the map's opacity grows with its magnitude, up to ``alpha``.

Channel axis of rank-4 images and maps: ``channel_axis`` if given; else the one the
``explainer`` used; else read from the shapes when they leave one answer (an axis
whose removal leaves the maps' height and width; then the one of 1, 3 or 4 entries).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._plot_draw import (
    Scale,
    add_colorbar,
    check_style,
    draw,
    make_scale,
    matplotlib_parts,
    new_figure,
    show_image,
)
from agnostic_saliency._plot_prepare import Panels, prepare, sample_labels
from agnostic_saliency._plot_tokens import plot_tokens

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

__all__ = [  # noqa: F822 (plot_curves, plot_randomization: see __getattr__)
    "figure_to_rgba", "plot_attributions", "plot_comparison", "plot_curves",
    "plot_randomization", "plot_tokens", "save",
]

Kind = Literal["auto", "image", "tabular", "series"]
Opacity = Literal["saliency", "constant"]
ClassNames = Sequence[str] | Mapping[int, str]
_PANEL_INCHES = {"image": (2.6, 2.6), "tabular": (4.0, 2.6), "series": (4.5, 2.2)}
_COLORBAR_INCHES = 0.7


def plot_attributions(
    maps: Any,
    images: Any = None,
    *,
    explainer: Any = None,
    targets: Any = None,
    predicted: Any = None,
    class_names: ClassNames | None = None,
    titles: Sequence[str] | None = None,
    cmap: str | Colormap | None = None,
    alpha: float = 0.8,
    opacity: Opacity = "saliency",
    clip_percentile: float = 99.5,
    shared_scale: bool = False,
    cols: int | None = None,
    kind: Kind = "auto",
    channel_axis: int | None = None,
    reducer: str = "max",
    feature_names: Sequence[str] | None = None,
    colorbar: bool = True,
    figsize: tuple[float, float] | None = None,
    return_rgba: bool = False,
) -> Figure | np.ndarray:
    """A grid of attribution maps, one panel per sample.

    Parameters
    ----------
    maps
        Maps of shape ``(N, ...)``, NumPy or any framework's tensor; see the module
        docstring for the kinds.
    images
        The explained inputs, optional: images ``(N, H, W)`` (grayscale) or rank 4
        with 1, 3 or 4 channels (other counts are shown as their mean) and the maps'
        height and width; the series or feature values for the other kinds.
    explainer
        The explainer that made the maps: its channel axis reads rank-4 images and maps.
    targets, predicted
        The explained and the predicted class of each sample, for the titles: an int,
        ``(N,)`` indices, or ``(N, n_classes)`` scores (their argmax).
    class_names
        Names of the classes (a sequence, or a dict from index to name).
    titles
        One title per sample; win over ``targets`` and ``predicted``.
    cmap
        Colour map; ``None`` picks ``"RdBu_r"`` (centred at 0) for signed maps and
        ``"inferno"`` for magnitudes.
    alpha
        Most opacity of a map over an image (or series).
    opacity
        ``"saliency"``: over an image, a map's opacity is ``alpha`` times its magnitude
        relative to the scale, so low values leave the image visible; ``"constant"``:
        ``alpha`` everywhere.
    clip_percentile
        Percentile of the absolute values that gets the strongest colour.
    shared_scale
        One colour scale for all panels (maps comparable across samples) instead of
        one per panel.
    cols
        Panels per row; default ``min(N, 4)``.
    kind
        ``"auto"``, ``"image"``, ``"tabular"`` or ``"series"``.
    channel_axis
        Channel axis of rank-4 images and maps: ``1`` or ``-1``; ``None`` takes the
        explainer's, else reads it from the shapes.
    reducer
        Reduction of the channels of rank-4 maps: ``"max"``, ``"mean"``, ``"min"`` or
        ``"sum"``.
    feature_names
        Names of the features (tabular) or of the series' channels.
    colorbar
        Add colour bars: one per panel, or one for the figure with ``shared_scale``.
    figsize
        Figure size in inches; default from the grid.
    return_rgba
        Return the rendered figure as an ``(H, W, 4)`` uint8 array instead.

    Returns
    -------
    matplotlib.figure.Figure or numpy.ndarray

    Raises
    ------
    ImportError
        Without matplotlib.
    TypeError
        For maps or images that are no arrays.
    ValueError
        For shapes that do not fit ``kind``, images that do not match the maps, a
        channel axis that the shapes leave open, or arguments of another length.
    """
    check_style(alpha, clip_percentile, opacity)
    panels = prepare(maps, images, kind, channel_axis, explainer, reducer, feature_names)
    n = len(panels.maps)
    labels = sample_labels(n, titles, targets, predicted, class_names)
    cols = max(1, min(n, 4) if cols is None else int(cols))
    rows = max(1, math.ceil(n / cols))
    width, height = _PANEL_INCHES[panels.kind]
    width += _COLORBAR_INCHES * (colorbar and not shared_scale)
    extra = _COLORBAR_INCHES * (colorbar and shared_scale)
    fig = new_figure(figsize or (width * cols + extra, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    shared = make_scale(list(panels.maps), clip_percentile, cmap) if shared_scale else None
    for index, ax in enumerate(axes.flat):
        if index >= n:
            ax.set_axis_off()
            continue
        scale = shared or make_scale([panels.maps[index]], clip_percentile, cmap)
        draw(ax, panels, index, scale, alpha, opacity, feature_names)
        if labels is not None:
            ax.set_title(labels[index], fontsize="small")
        if colorbar and shared is None:
            add_colorbar(fig, scale, ax)
    if colorbar and shared is not None:
        add_colorbar(fig, shared, list(axes.flat[:n]))
    return figure_to_rgba(fig) if return_rgba else fig


def plot_comparison(
    maps_by_name: Mapping[str, Any] | Any,
    images: Any = None,
    *,
    explainer: Any = None,
    targets: Any = None,
    predicted: Any = None,
    class_names: ClassNames | None = None,
    cmap: str | Colormap | None = None,
    alpha: float = 0.8,
    opacity: Opacity = "saliency",
    clip_percentile: float = 99.5,
    shared_scale: bool = False,
    kind: Kind = "auto",
    channel_axis: int | None = None,
    reducer: str = "max",
    feature_names: Sequence[str] | None = None,
    colorbar: bool = True,
    figsize: tuple[float, float] | None = None,
    return_rgba: bool = False,
) -> Figure | np.ndarray:
    """Maps of several frameworks or methods side by side: one row per sample.

    A row shows the image (for image maps, when ``images`` are given), then one
    map per name, titled with the names. All maps of a row share one colour scale:
    the clipping percentile is computed jointly over that row's maps, so equal
    values get equal colours in every column; ``shared_scale=True`` shares one scale
    across all rows too.

    Parameters
    ----------
    maps_by_name
        Name -> maps, all of one shape, or a
        :class:`~agnostic_saliency.compare.ComparisonReport` (its ``maps``).
    images, explainer, targets, predicted, class_names
        As in :func:`plot_attributions`; the classes label each row.
    cmap, alpha, opacity, clip_percentile, kind, channel_axis, reducer, feature_names
        As in :func:`plot_attributions`.
    shared_scale
        One colour scale for the whole figure instead of one per row.
    colorbar
        Add one colour bar per row (or one for the figure with ``shared_scale``).
    figsize, return_rgba
        As in :func:`plot_attributions`.

    Returns
    -------
    matplotlib.figure.Figure or numpy.ndarray

    Raises
    ------
    ImportError
        Without matplotlib.
    ValueError
        For no maps, maps of different shapes, or what :func:`plot_attributions` refuses.
    """
    check_style(alpha, clip_percentile, opacity)
    named = dict(getattr(maps_by_name, "maps", maps_by_name))
    if not named:
        raise ValueError(messages.plot_no_maps())
    prepared = {name: prepare(maps, images, kind, channel_axis, explainer, reducer,
                              feature_names) for name, maps in named.items()}
    shapes = {name: panels.maps.shape for name, panels in prepared.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(messages.plot_shapes_differ(shapes))
    first = next(iter(prepared.values()))
    n = len(first.maps)
    labels = sample_labels(n, None, targets, predicted, class_names)
    shown = first.images if first.kind == "image" else None
    cols = len(named) + (shown is not None)
    width, height = _PANEL_INCHES[first.kind]
    fig = new_figure(figsize or (width * cols + colorbar * _COLORBAR_INCHES,
                                 height * max(n, 1)))
    axes = fig.subplots(max(n, 1), cols, squeeze=False)
    rows = [[panels.maps[row] for panels in prepared.values()] for row in range(n)]
    shared = (make_scale([m for row in rows for m in row], clip_percentile, cmap)
              if shared_scale else None)
    for row in range(n):
        scale = shared or make_scale(rows[row], clip_percentile, cmap)
        _draw_row(axes[row], prepared, shown, row, scale, alpha, opacity, feature_names)
        label = f"sample {row}" if labels is None else f"sample {row}\n{labels[row]}"
        axes[row, 0].set_ylabel(label, fontsize="small")
        if colorbar and shared is None:
            add_colorbar(fig, scale, list(axes[row]))
    if colorbar and shared is not None:
        add_colorbar(fig, shared, list(axes.flat))
    return figure_to_rgba(fig) if return_rgba else fig


def _draw_row(axes: Any, prepared: Mapping[str, Panels], images: np.ndarray | None, row: int,
              scale: Scale, alpha: float, opacity: str,
              feature_names: Sequence[str] | None) -> None:
    if images is not None:
        show_image(axes[0], images[row])
        axes[0].set_title("input" if row == 0 else "", fontsize="small")
    for col, (name, panels) in enumerate(prepared.items(), start=int(images is not None)):
        draw(axes[col], panels, row, scale, alpha, opacity, feature_names)
        axes[col].set_title(str(name) if row == 0 else "", fontsize="small")


def figure_to_rgba(fig: Figure) -> np.ndarray:
    """Render ``fig`` with Agg and return its pixels, shape ``(H, W, 4)``, uint8.

    A figure with another canvas (e.g. from ``pyplot`` with a GUI backend) gets its
    canvas back afterwards.
    """
    agg = matplotlib_parts()[1]
    original = fig.canvas
    canvas = original if isinstance(original, agg) else agg(fig)
    try:
        canvas.draw()
        return np.array(canvas.buffer_rgba(), dtype=np.uint8)
    finally:
        if canvas is not original:
            fig.set_canvas(original)


def save(fig: Figure, path: str | os.PathLike[str], *, dpi: float | None = None) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: .png, .pdf, .svg, ...)."""
    matplotlib_parts()
    path = Path(path)
    fig.savefig(path, dpi="figure" if dpi is None else dpi)
    return path


def __getattr__(name: str) -> Any:
    """The curves and randomisation reports of :mod:`agnostic_saliency.metrics` and
    :mod:`agnostic_saliency.sanity`, drawn with this module's helpers (imported on use)."""
    if name in ("plot_curves", "plot_randomization"):
        from agnostic_saliency import _plot_metrics

        return getattr(_plot_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
