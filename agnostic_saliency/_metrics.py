"""Per-sample agreement metrics between two attribution maps, in NumPy.

Every metric takes two arrays of the same shape ``(N, ...)`` and returns one
value per sample, shape ``(N,)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency import messages

__all__ = ["check_top_k", "max_abs_error", "relative_error", "spearman", "ssim", "top_k_overlap"]

_SSIM_K1, _SSIM_K2, _SSIM_SIGMA, _SSIM_WINDOW = 0.01, 0.03, 1.5, 11


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
    spatial = min(a.ndim - 1, 2)
    n = len(a)
    a, b = _channels_to_batch(a, spatial), _channels_to_batch(b, spatial)
    a, b = _joint_unit_scale(a, b, n)
    value = _ssim_map(a, b, spatial).reshape(len(a), -1).mean(axis=1)
    return value.reshape(n, -1).mean(axis=1)


def _pair(maps: Any, other: Any, *, flatten: bool = True) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(maps, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(messages.maps_shape_mismatch({"maps": a.shape, "other": b.shape}))
    if a.ndim < 2 or a.size == 0:
        raise ValueError(messages.maps_without_batch_axis(a.shape))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(messages.maps_not_finite())
    return (a.reshape(len(a), -1), b.reshape(len(b), -1)) if flatten else (a, b)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..M along axis 1, ties averaged (``scipy.stats.rankdata(method="average")``)."""
    n, m = x.shape
    order = np.argsort(x, axis=1)
    ordered = np.take_along_axis(x, order, axis=1)
    starts = np.ones((n, m), dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(starts.ravel()) - 1  # tie groups, numbered across all rows
    positions = np.tile(np.arange(1, m + 1, dtype=np.float64), n)
    average = np.bincount(group, weights=positions) / np.bincount(group)
    ranks = np.empty((n, m))
    np.put_along_axis(ranks, order, average[group].reshape(n, m), axis=1)
    return ranks


def check_top_k(k: float) -> None:
    """Raise ``ValueError`` unless ``0 < k <= 1``."""
    _top_count(k, 1)


def _top_count(k: float, size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, float, np.number)) or not 0 < k <= 1:
        raise ValueError(messages.bad_top_k(k))
    return max(1, round(float(k) * size))


def _top_mask(x: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest of each row; among values equal to the last one, the first."""
    kth = np.partition(x, x.shape[1] - count, axis=1)[:, x.shape[1] - count, None]
    ties = x == kth
    need = count - (x > kth).sum(axis=1, keepdims=True)
    return (x > kth) | (ties & (np.cumsum(ties, axis=1) <= need))


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
    index: list[slice] = [slice(None)] * x.ndim
    for tap, weight in enumerate(window):
        index[axis] = slice(tap, tap + length)
        out += weight * x[tuple(index)]
    return out
