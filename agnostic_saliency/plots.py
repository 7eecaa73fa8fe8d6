"""Plots of attribution maps, one sample per panel or frameworks side by side.

matplotlib is an optional dependency (``pip install 'agnostic-saliency[plot]'``),
imported on the first call. Figures are built as ``matplotlib.figure.Figure`` with
an Agg canvas, never through ``pyplot``: nothing global changes (the user's
backend, the current figure, the figure manager), and they work on a headless
server.

Map kinds (``kind="auto"`` picks from the rank of one sample):

- ``"image"``: ``(N, H, W)``, or ``(N, H, W, C)`` with the channels reduced by
  ``reducer``; drawn as a heat map, over the image when ``images`` are given.
- ``"tabular"``: ``(N, F)``; a bar per feature, coloured by its value.
- ``"series"``: ``(N, T)`` or ``(N, T, F)`` (never picked by ``"auto"``); a heat
  strip per feature with the input drawn over it as a line.

Colour scaling: ``scale`` is the ``clip_percentile`` percentile of the absolute
values; signed maps are drawn on ``[-scale, scale]`` (zero in the middle of the
colour map), non-negative maps on ``[0, scale]``; larger values saturate.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._reduce import REDUCERS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

__all__ = ["figure_to_rgba", "plot_attributions", "plot_comparison", "save"]

Kind = Literal["auto", "image", "tabular", "series"]
_KINDS = ("auto", "image", "tabular", "series")
_PANEL_INCHES = {"image": (2.6, 2.6), "tabular": (4.0, 2.6), "series": (4.5, 2.2)}


def plot_attributions(
    maps: Any,
    images: Any = None,
    *,
    titles: Sequence[str] | None = None,
    cmap: str | Colormap = "jet",
    alpha: float = 0.5,
    clip_percentile: float = 99.5,
    cols: int | None = None,
    kind: Kind = "auto",
    channel_axis: int = -1,
    reducer: str = "max",
    feature_names: Sequence[str] | None = None,
    colorbar: bool = False,
    figsize: tuple[float, float] | None = None,
    return_rgba: bool = False,
) -> Figure | np.ndarray:
    """A grid of attribution maps, one panel per sample, each scaled on its own.

    Parameters
    ----------
    maps
        Maps of shape ``(N, ...)``; see the module docstring for the kinds.
    images
        The explained inputs, optional: images ``(N, H, W)`` (grayscale) or
        ``(N, H, W, C)`` with 1, 3 or 4 channels (other counts are shown as their
        mean); the series or feature values for the other kinds.
    titles
        One title per sample.
    cmap, alpha
        Colour map of the maps, and their opacity over an image or series.
    clip_percentile
        Percentile of the absolute values that gets the strongest colour.
    cols
        Panels per row; default ``min(N, 4)``.
    kind
        ``"auto"``, ``"image"``, ``"tabular"`` or ``"series"``.
    channel_axis
        Channel axis of rank-4 images and maps: ``-1`` (channels-last) or ``1``.
    reducer
        Reduction of the channels of ``(N, H, W, C)`` maps: ``"max"``, ``"mean"``,
        ``"min"`` or ``"sum"``.
    feature_names
        Names of the features (tabular) or of the series' channels.
    colorbar
        Add a colour bar to every panel.
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
    ValueError
        For shapes that do not fit ``kind``, or images and titles of another length.
    """
    _check_style(alpha, clip_percentile)
    panels = _prepare(maps, images, kind, channel_axis, reducer, feature_names)
    n = len(panels.maps)
    if titles is not None and len(titles) != n:
        raise ValueError(messages.plot_wrong_length("titles", len(titles), n))
    cols = max(1, min(n, 4) if cols is None else int(cols))
    rows = max(1, math.ceil(n / cols))
    width, height = _PANEL_INCHES[panels.kind]
    fig = _new_figure(figsize or (width * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    colormap = _colormap(cmap)
    for index, ax in enumerate(axes.flat):
        if index >= n:
            ax.set_axis_off()
            continue
        norm = _norm([panels.maps[index]], clip_percentile)
        artist = _draw(ax, panels, index, panels.maps[index], norm, colormap, alpha,
                       feature_names)
        if titles is not None:
            ax.set_title(str(titles[index]), fontsize="small")
        if colorbar:
            fig.colorbar(artist, ax=ax)
    return figure_to_rgba(fig) if return_rgba else fig


def plot_comparison(
    maps_by_name: Mapping[str, Any] | Any,
    images: Any = None,
    *,
    cmap: str | Colormap = "jet",
    alpha: float = 0.5,
    clip_percentile: float = 99.5,
    kind: Kind = "auto",
    channel_axis: int = -1,
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
    values get equal colours in every column.

    Parameters
    ----------
    maps_by_name
        Name -> maps, all of one shape, or a
        :class:`~agnostic_saliency.compare.ComparisonReport` (its ``maps``).
    images, cmap, alpha, clip_percentile, kind, channel_axis, reducer, feature_names
        As in :func:`plot_attributions`.
    colorbar
        Add one colour bar per row: the shared scale.
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
        For no maps, maps of different shapes, or shapes that do not fit ``kind``.
    """
    _check_style(alpha, clip_percentile)
    named = dict(getattr(maps_by_name, "maps", maps_by_name))
    if not named:
        raise ValueError(messages.plot_no_maps())
    prepared = {name: _prepare(maps, images, kind, channel_axis, reducer, feature_names)
                for name, maps in named.items()}
    shapes = {name: panels.maps.shape for name, panels in prepared.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(messages.plot_shapes_differ(shapes))
    first = next(iter(prepared.values()))
    images = first.images if first.kind == "image" else None
    show_image = images is not None
    n, cols = len(first.maps), len(named) + show_image
    width, height = _PANEL_INCHES[first.kind]
    fig = _new_figure(figsize or (width * cols + colorbar * 0.8, height * max(n, 1)))
    axes = fig.subplots(max(n, 1), cols, squeeze=False)
    colormap = _colormap(cmap)
    for row in range(n):
        norm = _norm([panels.maps[row] for panels in prepared.values()], clip_percentile)
        if images is not None:
            _show_image(axes[row, 0], images[row])
            axes[row, 0].set_title("input" if row == 0 else "", fontsize="small")
        for col, (name, panels) in enumerate(prepared.items(), start=int(show_image)):
            artist = _draw(axes[row, col], panels, row, panels.maps[row], norm, colormap,
                           alpha, feature_names)
            axes[row, col].set_title(str(name) if row == 0 else "", fontsize="small")
        axes[row, 0].set_ylabel(f"sample {row}", fontsize="small")
        if colorbar:
            fig.colorbar(artist, ax=list(axes[row]))
    return figure_to_rgba(fig) if return_rgba else fig


def figure_to_rgba(fig: Figure) -> np.ndarray:
    """Render ``fig`` with Agg and return its pixels, shape ``(H, W, 4)``, uint8.

    A figure with another canvas (e.g. from ``pyplot`` with a GUI backend) gets its
    canvas back afterwards.
    """
    agg = _matplotlib()[1]
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
    _matplotlib()
    path = Path(path)
    fig.savefig(path, dpi="figure" if dpi is None else dpi)
    return path


# --- preparation -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Panels:
    kind: str
    maps: np.ndarray
    images: np.ndarray | None


def _prepare(maps: Any, images: Any, kind: str, channel_axis: int, reducer: str,
             names: Sequence[str] | None) -> _Panels:
    if kind not in _KINDS:
        raise ValueError(messages.bad_choice("kind", kind, _KINDS))
    array = np.asarray(maps, dtype=np.float64)
    if array.ndim < 2:
        raise ValueError(messages.maps_wrong_rank(array.shape, kind))
    if kind == "auto" and array.ndim <= 4:
        kind = "tabular" if array.ndim == 2 else "image"
    inputs = None if images is None else np.asarray(images)
    if inputs is not None and len(inputs) != len(array):
        raise ValueError(messages.plot_wrong_length("images", len(inputs), len(array)))
    if kind == "image":
        return _Panels(kind, _image_maps(array, channel_axis, reducer),
                       None if inputs is None else _image_inputs(inputs, channel_axis))
    if (kind, array.ndim) not in {("tabular", 2), ("series", 2), ("series", 3)}:  # also "auto"
        raise ValueError(messages.maps_wrong_rank(array.shape, kind))
    if inputs is not None and inputs.shape != array.shape:
        raise ValueError(messages.inputs_wrong_shape(inputs.shape, array.shape))
    features = array.shape[-1] if kind == "tabular" or array.ndim == 3 else 1
    if names is not None and len(names) != features:
        raise ValueError(messages.plot_wrong_length("feature_names", len(names), features,
                                                    "features"))
    return _Panels(kind, array, None if inputs is None else inputs.astype(np.float64))


def _image_maps(maps: np.ndarray, channel_axis: int, reducer: str) -> np.ndarray:
    if maps.ndim == 4:
        if reducer not in REDUCERS:
            raise ValueError(messages.bad_choice("reducer", reducer, tuple(REDUCERS)))
        maps = REDUCERS[reducer](_channels_last(maps, channel_axis), axis=-1)
    if maps.ndim != 3:
        raise ValueError(messages.maps_wrong_rank(maps.shape, "image"))
    return maps


def _image_inputs(images: np.ndarray, channel_axis: int) -> np.ndarray:
    if images.ndim == 4:
        images = _channels_last(images, channel_axis)
        if images.shape[-1] == 1:
            images = images[..., 0]
        elif images.shape[-1] not in (3, 4):
            images = images.mean(axis=-1)
    if images.ndim not in (3, 4):
        raise ValueError(messages.images_wrong_rank(images.shape))
    return images


def _channels_last(array: np.ndarray, channel_axis: int) -> np.ndarray:
    if channel_axis % 4 not in (1, 3):
        raise ValueError(messages.bad_choice("channel_axis", channel_axis, (1, -1)))
    return np.moveaxis(array, 1, -1) if channel_axis % 4 == 1 else array


def _check_style(alpha: float, clip_percentile: float) -> None:
    if not 0 <= alpha <= 1:
        raise ValueError(messages.plot_out_of_range("alpha", alpha, "0 <= alpha <= 1, e.g. 0.5"))
    if not 0 < clip_percentile <= 100:
        raise ValueError(messages.plot_out_of_range("clip_percentile", clip_percentile,
                                       "0 < clip_percentile <= 100, e.g. 99.5"))


# --- drawing -----------------------------------------------------------------------------


def _matplotlib() -> tuple[type[Figure], Any, Any, type[Normalize]]:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(messages.matplotlib_missing()) from error
    return Figure, FigureCanvasAgg, matplotlib.colormaps, Normalize


def _new_figure(figsize: tuple[float, float]) -> Figure:
    figure, agg, _, _ = _matplotlib()
    fig = figure(figsize=figsize, layout="constrained")
    agg(fig)
    return fig


def _colormap(cmap: str | Colormap) -> Colormap:
    colormaps = _matplotlib()[2]
    return cmap if not isinstance(cmap, str) else colormaps[cmap]


def _norm(maps: Sequence[np.ndarray], clip_percentile: float) -> Normalize:
    """One colour scale for all of ``maps``: symmetric if any value is negative."""
    values = np.concatenate([np.ravel(m) for m in maps])
    magnitude = np.abs(values)
    scale = float(np.percentile(magnitude, clip_percentile)) if values.size else 0.0
    scale = scale or float(magnitude.max(initial=0.0)) or 1.0
    normalize = _matplotlib()[3]
    low = -scale if (values < 0).any() else 0.0
    return normalize(vmin=low, vmax=scale, clip=True)


def _draw(ax: Axes, panels: _Panels, index: int, values: np.ndarray, norm: Normalize,
          cmap: Colormap, alpha: float, names: Sequence[str] | None) -> Any:
    """Draw one sample's map on ``ax``; return an artist for a colour bar."""
    inputs = None if panels.images is None else panels.images[index]
    if panels.kind == "image":
        return _draw_image(ax, values, inputs, norm, cmap, alpha)
    if panels.kind == "tabular":
        return _draw_bars(ax, values, inputs, norm, cmap, names)
    return _draw_series(ax, values, inputs, norm, cmap, alpha, names)


def _draw_image(ax: Axes, values: np.ndarray, image: np.ndarray | None, norm: Normalize,
                cmap: Colormap, alpha: float) -> Any:
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None:
        return ax.imshow(values, cmap=cmap, norm=norm, interpolation="nearest")
    _show_image(ax, image)
    height, width = image.shape[:2]
    return ax.imshow(values, cmap=cmap, norm=norm, alpha=alpha, interpolation="nearest",
                     extent=(-0.5, width - 0.5, height - 0.5, -0.5))


def _show_image(ax: Axes, image: np.ndarray) -> None:
    ax.imshow(_unit_range(image), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _unit_range(image: np.ndarray) -> np.ndarray:
    """Integers as 0..255; floats in [0, 1] unchanged; other floats min-max scaled."""
    if not np.issubdtype(image.dtype, np.floating):
        return np.clip(image / 255.0, 0.0, 1.0)
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 1:
        return image
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def _draw_bars(ax: Axes, values: np.ndarray, inputs: np.ndarray | None, norm: Normalize,
               cmap: Colormap, names: Sequence[str] | None) -> Any:
    positions = np.arange(len(values))
    ax.bar(positions, values, color=cmap(norm(values)), edgecolor="black", linewidth=0.3)
    ax.axhline(0.0, color="black", linewidth=0.5)
    labels = [str(label) for label in (positions if names is None else names)]
    if inputs is not None:
        labels = [f"{label}\n{value:.3g}" for label, value in zip(labels, inputs, strict=True)]
    if len(values) <= 30:
        ax.set_xticks(positions, labels, fontsize="x-small")
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def _draw_series(ax: Axes, values: np.ndarray, inputs: np.ndarray | None, norm: Normalize,
                 cmap: Colormap, alpha: float, names: Sequence[str] | None) -> Any:
    strip = values[:, None] if values.ndim == 1 else values  # (T, F)
    length, features = strip.shape
    artist = ax.imshow(strip.T, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest",
                       alpha=1.0 if inputs is None else alpha,
                       extent=(-0.5, length - 0.5, features - 0.5, -0.5))
    if inputs is not None:
        lines = inputs[:, None] if inputs.ndim == 1 else inputs
        low, high = lines.min(axis=0), lines.max(axis=0)
        scaled = (lines - low) / np.where(high > low, high - low, 1.0)
        for feature in range(features):
            ax.plot(np.arange(length), feature + 0.4 - 0.8 * scaled[:, feature],
                    color="black", linewidth=1.0)
    if features > 1 or names is not None:
        labels = range(features) if names is None else names
        ax.set_yticks(np.arange(features), [str(label) for label in labels], fontsize="x-small")
    else:
        ax.set_yticks([])
    return artist
