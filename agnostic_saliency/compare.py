"""Compare attribution maps: across frameworks, methods or libraries, in NumPy.

:func:`compare` explains the same inputs with several explainers (or takes maps
computed elsewhere) and measures every pair with five per-sample metrics:

- :func:`max_abs_error` and :func:`relative_error`: do the numbers agree?
- :func:`spearman`: do the maps rank the positions in the same order?
- :func:`top_k_overlap`: do they agree on the most important positions?
- :func:`ssim`: do they look alike (structural similarity, Wang et al. 2004)?

Every metric takes two arrays of the same shape ``(N, ...)`` and returns one
value per sample, shape ``(N,)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

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

_SSIM_K1, _SSIM_K2, _SSIM_SIGMA, _SSIM_WINDOW = 0.01, 0.03, 1.5, 11


# --- metrics -----------------------------------------------------------------------------


def max_abs_error(maps: Any, other: Any) -> np.ndarray:
    """Largest absolute difference per sample, shape ``(N,)``."""
    a, b = _pair(maps, other)
    return np.abs(a - b).max(axis=1)


def relative_error(maps: Any, reference: Any) -> np.ndarray:
    """``max |maps - reference| / max |reference|`` per sample, shape ``(N,)``.

    A sample whose reference is all zero gives 0 when ``maps`` is zero there too,
    and ``inf`` otherwise.
    """
    a, b = _pair(maps, reference)
    error, scale = np.abs(a - b).max(axis=1), np.abs(b).max(axis=1)
    out = np.where(error == 0, 0.0, np.inf)
    np.divide(error, scale, out=out, where=scale > 0)
    return out


def spearman(maps: Any, other: Any) -> np.ndarray:
    """Spearman rank correlation per sample (ties get their average rank), shape ``(N,)``.

    NaN for a sample where either map is constant (the correlation is undefined),
    as in :func:`scipy.stats.spearmanr`.
    """
    a, b = _pair(maps, other)
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    out = np.full(len(a), np.nan)
    np.divide((ra * rb).sum(axis=1), norm, out=out, where=norm > 0)
    return np.clip(out, -1.0, 1.0)


def top_k_overlap(maps: Any, other: Any, k: float = 0.1) -> np.ndarray:
    """Fraction of the ``k`` largest positions that both maps share, shape ``(N,)``.

    ``k`` is a fraction of the positions of one sample, ``0 < k <= 1``; it is
    rounded to a count of at least one. Positions are ranked by value, so for
    signed maps pass ``np.abs(maps)`` to rank by magnitude. Ties at the k-th value
    are broken by position.
    """
    a, b = _pair(maps, other)
    count = _top_count(k, a.shape[1])
    shared = _top_mask(a, count) & _top_mask(b, count)
    return shared.sum(axis=1) / count


def ssim(maps: Any, other: Any) -> np.ndarray:
    """Mean structural similarity per sample (Wang et al. 2004), shape ``(N,)``.

    Both maps of a sample are first scaled jointly to ``[0, 1]`` (with their common
    minimum and maximum), so the data range is 1, ``C1 = (0.01)^2`` and
    ``C2 = (0.03)^2``. Local statistics use a normalised Gaussian window of sigma
    1.5 and 11 taps, shortened to the largest odd size that fits a small map, over
    the "valid" positions only; the map's SSIM is their mean.

    The spatial axes are the first two axes of a sample (one for 1-D samples:
    tabular or time-series maps get a 1-D window); further axes, such as the
    channels of channels-last maps, are channels: SSIM is computed per channel and
    averaged. A sample where both maps are the same constant has SSIM 1.
    """
    a, b = _pair(maps, other, flatten=False)
    if a.ndim < 2:
        raise ValueError(_maps_without_batch_axis(a.shape))
    spatial = min(a.ndim - 1, 2)
    n = len(a)
    a, b = _channels_to_batch(a, spatial), _channels_to_batch(b, spatial)
    a, b = _joint_unit_scale(a, b, n)
    value = _ssim_map(a, b, spatial).reshape(len(a), -1).mean(axis=1)
    return value.reshape(n, -1).mean(axis=1)


def _pair(maps: Any, other: Any, *, flatten: bool = True) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(maps, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(_maps_shape_mismatch({"maps": a.shape, "other": b.shape}))
    if a.ndim < 2 or a.size == 0:
        raise ValueError(_maps_without_batch_axis(a.shape))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(_maps_not_finite())
    return (a.reshape(len(a), -1), b.reshape(len(b), -1)) if flatten else (a, b)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..M along axis 1, ties averaged (``scipy.stats.rankdata(method="average")``)."""
    n, m = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    ordered = np.take_along_axis(x, order, axis=1)
    starts = np.ones((n, m), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(starts.ravel()) - 1  # tie groups, numbered across all rows
    positions = np.tile(np.arange(1, m + 1, dtype=np.float64), n)
    average = np.bincount(group, weights=positions) / np.bincount(group)
    ranks = np.empty((n, m))
    np.put_along_axis(ranks, order, average[group].reshape(n, m), axis=1)
    return ranks


def _top_count(k: float, size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, float, np.number)) or not 0 < k <= 1:
        raise ValueError(_bad_top_k(k))
    return max(1, round(float(k) * size))


