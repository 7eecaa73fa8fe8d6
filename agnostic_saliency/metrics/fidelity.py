"""MuFidelity (Bhatt et al. 2020), Quantus's FaithfulnessCorrelation: the correlation,
over random subsets of features set to a baseline, between the drop of the target
score and the sum of the map over the subset.

A map is faithful when the features it weighs most are those whose removal costs the
score most: the correlation is then near 1. Exact gradient x input maps of a linear
model reach 1 with Pearson's correlation (the drop *is* the subset's sum).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from agnostic_saliency._metrics import spearman
from agnostic_saliency.metrics._base import Metric, Prepared, baseline_values, check_choice

__all__ = ["MuFidelity"]

#: Settings of each preset (see :class:`MuFidelity`).
FIDELITY_PRESETS: dict[str, dict[str, Any]] = {
    "xplique": {"grid_size": 9, "subset_fraction": 0.2, "subset_size": None, "unit": "pixel",
                "nb_samples": 200, "baseline": 0.0, "correlation": "spearman",
                "activation": None, "rng": "numpy", "seed": 0},
    "quantus": {"grid_size": None, "subset_fraction": None, "subset_size": 224,
                "unit": "element", "nb_samples": 100, "baseline": "min",
                "correlation": "pearson", "activation": None, "rng": "legacy", "seed": 0},
    "rise": {"grid_size": 7, "subset_fraction": 0.5, "subset_size": None, "unit": "pixel",
             "nb_samples": 200, "baseline": 0.0, "correlation": "spearman",
             "activation": "softmax", "rng": "numpy", "seed": 0},
}


class MuFidelity(Metric):
    """MuFidelity: mean over samples of ``corr(score(x) - score(x with S at baseline),
    sum of the map over S)`` across ``nb_samples`` random subsets ``S``.

    Settings (each preset sets them all; see ``docs/evaluate.md``):

    grid_size
        Images: subsets are drawn on a ``grid_size`` x ``grid_size`` grid of cells,
        resized to the image by nearest neighbour (Xplique: 9); ``None`` draws single
        pixels. Ignored with ``unit="element"`` and for non-image inputs.
    subset_fraction / subset_size
        Each cell is in ``S`` with probability ``subset_fraction`` (Xplique: 0.2, one
        mask shared by the samples of a draw); or ``S`` is exactly ``subset_size``
        features drawn without replacement for each sample (Quantus: 224). Exactly one
        is not None.
    unit
        ``"pixel"`` (all channels of a pixel together) or ``"element"`` (every input
        value a feature, ``(N, H, W)`` maps broadcast over the channels: Quantus).
    nb_samples
        Number of random subsets per sample (Xplique 200, Quantus ``nr_runs`` 100).
    baseline
        A number, ``"min"`` (Quantus's "black"), or ``"mean"``.
    correlation
        ``"spearman"`` (Xplique) or ``"pearson"`` (Quantus). A sample whose drops or
        sums are constant gets 0.
    activation
        ``None``, ``"softmax"`` or ``"sigmoid"`` before scoring.
    rng, seed
        ``"numpy"``: ``numpy.random.default_rng(seed)``; ``"legacy"``:
        ``numpy.random.RandomState(seed).choice`` per draw and sample, in Quantus's
        order, with the uniform numbers Quantus draws between runs for a named baseline
        (so ``np.random.seed(seed)`` before Quantus gives its subsets, when Quantus sees
        the whole batch at once).
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = FIDELITY_PRESETS

    def check_settings(self) -> None:
        s, name = self.settings, "MuFidelity"
        if (s["subset_fraction"] is None) == (s["subset_size"] is None):
            raise ValueError(f"{name}: give exactly one of subset_fraction="
                             f"{s['subset_fraction']!r} and subset_size={s['subset_size']!r}")
        if s["subset_fraction"] is not None and not 0 < s["subset_fraction"] < 1:
            raise ValueError(f"{name}: subset_fraction={s['subset_fraction']!r}; "
                             "expected 0 < x < 1")
        if not isinstance(s["nb_samples"], (int, np.integer)) or s["nb_samples"] < 2:
            raise ValueError(f"{name}: nb_samples={s['nb_samples']!r}; expected an int >= 2")
        check_choice(name, "unit", s["unit"], ("pixel", "element"))
        check_choice(name, "correlation", s["correlation"], ("spearman", "pearson"))
        check_choice(name, "activation", s["activation"], (None, "softmax", "sigmoid"))
        check_choice(name, "rng", s["rng"], ("numpy", "legacy"))

    def evaluate_per_sample(self, inputs: Any, targets: Any, maps: Any) -> np.ndarray:
        """The correlation of each sample, shape ``(N,)``."""
        p = self.prepare(inputs, targets, maps)
        importance, values = self._features(p)
        n, count = importance.shape
        base = self.scores(p.x, p.targets)
        fill = self._features_of(baseline_values(p.x, self.settings["baseline"]), p)
        columns: list[np.ndarray] = []

        def perturbed() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for kept in self._draws(n, count, p):  # kept: (N, P), True = not in S
                columns.append(np.where(kept, 0.0, importance).sum(axis=1))
                yield from self._perturbed(p, values, fill, kept)

        # every draw's inputs in one stream, so that calls hold batch_size rows across draws
        drops = base[:, None] - self.scores_of(perturbed()).reshape(-1, n).T
        sums = np.stack(columns, axis=1)
        return _correlation(drops, sums, self.settings["correlation"])

    # --- features and subsets -------------------------------------------------------

    def _pixel(self, p: Prepared) -> bool:
        return p.image and self.settings["unit"] == "pixel"

    def _features(self, p: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """The maps as ``(N, P)`` and the inputs as ``(N, P, E)`` (P features of E values)."""
        maps = p.maps
        if self._pixel(p):
            importance = maps.sum(axis=1) if maps.ndim == 4 else maps
        elif p.image:
            importance = np.broadcast_to(maps[:, None] if maps.ndim == 3 else maps, p.x.shape)
        else:
            importance = maps
        return importance.reshape(len(maps), -1), self._features_of(p.x, p)

    def _features_of(self, x: np.ndarray, p: Prepared) -> np.ndarray:
        if self._pixel(p):
            n, c = x.shape[:2]
            return x.transpose(0, 2, 3, 1).reshape(n, -1, c)
        return x.reshape(len(x), -1, 1)

    def _from_features(self, f: np.ndarray, p: Prepared) -> np.ndarray:
        if self._pixel(p):
            _, c, h, w = p.x.shape
            return f.reshape(len(f), h, w, c).transpose(0, 3, 1, 2)
        return f.reshape(len(f), *p.x.shape[1:])

    def _draws(self, n: int, count: int, p: Prepared) -> Iterator[np.ndarray]:
        """One ``(N, P)`` mask per draw, True where a feature keeps its value."""
        s = self.settings
        draws = int(s["nb_samples"])
        if s["subset_size"] is not None:
            size = int(s["subset_size"])
            if size > count:
                raise ValueError(f"MuFidelity: subset_size={size} but the inputs have only "
                                 f"{count} features; give a smaller subset_size")
            yield from _exact_subsets(draws, n, count, size, s["rng"], s["seed"],
                                      isinstance(s["baseline"], str))
            return
        rng = np.random.default_rng(s["seed"])
        grid = s["grid_size"]
        if self._pixel(p) and grid is not None:
            h, w = p.x.shape[2:]
            cells = rng.uniform(size=(draws, grid * grid)) > s["subset_fraction"]
            rows, cols = _nearest(grid, h), _nearest(grid, w)
            kept = cells.reshape(draws, grid, grid)[:, rows][:, :, cols].reshape(draws, -1)
        else:
            kept = rng.uniform(size=(draws, count)) > s["subset_fraction"]
        for mask in kept:  # one mask shared by the samples of a draw, as Xplique
            yield np.broadcast_to(mask, (n, count))

    def _perturbed(self, p: Prepared, values: np.ndarray, fill: np.ndarray, kept: np.ndarray
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One draw's perturbed inputs, a bounded chunk of samples at a time."""
        for start in range(0, len(values), self.batch_size):
            rows = slice(start, start + self.batch_size)
            batch = np.where(kept[rows][..., None], values[rows], fill[rows])
            yield self._from_features(batch.astype(values.dtype), p), p.targets[rows]


def _exact_subsets(draws: int, n: int, count: int, size: int, rng_kind: str, seed: int,
                   named_baseline: bool) -> Iterator[np.ndarray]:
    """Per draw, ``(n, count)`` masks False on exactly ``size`` features of each sample.

    The legacy generator also draws the ``n`` uniform numbers that Quantus draws after
    each run's subsets when its baseline is a name (for its "uniform" baseline, drawn
    whichever baseline is used), so that both consume the same random stream.
    """
    legacy = np.random.RandomState(seed) if rng_kind == "legacy" else None
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        kept = np.ones((n, count), dtype=bool)
        if legacy is not None:
            for row in range(n):
                kept[row, legacy.choice(count, size, replace=False)] = False
            if named_baseline:
                legacy.uniform(0.0, 1.0, size=n)
        else:
            chosen = np.argsort(rng.uniform(size=(n, count)), axis=-1)[:, :size]
            np.put_along_axis(kept, chosen, False, axis=-1)
        yield kept


def _nearest(grid: int, size: int) -> np.ndarray:
    """Grid cell of each of ``size`` positions, as ``tf.image.resize(method="nearest")``
    (half-pixel centres)."""
    return np.minimum(np.floor((np.arange(size) + 0.5) * (grid / size)).astype(int), grid - 1)


def _correlation(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """Row-wise correlation of ``(N, S)`` arrays; 0 where either row is constant."""
    if kind == "spearman":
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError("MuFidelity: the model's scores are not finite")
        out = spearman(a, b)
    else:
        da, db = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
        norm = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
        out = np.full(len(a), np.nan)
        np.divide((da * db).sum(axis=1), norm, out=out, where=norm > 0)
    return np.nan_to_num(out, nan=0.0)
