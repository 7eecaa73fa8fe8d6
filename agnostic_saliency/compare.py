"""Compare attribution maps: across frameworks, methods or libraries, in NumPy.

:func:`compare` explains the same inputs with several explainers (or takes maps
computed elsewhere) and measures every pair with five per-sample metrics:

- :func:`max_abs_error` and :func:`relative_error`: do the numbers agree?
- :func:`spearman`: do the maps rank the positions in the same order?
- :func:`top_k_overlap`: do they agree on the most important positions?
- :func:`ssim`: do they look alike (structural similarity, Wang et al. 2004)?

The metrics live in :mod:`agnostic_saliency._metrics` and are re-exported here;
each takes two arrays of the same shape ``(N, ...)`` and returns one value per sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._metrics import (
    check_top_k,
    max_abs_error,
    relative_error,
    spearman,
    ssim,
    top_k_overlap,
)
from agnostic_saliency.backend import BackendBase, plugin_of

if TYPE_CHECKING:
    from agnostic_saliency.explainer import GradientExplainer

__all__ = [
    "ComparisonReport",
    "ComparisonRow",
    "compare",
    "max_abs_error",
    "relative_error",
    "spearman",
    "ssim",
    "top_k_overlap",
]

# --- comparison --------------------------------------------------------------------------


@dataclass(frozen=True)
class ComparisonRow:
    """The metrics of one pair of maps, summarised over the samples.

    The errors are the worst sample's (maximum); ``spearman``, ``top_k_overlap`` and
    ``ssim`` are means over the samples (NaN samples of ``spearman`` are skipped).
    ``relative_error`` takes ``name_a``'s maps as the reference.
    """

    name_a: str
    name_b: str
    max_abs_error: float
    relative_error: float
    spearman: float
    top_k_overlap: float
    ssim: float


@dataclass(eq=False)
class ComparisonReport:
    """The maps that were compared and one :class:`ComparisonRow` per pair of names.

    Attributes
    ----------
    maps
        Name -> maps, all of one shape; images channels-last.
    rows
        One row per pair, in the order of the names.
    top_k
        The fraction used by ``top_k_overlap``.
    per_sample
        ``(name_a, name_b)`` -> metric name -> values of shape ``(N,)``, to find
        which samples disagree.
    """

    maps: dict[str, np.ndarray]
    rows: list[ComparisonRow]
    top_k: float = 0.1
    per_sample: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of every compared maps array."""
        return next(iter(self.maps.values())).shape if self.maps else ()

    def __repr__(self) -> str:
        return (f"ComparisonReport(names={list(self.maps)}, shape={self.shape}, "
                f"rows={len(self.rows)})")

    def __str__(self) -> str:
        return self.table()

    def row(self, name_a: str, name_b: str) -> ComparisonRow:
        """The row of the pair ``(name_a, name_b)``, in either order."""
        for row in self.rows:
            if {row.name_a, row.name_b} == {name_a, name_b}:
                return row
        raise KeyError(messages.unknown_pair(name_a, name_b, list(self.maps)))

    def as_records(self) -> list[dict[str, Any]]:
        """One plain dict per row (e.g. for ``pandas.DataFrame``)."""
        return [asdict(row) for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """The names, map shape, ``top_k`` and rows as plain Python values (JSON-ready)."""
        return {"names": list(self.maps), "shape": list(self.shape), "top_k": self.top_k,
                "rows": self.as_records()}

    def table(self, digits: int = 4) -> str:
        """An aligned text table: one line per pair."""
        header = ["a", "b", "max abs err", "rel err", "spearman",
                  f"top-{self.top_k * 100:g}% overlap", "ssim"]
        lines = [[row.name_a, row.name_b, f"{row.max_abs_error:.{digits - 1}e}",
                  f"{row.relative_error:.{digits - 1}e}", f"{row.spearman:.{digits}f}",
                  f"{row.top_k_overlap:.{digits}f}", f"{row.ssim:.{digits}f}"]
                 for row in self.rows]
        return _format_table(header, lines)


def compare(explainers_or_maps: Mapping[str, GradientExplainer | Any], inputs: Any = None,
            targets: Any = None, *, top_k: float = 0.1, channel_axis: int = -1
            ) -> ComparisonReport:
    """Explain the same inputs with several explainers (or take maps) and compare them.

    Parameters
    ----------
    explainers_or_maps
        Name -> explainer (anything with ``explain``: the same model in several
        frameworks, or several methods on one model), or name -> precomputed maps;
        the two may be mixed. At least two entries.
    inputs
        The batch every explainer explains, channels-last for images (rank 4). An
        explainer whose channel axis is 1 (its ``channel_axis``, or its backend's when
        that is ``None``) receives ``np.moveaxis(inputs, -1, 1)``, and its maps, when
        it keeps the channels (``reducer=None``), are moved back to channels-last.
        Needed when any entry is an explainer.
    targets
        Passed to every explainer. ``None`` explains the class the first explainer
        predicts, and the others explain that same class.
    top_k
        Fraction of the positions used by :func:`top_k_overlap`, ``0 < top_k <= 1``.
    channel_axis
        The channel axis of image ``inputs``: ``-1`` (channels-last, the default) or
        ``1`` (channels-first, moved to channels-last first). Images that look
        channels-first (axis 1 of 1, 3 or 4 entries, a last axis of more than 4) are
        refused under the default, naming this argument.

    Returns
    -------
    ComparisonReport
        The maps, and one row per pair of names; ``print(report)`` shows a table.

    Raises
    ------
    ValueError
        For fewer than two entries, explainers without ``inputs``, maps of different
        shapes, non-finite maps, or an explainer with a channel axis other than
        channels-first or channels-last.

    Notes
    -----
    While explaining, every backend object with a ``full_precision()`` method (a
    context manager that turns off reduced-precision matmuls such as TF32) is
    inside it, so that framework differences are not hidden by rounding.
    """
    if len(explainers_or_maps) < 2:
        raise ValueError(messages.too_few_entries(list(explainers_or_maps)))
    check_top_k(top_k)
    explainers = {name: entry for name, entry in explainers_or_maps.items()
                  if callable(getattr(entry, "explain", None))}
    if explainers and inputs is None:
        raise ValueError(messages.inputs_required(list(explainers)))
    maps: dict[str, np.ndarray] = {}
    with ExitStack() as stack:
        _enter_full_precision(stack, explainers.values())
        x = _as_numpy(inputs, next(iter(explainers.values()))) if explainers else np.empty(0)
        x = _channels_last(x, channel_axis)
        for name, entry in explainers_or_maps.items():
            if name in explainers:
                result, indices = _explain(name, entry, x, targets)
                if targets is None and indices is not None:
                    targets = indices
                maps[name] = result
            else:
                maps[name] = np.asarray(entry)
    _check_shapes(maps)
    return _report(maps, top_k)


def _enter_full_precision(stack: ExitStack, explainers: Any) -> None:
    seen: set[int] = set()
    for explainer in explainers:
        backend = getattr(explainer, "backend", None)
        full_precision = getattr(backend, "full_precision", None)
        owner = id(plugin_of(backend)) if isinstance(backend, BackendBase) else id(backend)
        if callable(full_precision) and owner not in seen:
            seen.add(owner)
            stack.enter_context(full_precision())


def _as_numpy(inputs: Any, explainer: Any) -> np.ndarray:
    """A framework tensor is converted once, by the first explainer's backend."""
    to_numpy = getattr(getattr(explainer, "backend", None), "to_numpy", np.asarray)
    return inputs if isinstance(inputs, np.ndarray) else np.asarray(to_numpy(inputs))


def _explain(name: str, explainer: Any, x: np.ndarray, targets: Any
             ) -> tuple[np.ndarray, Any]:
    channels_first = x.ndim == 4 and _channels_first(name, explainer)
    given = np.ascontiguousarray(np.moveaxis(x, -1, 1)) if channels_first else x
    if callable(getattr(explainer, "explain_with_targets", None)):
        maps, indices = explainer.explain_with_targets(given, targets)
    else:
        maps, indices = explainer.explain(given, targets), None
    maps = np.asarray(maps)
    if channels_first and maps.ndim == 4:
        maps = np.moveaxis(maps, 1, -1)
    return maps, indices


def _channels_first(name: str, explainer: Any) -> bool:
    own = getattr(explainer, "channel_axis", None)
    backend = getattr(explainer, "backend", None)
    axis = int(getattr(backend, "channel_axis", -1) if own is None else own)
    if axis % 4 not in (1, 3):
        raise ValueError(messages.unsupported_channel_axis(name, axis))
    return axis % 4 == 1


def _channels_last(x: np.ndarray, channel_axis: int) -> np.ndarray:
    """Image inputs in the channels-last layout that :func:`compare` works in."""
    if x.ndim != 4:
        return x
    if channel_axis % 4 == 1:
        return np.ascontiguousarray(np.moveaxis(x, 1, -1))
    if channel_axis % 4 != 3:
        raise ValueError(messages.bad_channel_axis(channel_axis, x.shape))
    if x.shape[1] in (1, 3, 4) and x.shape[-1] > 4:
        raise ValueError(messages.compare_channels_first(x.shape))
    return x


def _check_shapes(maps: Mapping[str, np.ndarray]) -> None:
    shapes = {name: array.shape for name, array in maps.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(messages.maps_shape_mismatch(shapes))


def _report(maps: dict[str, np.ndarray], top_k: float) -> ComparisonReport:
    rows, per_sample = [], {}
    for name_a, name_b in itertools.combinations(maps, 2):
        a, b = maps[name_a], maps[name_b]
        values = {"max_abs_error": max_abs_error(b, a), "relative_error": relative_error(b, a),
                  "spearman": spearman(a, b), "top_k_overlap": top_k_overlap(a, b, top_k),
                  "ssim": ssim(a, b)}
        per_sample[(name_a, name_b)] = values
        rho = values["spearman"][~np.isnan(values["spearman"])]
        rows.append(ComparisonRow(
            name_a, name_b, float(values["max_abs_error"].max()),
            float(values["relative_error"].max()), float(rho.mean()) if rho.size else np.nan,
            float(values["top_k_overlap"].mean()), float(values["ssim"].mean())))
    return ComparisonReport(maps, rows, float(top_k), per_sample)


def _format_table(header: list[str], lines: list[list[str]]) -> str:
    """Names left-aligned, numbers right-aligned, two spaces between columns."""
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    rendered = [
        "  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                  for i, (cell, width) in enumerate(zip(cells, widths, strict=True))).rstrip()
        for cells in [header, [("-" * width) for width in widths], *lines]]
    return "\n".join(rendered)
