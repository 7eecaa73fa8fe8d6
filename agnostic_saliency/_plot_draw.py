"""Drawing with matplotlib, imported on first use: colour scales and one panel per call.

Figures are ``matplotlib.figure.Figure`` objects with an Agg canvas, never made
through ``pyplot``, so nothing global changes.

Colours: maps with a negative value are signed and drawn with a diverging colour
map centred at 0 (``RdBu_r``: red positive, blue negative, white 0); other maps
are magnitudes, drawn with a perceptually uniform one (``inferno``). Over an
image, a map's opacity grows with its magnitude (``opacity="saliency"``), so the
image, drawn in grayscale under a map, stays readable where the map is low.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._plot_prepare import Panels

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

__all__ = ["OPACITIES", "Scale", "add_colorbar", "check_style", "draw", "make_scale",
           "matplotlib_parts", "new_figure", "show_image"]

#: Colour maps picked when ``cmap`` is None: signed maps, then magnitude maps.
SIGNED_CMAP, MAGNITUDE_CMAP = "RdBu_r", "inferno"
OPACITIES = ("saliency", "constant")


@dataclass(frozen=True)
class Scale:
    """The colours of a group of panels: one norm, one colour map."""

    norm: Normalize
    cmap: Colormap
    signed: bool
    #: The magnitude that gets the strongest colour.
    limit: float


def matplotlib_parts() -> tuple[type[Figure], Any, Any, type[Normalize]]:
    """``Figure``, the Agg canvas, the colour map registry and ``Normalize``."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(messages.matplotlib_missing()) from error
    return Figure, FigureCanvasAgg, matplotlib.colormaps, Normalize


def new_figure(figsize: tuple[float, float]) -> Figure:
    figure, agg, _, _ = matplotlib_parts()
    fig = figure(figsize=figsize, layout="constrained")
    agg(fig)
    return fig


def check_style(alpha: float, clip_percentile: float, opacity: str) -> None:
    if not 0 <= alpha <= 1:
        raise ValueError(messages.plot_out_of_range("alpha", alpha, "0 <= alpha <= 1, e.g. 0.5"))
    if not 0 < clip_percentile <= 100:
        raise ValueError(messages.plot_out_of_range("clip_percentile", clip_percentile,
                                                    "0 < clip_percentile <= 100, e.g. 99.5"))
    if opacity not in OPACITIES:
        raise ValueError(messages.bad_choice("opacity", opacity, OPACITIES))


def make_scale(maps: Sequence[np.ndarray], clip_percentile: float,
               cmap: str | Colormap | None) -> Scale:
    """One colour scale for all of ``maps``: centred at 0 if any value is negative.

    The strongest colour goes to the ``clip_percentile`` percentile of the absolute
    values; larger values saturate.
    """
    values = np.concatenate([np.ravel(m) for m in maps])
    magnitude = np.abs(values)
    limit = float(np.percentile(magnitude, clip_percentile)) if values.size else 0.0
    limit = limit or float(magnitude.max(initial=0.0)) or 1.0
    _, _, colormaps, normalize = matplotlib_parts()
    signed = bool((values < 0).any())
    if cmap is None:
        cmap = SIGNED_CMAP if signed else MAGNITUDE_CMAP
    colormap = colormaps[cmap] if isinstance(cmap, str) else cmap
    return Scale(normalize(vmin=-limit if signed else 0.0, vmax=limit, clip=True), colormap,
                 signed, limit)


def add_colorbar(fig: Figure, scale: Scale, axes: Any) -> None:
    """A colour bar of ``scale`` beside ``axes`` (one axes or several)."""
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(norm=scale.norm, cmap=scale.cmap), ax=axes,
                       shrink=0.9)
    bar.ax.tick_params(labelsize="x-small")