def _top_mask(x: np.ndarray, count: int) -> np.ndarray:
    # A stable sort of -x keeps the lowest position first among equal values.
    top = np.argsort(-x, axis=1, kind="stable")[:, :count]
    mask = np.zeros(x.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask


def _channels_to_batch(x: np.ndarray, spatial: int) -> np.ndarray:
    """``(N, *spatial, *channels)`` -> ``(N * C, *spatial)``."""
    shape = x.shape[1:1 + spatial]
    moved = x.reshape(*x.shape[:1 + spatial], -1)
    return np.moveaxis(moved, -1, 1).reshape(-1, *shape)


def _joint_unit_scale(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale each sample's pair (all its channels) jointly to [0, 1]; constant -> 0."""
    pa, pb = a.reshape(n, -1), b.reshape(n, -1)
    low = np.minimum(pa.min(axis=1), pb.min(axis=1))[:, None]
    span = np.maximum(pa.max(axis=1), pb.max(axis=1))[:, None] - low
    span[span == 0] = 1.0
    return ((pa - low) / span).reshape(a.shape), ((pb - low) / span).reshape(b.shape)


def _ssim_map(a: np.ndarray, b: np.ndarray, spatial: int) -> np.ndarray:
    window = _gaussian_window(min(a.shape[1:]))
    axes = range(1, 1 + spatial)

    def smooth(x: np.ndarray) -> np.ndarray:
        for axis in axes:
            x = _filter_valid(x, window, axis)
        return x

    mu_a, mu_b = smooth(a), smooth(b)
    var_a = smooth(a * a) - mu_a * mu_a
    var_b = smooth(b * b) - mu_b * mu_b
    cov = smooth(a * b) - mu_a * mu_b
    c1, c2 = _SSIM_K1 ** 2, _SSIM_K2 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
            / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)))


def _gaussian_window(size: int) -> np.ndarray:
    taps = min(_SSIM_WINDOW, size)
    taps -= 1 - taps % 2  # largest odd size that fits
    offsets = np.arange(taps) - taps // 2
    window = np.exp(-(offsets ** 2) / (2 * _SSIM_SIGMA ** 2))
    return window / window.sum()


