"""Vanilla gradient saliency (Simonyan et al. 2013, as in Xplique)."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency._reduce import Reducer
from agnostic_saliency.backend import Backend, Operator, OutputSelector
from agnostic_saliency.explainer import GradientExplainer, _Run

__all__ = ["Saliency"]


class Saliency(GradientExplainer):
    """Saliency map: ``reducer(|d score / d input|)`` over the channel axis of images.

    For image inputs (rank 4) the default reduction is the maximum over the
    channel axis, giving ``(N, H, W)`` as in Simonyan et al. 2013 and Xplique; for
    other ranks the map has the input's shape.

    Parameters
    ----------
    model, backend, batch_size, operator, channel_axis, output_selector, allow_training_mode, strict
        See :class:`agnostic_saliency.explainer.GradientExplainer`.
    reducer
        Channel reduction of image maps: ``"max"`` (the paper's), ``"mean"``,
        ``"min"``, ``"sum"``, or ``None`` to keep the channels.
    absolute
        Take the absolute value of the gradient (the paper's definition). ``False``
        gives the signed gradient (PAIR's ``GradientSaliency``).

    Examples
    --------
    >>> maps = Saliency(model).explain(images, labels)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        *,
        backend: str | Backend | None = None,
        batch_size: int | None = None,
        operator: Operator | None = None,
        channel_axis: int | None = None,
        reducer: Reducer = "max",
        absolute: bool = True,
        output_selector: OutputSelector | None = None,
        allow_training_mode: bool = False,
        strict: bool = False,
    ) -> None:
        super().__init__(model, backend=backend, batch_size=batch_size, operator=operator,
                         channel_axis=channel_axis, reducer=reducer,
                         output_selector=output_selector,
                         allow_training_mode=allow_training_mode, strict=strict)
        self.absolute = absolute

    def _attribute(self, run: _Run, rows: slice) -> np.ndarray:
        gradient = run.gradient(run.x[rows], rows)
        return np.abs(gradient) if self.absolute else gradient