def draw(ax: Axes, panels: Panels, index: int, scale: Scale, alpha: float, opacity: str,
         names: Sequence[str] | None) -> None:
    """Draw sample ``index`` of ``panels`` on ``ax``."""
    values = panels.maps[index]
    inputs = None if panels.images is None else panels.images[index]
    if panels.kind == "image":
        _draw_image(ax, values, inputs, scale, alpha, opacity)
    elif panels.kind == "tabular":
        _draw_bars(ax, values, inputs, scale, names)
    else:
        _draw_series(ax, values, inputs, scale, alpha, names)


def _draw_image(ax: Axes, values: np.ndarray, image: np.ndarray | None, scale: Scale,
                alpha: float, opacity: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if image is None:
        ax.imshow(values, cmap=scale.cmap, norm=scale.norm, interpolation="nearest")
        return
    show_image(ax, _grayscale(image))  # the map's colours are never the image's
    height, width = image.shape[:2]
    weight: float | np.ndarray = alpha
    if opacity == "saliency":
        weight = alpha * np.clip(np.abs(values) / scale.limit, 0.0, 1.0)
    ax.imshow(values, cmap=scale.cmap, norm=scale.norm, alpha=weight, interpolation="nearest",
              extent=(-0.5, width - 0.5, height - 0.5, -0.5))


def show_image(ax: Axes, image: np.ndarray) -> None:
    ax.imshow(_unit_range(image), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _grayscale(image: np.ndarray) -> np.ndarray:
    """The luminance (ITU-R BT.601) of an RGB(A) image in [0, 1]; gray images as they are."""
    if image.ndim == 2:
        return image
    return _unit_range(image)[..., :3] @ np.array([0.299, 0.587, 0.114])


def _unit_range(image: np.ndarray) -> np.ndarray:
    """Integers as 0..255; floats in [0, 1] unchanged; other floats min-max scaled."""
    if not np.issubdtype(image.dtype, np.floating):
        return np.clip(image / 255.0, 0.0, 1.0)
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 1:
        return image
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def _draw_bars(ax: Axes, values: np.ndarray, inputs: np.ndarray | None, scale: Scale,
               names: Sequence[str] | None) -> None:
    positions = np.arange(len(values))
    ax.bar(positions, values, color=scale.cmap(scale.norm(values)), edgecolor="black",
           linewidth=0.3)
    ax.axhline(0.0, color="black", linewidth=0.5)
    labels = [str(label) for label in (positions if names is None else names)]
    if inputs is not None:
        labels = [f"{label}\n{value:.3g}" for label, value in zip(labels, inputs, strict=True)]
    if len(values) <= 30:
        ax.set_xticks(positions, labels, fontsize="x-small")


def _draw_series(ax: Axes, values: np.ndarray, inputs: np.ndarray | None, scale: Scale,
                 alpha: float, names: Sequence[str] | None) -> None:
    strip = values[:, None] if values.ndim == 1 else values  # (T, F)
    length, features = strip.shape
    ax.imshow(strip.T, cmap=scale.cmap, norm=scale.norm, aspect="auto", interpolation="nearest",
              alpha=1.0 if inputs is None else alpha,
              extent=(-0.5, length - 0.5, features - 0.5, -0.5))
    if inputs is not None:
        lines = inputs[:, None] if inputs.ndim == 1 else inputs
        low, high = lines.min(axis=0), lines.max(axis=0)
        scaled = (lines - low) / np.where(high > low, high - low, 1.0)
        from matplotlib.patheffects import withStroke

        halo = [withStroke(linewidth=2.5, foreground="white")]  # readable on dark colours
        for feature in range(features):
            ax.plot(np.arange(length), feature + 0.4 - 0.8 * scaled[:, feature],
                    color="black", linewidth=1.0, path_effects=halo)
    if features > 1 or names is not None:
        labels = range(features) if names is None else names
        ax.set_yticks(np.arange(features), [str(label) for label in labels], fontsize="x-small")
    else:
        ax.set_yticks([])
