"""Token saliency: each token of a text coloured by its score, as HTML or a PNG figure.

Colours are computed here, in NumPy, so HTML needs no matplotlib: a signed score
is red (positive) or blue (negative), a non-negative one orange; the colour's
opacity is the score's magnitude over the ``clip_percentile`` percentile of the
magnitudes (larger ones saturate). Both outputs use the same colours.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._plot_draw import new_figure
from agnostic_saliency._plot_prepare import as_plot_array

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_tokens", "token_colours"]

Format = Literal["html", "png"]
_POSITIVE, _NEGATIVE, _MAGNITUDE = (178, 24, 43), (33, 102, 172), (230, 97, 1)
_SUFFIXES = {".html": "html", ".htm": "html", ".png": "png"}
#: Layout of the PNG: monospace characters of 12 points.
_FONT_POINTS, _CHAR_INCHES, _LINE_INCHES = 12, 0.1, 0.32


def plot_tokens(tokens: Sequence[str], scores: Any, path: str | os.PathLike[str] | None = None,
                *, format: Format | None = None, clip_percentile: float = 100.0,
                title: str | None = None, separator: str = " ", width: float = 8.0,
                return_rgba: bool = False) -> str | Figure | np.ndarray:
    """Colour each token by its saliency, as HTML or a PNG figure.

    Parameters
    ----------
    tokens
        The tokens of one text, as strings.
    scores
        One score per token, ``(T,)`` or ``(1, T)``: NumPy or any framework's tensor
        (e.g. a token's saliency summed over its embedding).
    path
        Where to write: a standalone HTML page (``.html``, ``.htm``) or a PNG
        (``.png``); ``None`` writes nothing.
    format
        ``"html"`` or ``"png"``; default from the suffix of ``path``, else ``"html"``.
    clip_percentile
        Percentile of the magnitudes that gets the strongest colour.
    title
        A line above the tokens.
    separator
        Between tokens in HTML (``""`` for sub-word tokens that carry their spaces).
    width
        Width of the PNG in inches; tokens wrap onto new lines.
    return_rgba
        With ``format="png"``: return the pixels ``(H, W, 4)`` instead of the figure.

    Returns
    -------
    str or matplotlib.figure.Figure or numpy.ndarray
        HTML: the ``<div>`` of coloured tokens (tokens and title escaped); the file at
        ``path`` is a whole page holding it. PNG: the figure, or its pixels.

    Raises
    ------
    ValueError
        For scores that are not one per token, or a format that cannot be told.
    ImportError
        For PNG without matplotlib.
    """
    words = [str(token) for token in tokens]
    values = as_plot_array(scores, "scores").astype(np.float64)
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.shape != (len(words),):
        raise ValueError(messages.tokens_scores_mismatch(len(words), values.shape))
    if not 0 < clip_percentile <= 100:
        raise ValueError(messages.plot_out_of_range("clip_percentile", clip_percentile,
                                                    "0 < clip_percentile <= 100, e.g. 99.5"))
    chosen = _format(format, path)
    colours = token_colours(values, clip_percentile)
    if chosen == "html":
        fragment = _html(words, values, colours, title, separator)
        if path is not None:
            Path(path).write_text(_page(fragment, title), encoding="utf-8")
        return fragment
    fig = _figure(words, colours, title, width)
    if path is not None:
        fig.savefig(Path(path), format="png")
    if return_rgba:
        from agnostic_saliency.plots import figure_to_rgba

        return figure_to_rgba(fig)
    return fig


def token_colours(scores: np.ndarray, clip_percentile: float = 100.0) -> np.ndarray:
    """RGBA in [0, 1] per score: red/blue for signed scores, orange for magnitudes,
    opacity growing with the magnitude."""
    magnitude = np.abs(scores)
    limit = float(np.percentile(magnitude, clip_percentile)) if scores.size else 0.0
    limit = limit or float(magnitude.max(initial=0.0)) or 1.0
    signed = bool((scores < 0).any())
    rgb = np.empty((len(scores), 3))
    rgb[:] = _POSITIVE if signed else _MAGNITUDE
    rgb[scores < 0] = _NEGATIVE
    alpha = np.clip(magnitude / limit, 0.0, 1.0)
    return np.column_stack([rgb / 255.0, alpha])


def _format(format: str | None, path: str | os.PathLike[str] | None) -> str:
    if format is not None:
        if format not in ("html", "png"):
            raise ValueError(messages.bad_choice("format", format, ("html", "png")))
        return format
    if path is None:
        return "html"
    chosen = _SUFFIXES.get(Path(path).suffix.lower())
    if chosen is None:
        raise ValueError(messages.tokens_format(os.fspath(path)))
    return chosen


def _html(words: list[str], values: np.ndarray, colours: np.ndarray, title: str | None,
          separator: str) -> str:
    spans = []
    for word, value, (red, green, blue, alpha) in zip(words, values, colours, strict=True):
        style = (f"background-color: rgba({round(red * 255)}, {round(green * 255)}, "
                 f"{round(blue * 255)}, {alpha:.3f}); padding: 0 2px; border-radius: 3px")
        spans.append(f'<span style="{style}" title="{value:.4g}">'
                     f"{html.escape(word)}</span>")
    heading = "" if title is None else f"<p>{html.escape(title)}</p>"
    return (f'<div class="agnostic-saliency-tokens" style="line-height: 1.9">{heading}'
            f"{html.escape(separator).join(spans)}</div>")


def _page(fragment: str, title: str | None) -> str:
    name = html.escape(title or "token saliency")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{name}</title>'
            f"</head><body>\n{fragment}\n</body></html>\n")


def _figure(words: list[str], colours: np.ndarray, title: str | None, width: float) -> Figure:
    """Tokens in lines of at most ``width`` inches, each on its colour."""
    lines: list[list[int]] = [[]]
    used = 0.0
    for index, word in enumerate(words):
        size = (len(word) + 1) * _CHAR_INCHES
        if lines[-1] and used + size > width - 0.4:
            lines.append([])
            used = 0.0
        lines[-1].append(index)
        used += size
    top = 0.45 if title else 0.15
    height = top + _LINE_INCHES * len(lines) + 0.15
    fig = new_figure((width, height))
    fig.set_layout_engine("none")
    if title:
        fig.text(0.2 / width, 1 - 0.3 / height, title, fontsize="medium", va="baseline")
    for row, indices in enumerate(lines):
        x = 0.2
        y = 1 - (top + _LINE_INCHES * (row + 0.7)) / height
        for index in indices:
            ink = "white" if colours[index, 3] > 0.6 else "black"  # contrast on strong colours
            fig.text(x / width, y, words[index], family="monospace", fontsize=_FONT_POINTS,
                     va="baseline", color=ink, bbox={"facecolor": tuple(colours[index]),
                                          "edgecolor": "none", "pad": 1.5})
            x += (len(words[index]) + 1) * _CHAR_INCHES
    return fig
