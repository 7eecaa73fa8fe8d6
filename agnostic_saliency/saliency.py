"""Vanilla gradient saliency (Simonyan et al. 2013, as in Xplique)."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency._definitions import DEFAULT, layer_reducer, resolve_definitions
from agnostic_saliency._memory import AUTO, BatchSize
from agnostic_saliency._reduce import Reducer
from agnostic_saliency._run import Run
from agnostic_saliency.backend import Backend, Operator, OutputSelector
from agnostic_saliency.explainer import GradientExplainer

__all__ = ["Saliency"]

_PRESETS: dict[str, dict[str, Any] | None] = {
    "xplique": {"reducer": "max", "absolute": True},
    "captum": {"reducer": None, "absolute": True},
    "pair": {"reducer": None, "absolute": False},
}


class Saliency(GradientExplainer):
    """Saliency map: ``reducer(|d score / d input|)`` over the channel axis of images.

    For image inputs (rank 4) the default reduction is the maximum over the
    channel axis, giving ``(N, H, W)`` as in Simonyan et al. 2013 and Xplique; for
    other ranks the map has the input's shape.

    Parameters
    ----------
    model
        A model of any framework with an installed backend, or a function with ``backend=``.
    backend
        A registered backend name or a backend object; always wins over detection.
    batch_size
        Most inputs sent to the model at once: ``"auto"`` (within ``memory_budget``),
        an int, or ``None`` (all). Results do not depend on it.
    memory_budget
        Bytes of working memory for ``batch_size="auto"`` (``None``: 10 % of the
        available memory, at least 1 GiB).
    operator
        ``operator(model, inputs, targets) -> scores (N,)`` in the model's framework.
    channel_axis
        Channel axis of image inputs; ``None`` takes the framework's convention.
    reducer
        Channel reduction of image maps: ``"max"`` (the paper's and Xplique's),
        ``"mean"``, ``"min"``, ``"sum"``, or ``None`` to keep the channels (Captum, PAIR).
    absolute
        Take the absolute value of the gradient (the paper's, Xplique's and Captum's
        definition). ``False`` gives the signed gradient (PAIR's ``GradientSaliency``).
    preset
        ``"xplique"`` (the defaults), ``"captum"`` or ``"pair"``: that library's
        definitions; explicit arguments win.
    output_selector
        Picks one tensor out of a model output that is a tuple, dict or object.
    allow_training_mode
        Explain a model in training mode instead of refusing it.
    strict
        Raise ``RuntimeError`` instead of warning about what may spoil a map: a
        sample whose map is identically zero, outputs that look like probabilities,
        inputs cast to a lower precision.
    attribute, model_kwargs, layer, output
        Several inputs, side inputs, constants, a layer to explain (reduced with
        ``"l2"`` over its hidden axis unless ``reducer`` is given), and the name of
        the output to explain: see :class:`~agnostic_saliency.explainer.GradientExplainer`.

    Examples
    --------
    >>> maps = Saliency(model).explain(images, labels)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        *,
        backend: str | Backend | None = None,
        batch_size: BatchSize = AUTO,
        memory_budget: float | None = None,
        operator: Operator | None = None,
        channel_axis: int | None = None,
        reducer: Reducer = DEFAULT,
        absolute: bool = DEFAULT,
        preset: str | None = None,
        output_selector: OutputSelector | None = None,
        allow_training_mode: bool = False,
        strict: bool = False,
        attribute: Any = None,
        model_kwargs: dict[str, Any] | None = None,
        layer: Any = None,
        output: str | None = None,
    ) -> None:
        reducer = layer_reducer(reducer, {"layer": layer})
        definitions = resolve_definitions("Saliency", _PRESETS, preset,
                                          {"reducer": reducer, "absolute": absolute})
        super().__init__(model, backend=backend, batch_size=batch_size,
                         memory_budget=memory_budget, operator=operator,
                         channel_axis=channel_axis, reducer=definitions["reducer"],
                         output_selector=output_selector,
                         allow_training_mode=allow_training_mode, strict=strict,
                         attribute=attribute, model_kwargs=model_kwargs, layer=layer,
                         output=output)
        self.absolute = bool(definitions["absolute"])
        self.preset = preset

    def _attribute(self, run: Run, rows: slice) -> np.ndarray:
        # A backend that can reduces |gradient| itself (on a GPU, before the copy back).
        magnitude = run.magnitude(self.absolute)
        points = run.x if rows is run.everything else run.x[rows]
        return run.gradient(points, rows, absolute=self.absolute, magnitude=magnitude)
