"""Average Drop and Average Increase (Chattopadhay et al. 2018, Grad-CAM++): the target
score of the input multiplied by its own map, scaled to ``[0, 1]``.

The mask of a sample is ``|map|`` (its channel mean for input-shaped image maps), scaled
by its minimum and maximum, ``(m - min) / (max - min + 1e-8)``, and multiplied into
every channel of the input, as in Xplique's ``AverageDropMetric``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from agnostic_saliency.metrics._base import Metric, check_choice

__all__ = ["AverageDrop", "AverageIncrease"]

_EPS = 1e-8

#: Settings of each preset: only the score's activation differs.
AVERAGE_PRESETS: dict[str, dict[str, Any]] = {
    "xplique": {"activation": None},
    "quantus": {"activation": "softmax"},
    "rise": {"activation": "softmax"},
}


class _Average(Metric):
    presets: ClassVar[dict[str, dict[str, Any]]] = AVERAGE_PRESETS

    def check_settings(self) -> None:
        check_choice(type(self).__name__, "activation", self.settings["activation"],
                     (None, "softmax", "sigmoid"))

    def base_and_masked(self, inputs: Any, targets: Any, maps: Any
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The target scores of the inputs and of the masked inputs, each ``(N,)``."""
        p = self.prepare(inputs, targets, maps)
        mask = np.abs(p.maps)
        if p.image and mask.ndim == 4:
            mask = mask.mean(axis=1)
        axes = tuple(range(1, mask.ndim))
        low, high = mask.min(axis=axes, keepdims=True), mask.max(axis=axes, keepdims=True)
        mask = (mask - low) / (high - low + _EPS)
        if p.image:
            mask = mask[:, None]
        masked = (p.x * mask).astype(p.x.dtype)
        return self.scores(p.x, p.targets), self.scores(masked, p.targets)


class AverageDrop(_Average):
    """Average Drop: ``max(0, base - masked) / (base + 1e-8)`` per sample, averaged
    (lower is better). Setting: ``activation`` (``None``, ``"softmax"``, ``"sigmoid"``),
    applied to the model's outputs before scoring."""

    def evaluate_per_sample(self, inputs: Any, targets: Any, maps: Any) -> np.ndarray:
        base, masked = self.base_and_masked(inputs, targets, maps)
        return np.maximum(base - masked, 0.0) / (base + _EPS)


class AverageIncrease(_Average):
    """Average Increase in confidence: the fraction of samples whose masked input scores
    higher than the input (higher is better). Setting: ``activation``."""

    def evaluate_per_sample(self, inputs: Any, targets: Any, maps: Any) -> np.ndarray:
        base, masked = self.base_and_masked(inputs, targets, maps)
        return (masked > base).astype(np.float64)
