"""Deletion and Insertion (Petsiuk et al. 2018, RISE): the target score as the features a
map ranks first are removed from the input, or inserted into a baseline.

Features are ranked by the map, most important first. Step by step, the first ``c``
of them take their end value (the baseline for Deletion, the input for Insertion) while
the rest keep their start value; the curve is the target score at each step and the
metric is the area under it. A good map gives a low Deletion and a high Insertion area.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agnostic_saliency.metrics._base import (
    Metric,
    Prepared,
    baseline_values,
    check_choice,
    chunks,
)

__all__ = ["Curve", "Deletion", "Insertion"]

_COMMON = {"max_fraction": 1.0, "blur_size": 11, "blur_sigma": 5.0}

#: Settings of each preset (see :class:`Deletion` for what each one changes).
CAUSAL_PRESETS: dict[str, dict[str, Any]] = {
    "xplique": {"steps": 10, "features_per_step": None, "unit": "pixel", "baseline": 0.0,
                "include_start": True, "area": "normalised", "activation": None,
                "tie_order": "reverse", **_COMMON},
    "quantus": {"steps": None, "features_per_step": 1, "unit": "element", "baseline": "min",
                "include_start": False, "area": "trapezoid", "activation": "softmax",
                "tie_order": "forward", **_COMMON},
    "rise": {"steps": None, "features_per_step": 224, "unit": "pixel", "baseline": 0.0,
             "include_start": True, "area": "normalised", "activation": "softmax",
             "tie_order": "forward", **_COMMON},
}


@dataclass(frozen=True)
class Curve:
    """A Deletion or Insertion curve.

    Attributes
    ----------
    counts
        Features perturbed at each point, shape ``(T,)``.
    fractions
        ``counts`` over the number of features, shape ``(T,)``.
    scores
        Target score of each sample at each point, shape ``(N, T)``.
    areas
        Area under each sample's curve (the ``area`` setting), shape ``(N,)``.
    """

    counts: np.ndarray
    fractions: np.ndarray
    scores: np.ndarray
    areas: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """The curve averaged over the samples, shape ``(T,)``."""
        return np.asarray(self.scores.mean(axis=0))


class _Causal(Metric):
    """Shared code of :class:`Deletion` and :class:`Insertion`."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        name: dict(settings) for name, settings in CAUSAL_PRESETS.items()}
    deletion: ClassVar[bool] = True

    def check_settings(self) -> None:
        s, name = self.settings, type(self).__name__
        if (s["steps"] is None) == (s["features_per_step"] is None):
            raise ValueError(f"{name}: give exactly one of steps={s['steps']!r} and "
                             f"features_per_step={s['features_per_step']!r} (the other None)")
        for key in ("steps", "features_per_step"):
            if s[key] is not None and (not isinstance(s[key], (int, np.integer)) or s[key] < 1):
                raise ValueError(f"{name}: {key}={s[key]!r}; expected a positive int")
        if not 0 < s["max_fraction"] <= 1:
            raise ValueError(f"{name}: max_fraction={s['max_fraction']!r}; expected 0 < x <= 1")
        check_choice(name, "unit", s["unit"], ("pixel", "element"))
        check_choice(name, "area", s["area"], ("normalised", "trapezoid"))
        check_choice(name, "activation", s["activation"], (None, "softmax", "sigmoid"))
        check_choice(name, "tie_order", s["tie_order"], ("forward", "reverse"))

    def evaluate_per_sample(self, inputs: Any, targets: Any, maps: Any) -> np.ndarray:
        """The area under each sample's curve, shape ``(N,)``."""
        return self.curve(inputs, targets, maps).areas

    def curve(self, inputs: Any, targets: Any, maps: Any) -> Curve:
        """The curve of each sample (see :class:`Curve`).

        Parameters
        ----------
        inputs
            A batch, NumPy or the model framework's tensor; images rank 4.
        targets
            ``None`` (the predicted class), an int, class indices ``(N,)`` or weights
            ``(N, n_outputs)``.
        maps
            One map per input: ``(N, H, W)`` for images, or the inputs' shape.
        """
        p = self.prepare(inputs, targets, maps)
        features, importance = self._features(p)
        n, count = features.shape[:2]
        order = _ranking(importance, self.settings["tie_order"])
        counts = self._counts(count)
        base = baseline_values(p.x, self.settings["baseline"],
                               blur_size=self.settings["blur_size"],
                               blur_sigma=self.settings["blur_sigma"])
        ends = self._to_features(base, p)
        start, end = (features, ends) if self.deletion else (ends, features)
        batches = self._perturbed(p, start, end, order, counts)
        scores = self.scores_of(batches).reshape(len(counts), n).T
        return Curve(counts, counts / count, scores, self._areas(scores))

    # --- steps ----------------------------------------------------------------------

    def _counts(self, count: int) -> np.ndarray:
        s = self.settings
        most = int(np.floor(count * s["max_fraction"]))
        if s["steps"] is not None:
            counts = np.linspace(0, most, s["steps"] + 1, dtype=np.int32).astype(np.int64)
        else:
            step = int(s["features_per_step"])
            counts = np.minimum(np.arange(-(-most // step) + 1) * step, most)
        return counts if s["include_start"] else counts[1:]

    def _areas(self, scores: np.ndarray) -> np.ndarray:
        if scores.shape[1] < 2:  # one point: no width
            return np.zeros(len(scores))
        trapezoids = (scores[:, :-1] + scores[:, 1:]) * 0.5
        if self.settings["area"] == "normalised":
            return np.asarray(trapezoids.mean(axis=1))
        return np.asarray(trapezoids.sum(axis=1))

    # --- features -------------------------------------------------------------------

    def _features(self, p: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """The inputs as ``(N, P, E)`` (P features of E values) and the maps as ``(N, P)``."""
        maps = p.maps
        if p.image and self.settings["unit"] == "pixel":
            importance = maps.mean(axis=1) if maps.ndim == 4 else maps
        elif p.image:
            importance = np.broadcast_to(maps[:, None] if maps.ndim == 3 else maps, p.x.shape)
        else:
            importance = maps
        return self._to_features(p.x, p), importance.reshape(len(maps), -1)

    def _to_features(self, x: np.ndarray, p: Prepared) -> np.ndarray:
        if p.image and self.settings["unit"] == "pixel":
            n, c = x.shape[:2]
            return x.transpose(0, 2, 3, 1).reshape(n, -1, c)
        return x.reshape(len(x), -1, 1)

    def _from_features(self, f: np.ndarray, p: Prepared) -> np.ndarray:
        if p.image and self.settings["unit"] == "pixel":
            n, c, h, w = p.x.shape
            return f.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        return f.reshape(len(f), *p.x.shape[1:])

    def _perturbed(self, p: Prepared, start: np.ndarray, end: np.ndarray, order: np.ndarray,
                   counts: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each step's perturbed inputs, a bounded chunk of samples at a time."""
        size = max(1, self.batch_size)
        for c in counts:
            for rows in chunks(len(start), size):
                batch = start[rows].copy()
                chosen = order[rows, :c]
                index = np.arange(len(batch))[:, None]
                batch[index, chosen] = end[rows][index, chosen]
                yield self._from_features(batch, _rows_of(p, rows)), p.targets[rows]


def _rows_of(p: Prepared, rows: slice) -> Prepared:
    return Prepared(p.x[rows], p.targets[rows], p.maps[rows], p.image)


def _ranking(importance: np.ndarray, tie_order: str) -> np.ndarray:
    """Feature indices, most important first. ``"reverse"``: ``argsort(map)`` read backwards
    (Xplique); ``"forward"``: ``argsort(-map)`` (Quantus, RISE). They differ on ties only."""
    if tie_order == "reverse":
        return np.argsort(importance, axis=-1)[:, ::-1]
    return np.argsort(-importance, axis=-1)


class Deletion(_Causal):
    """Deletion: the target score as the most important features are replaced by a
    baseline, from the input to the baseline (lower area is better).

    Settings (each preset sets them all; see ``docs/evaluate.md``):

    steps / features_per_step
        Number of steps from none to ``max_fraction`` of the features (Xplique: 10), or
        features replaced per step (Quantus: 1, RISE: 224); exactly one is not None.
    unit
        ``"pixel"``: a feature is a pixel, all its channels replaced at once, ranked by
        the map's channel mean (Xplique, RISE); ``"element"``: every input value is a
        feature, ``(N, H, W)`` maps broadcast over the channels (Quantus).
    baseline
        A number, ``"min"`` (each sample's minimum: Quantus's "black"), ``"mean"``, or
        ``"blur"`` (a Gaussian blur of ``blur_size`` taps and ``blur_sigma``).
    include_start
        Whether the curve starts with the unperturbed score (Xplique, RISE) or after
        the first step (Quantus).
    area
        ``"normalised"``: trapezoids over an x axis from 0 to 1 (Xplique, RISE);
        ``"trapezoid"``: trapezoids of width 1 per step, ``numpy.trapz`` (Quantus).
    activation
        ``None`` (the model's outputs), ``"softmax"`` or ``"sigmoid"`` before scoring.
    tie_order
        Ranking among equal map values: ``"reverse"`` (Xplique) or ``"forward"``.
    max_fraction
        Largest fraction of the features perturbed (Xplique's
        ``max_percentage_perturbed``).
    """

    deletion = True


class Insertion(_Causal):
    """Insertion: the target score as the most important features are inserted into a
    baseline, from the baseline to the input (higher area is better).

    The settings are those of :class:`Deletion`; the RISE preset starts from a blurred
    image (``baseline="blur"``).
    """

    deletion = False
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        **{name: dict(settings) for name, settings in CAUSAL_PRESETS.items()},
        "rise": {**CAUSAL_PRESETS["rise"], "baseline": "blur"},
    }