def _filter_valid(x: np.ndarray, window: np.ndarray, axis: int) -> np.ndarray:
    """Correlate ``x`` with ``window`` along ``axis``, keeping only full overlaps."""
    length = x.shape[axis] - len(window) + 1
    out = np.zeros((*x.shape[:axis], length, *x.shape[axis + 1:]))
    for tap, weight in enumerate(window):
        out += weight * np.take(x, np.arange(tap, tap + length), axis=axis)
    return out


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

    def __repr__(self) -> str:
        shape = next(iter(self.maps.values())).shape if self.maps else ()
        return f"ComparisonReport(names={list(self.maps)}, shape={shape}, rows={len(self.rows)})"

    def __str__(self) -> str:
        return self.table()

    def row(self, name_a: str, name_b: str) -> ComparisonRow:
        """The row of the pair ``(name_a, name_b)``, in either order."""
        for row in self.rows:
            if {row.name_a, row.name_b} == {name_a, name_b}:
                return row
        raise KeyError(_unknown_pair(name_a, name_b, list(self.maps)))

    def as_records(self) -> list[dict[str, Any]]:
        """One plain dict per row (e.g. for ``pandas.DataFrame``)."""
        return [asdict(row) for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """The names, map shape, ``top_k`` and rows as plain Python values (JSON-ready)."""
        shape = next(iter(self.maps.values())).shape if self.maps else ()
        return {"names": list(self.maps), "shape": list(shape), "top_k": self.top_k,
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
            targets: Any = None, *, top_k: float = 0.1) -> ComparisonReport:
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
        raise ValueError(_too_few_entries(list(explainers_or_maps)))
    _top_count(top_k, 1)
    explainers = {name: e for name, e in explainers_or_maps.items() if _is_explainer(e)}
    if explainers and inputs is None:
        raise ValueError(_inputs_required(list(explainers)))
    maps: dict[str, np.ndarray] = {}
    with ExitStack() as stack:
        _enter_full_precision(stack, explainers.values())
        x = _as_numpy(inputs, explainers.values()) if explainers else None
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


def _is_explainer(entry: Any) -> bool:
    return callable(getattr(entry, "explain", None))


def _enter_full_precision(stack: ExitStack, explainers: Any) -> None:
    seen: set[int] = set()
    for explainer in explainers:
        backend = getattr(explainer, "backend", None)
        full_precision = getattr(backend, "full_precision", None)
        if callable(full_precision) and id(backend) not in seen:
            seen.add(id(backend))
            stack.enter_context(full_precision())


def _as_numpy(inputs: Any, explainers: Any) -> np.ndarray:
    if isinstance(inputs, np.ndarray):
        return inputs
    for explainer in explainers:
        to_numpy = getattr(getattr(explainer, "backend", None), "to_numpy", None)
        if to_numpy is not None:
            try:
                return np.asarray(to_numpy(inputs))
            except Exception:  # another framework's tensor: try the next backend
                continue
    return np.asarray(inputs)


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
    axis = getattr(explainer, "channel_axis", None)
    if axis is None:
        axis = getattr(getattr(explainer, "backend", None), "channel_axis", -1)
    if axis % 4 not in (1, 3):
        raise ValueError(_unsupported_channel_axis(name, axis))
    return axis % 4 == 1


def _check_shapes(maps: Mapping[str, np.ndarray]) -> None:
    shapes = {name: array.shape for name, array in maps.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(_maps_shape_mismatch(shapes))


def _report(maps: dict[str, np.ndarray], top_k: float) -> ComparisonReport:
    rows, per_sample = [], {}
    for name_a, name_b in itertools.combinations(maps, 2):
        a, b = maps[name_a], maps[name_b]
        values = {"max_abs_error": max_abs_error(b, a), "relative_error": relative_error(b, a),
                  "spearman": spearman(a, b), "top_k_overlap": top_k_overlap(a, b, top_k),
                  "ssim": ssim(a, b)}
        per_sample[(name_a, name_b)] = values
        rho = values["spearman"]
        rows.append(ComparisonRow(
            name_a, name_b,
            max_abs_error=float(values["max_abs_error"].max()),
            relative_error=float(values["relative_error"].max()),
            spearman=float(np.nanmean(rho)) if not np.isnan(rho).all() else float("nan"),
            top_k_overlap=float(values["top_k_overlap"].mean()),
            ssim=float(values["ssim"].mean())))
    return ComparisonReport(maps, rows, float(top_k), per_sample)


def _format_table(header: list[str], lines: list[list[str]]) -> str:
    """Names left-aligned, numbers right-aligned, two spaces between columns."""
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    rendered = [
        "  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                  for i, (cell, width) in enumerate(zip(cells, widths, strict=True))).rstrip()
        for cells in [header, [("-" * width) for width in widths], *lines]]
    return "\n".join(rendered)


# --- messages (to move to agnostic_saliency/messages.py) ---------------------------------


def _maps_shape_mismatch(shapes: Mapping[str, tuple[int, ...]]) -> str:
    listing = ", ".join(f"{name}: {shape}" for name, shape in shapes.items())
    return (
        f"cannot compare maps of different shapes ({listing}); explain the same inputs with "
        "the same reducer (or reducer=None everywhere), with images given channels-last."
    )


def _maps_without_batch_axis(shape: tuple[int, ...]) -> str:
    return (
        f"maps of shape {shape} have no batch axis or no samples; pass maps of shape "
        "(N, ...) with N >= 1, e.g. maps[None] for a single map."
    )


def _maps_not_finite() -> str:
    return "maps contain NaN or Inf; compare finite maps (check the explained model first)."


def _bad_top_k(k: object) -> str:
    return (
        f"top_k={k!r}; expected a fraction of the positions, 0 < top_k <= 1 "
        "(e.g. 0.1 for the largest 10%)."
    )


def _too_few_entries(names: list[str]) -> str:
    return (
        f"compare needs at least two explainers or maps, got {names}; pass a dict such as "
        "{'torch': explainer_a, 'jax': explainer_b}."
    )


def _inputs_required(names: list[str]) -> str:
    return (
        f"explainers {names} need inputs to explain; pass inputs= (channels-last for images), "
        "or pass precomputed maps instead of explainers."
    )


def _unsupported_channel_axis(name: str, axis: int) -> str:
    return (
        f"explainer {name!r} has channel_axis={axis}; compare passes images channels-last "
        "or channels-first only. Give it channel_axis=1 or -1."
    )


def _unknown_pair(name_a: str, name_b: str, names: list[str]) -> str:
    return f"no row for the pair ({name_a!r}, {name_b!r}); the compared names are {names}."
