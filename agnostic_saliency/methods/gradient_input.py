"""Gradient x Input (Shrikumar et al. 2016)."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency._definitions import DEFAULT, layer_reducer, resolve_definitions
from agnostic_saliency._run import Run
from agnostic_saliency.explainer import GradientExplainer

__all__ = ["GradientInput"]

_PRESETS: dict[str, dict[str, Any] | None] = {
    "xplique": {"reducer": "mean", "absolute": False},
    "captum": {"reducer": None, "absolute": False},
    "pair": None,
}


class GradientInput(GradientExplainer):
    """The input times its gradient, ``x * d score / d x`` (Captum's ``InputXGradient``).

    Parameters
    ----------
    model
        A model of any framework with an installed backend, or a function with ``backend=``.
    reducer
        Channel reduction of image maps (Xplique ``"mean"``, Captum ``None``).
    absolute
        Return ``|x * gradient|`` instead of the signed product (neither library does).
    preset
        ``"xplique"`` (default) or ``"captum"``; PAIR has no Gradient x Input.
    **options
        ``backend``, ``batch_size``, ``operator``, ``channel_axis``, ``output_selector``,
        ``allow_training_mode``, ``strict``: see
        :class:`~agnostic_saliency.explainer.GradientExplainer`.
    """

    def __init__(self, model: Any, *, reducer: Any = DEFAULT, absolute: bool = DEFAULT,
                 preset: str | None = None, **options: Any) -> None:
        self.preset = preset
        reducer = layer_reducer(reducer, options)
        definitions = resolve_definitions("GradientInput", _PRESETS, preset,
                                          {"reducer": reducer, "absolute": absolute})
        super().__init__(model, reducer=definitions["reducer"], **options)
        self.absolute = bool(definitions["absolute"])

    def _attribute(self, run: Run, rows: slice) -> np.ndarray:
        product = run.x[rows] * run.gradient(run.x[rows], rows)
        return np.abs(product) if self.absolute else product
