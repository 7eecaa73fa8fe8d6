"""Deliberately broken variants of the reference backend; the suite must reject each."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency import get_backend
from agnostic_saliency._structure import ModelInputs


class Mutant:
    """The reference backend with one defect; ``name`` stays ``"reference"``.

    A plugin without :class:`~agnostic_saliency.backend.BackendBase`: it declares
    the optional members that its own ``gradient`` honours.
    """

    channel_axis = -1
    class_index_targets = False
    magnitude_maps: tuple[str | None, ...] = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(get_backend("reference"), name)

    def gradient(self, model, inputs, targets, operator, options):  # type: ignore[no-untyped-def]
        exact = get_backend("reference").gradient(model, inputs, targets, operator, options)
        return self.corrupt(exact, model, inputs, targets)

    def corrupt(self, gradient, model, inputs, targets):  # type: ignore[no-untyped-def]
        return gradient


class SignFlipped(Mutant):
    def corrupt(self, gradient, model, inputs, targets):  # type: ignore[no-untyped-def]
        return -gradient


class SpatiallyFlipped(Mutant):
    """Returns image gradients with the height axis reversed (a layout bug)."""

    def corrupt(self, gradient, model, inputs, targets):  # type: ignore[no-untyped-def]
        return gradient[:, ::-1].copy() if gradient.ndim == 4 else gradient


class IgnoresTargets(Mutant):
    """Always explains output 0."""

    def gradient(self, model, inputs, targets, operator, options):  # type: ignore[no-untyped-def]
        if operator is None and targets is not None and np.ndim(targets) == 2:
            targets = np.zeros_like(targets)
            targets[:, 0] = 1
        elif operator is None and np.asarray(targets).dtype.kind in "iu":  # class indices
            targets = np.zeros_like(targets)
        return get_backend("reference").gradient(model, inputs, targets, operator, options)


class ShiftsClassIndices(Mutant):
    """Declares class-index targets and reads them off by one (weights stay right)."""

    class_index_targets = True

    def gradient(self, model, inputs, targets, operator, options):  # type: ignore[no-untyped-def]
        if operator is None and np.asarray(targets).dtype.kind in "iu":
            n_outputs = np.shape(get_backend("reference").predict(model, inputs[:1], options))[1]
            targets = (np.asarray(targets) + 1) % n_outputs
        return get_backend("reference").gradient(model, inputs, targets, operator, options)


class BatchCoupled(Mutant):
    """Mixes samples of a batch, like a model left in training mode with batch norm."""

    def corrupt(self, gradient, model, inputs, targets):  # type: ignore[no-untyped-def]
        return gradient + 0.1 * gradient.mean(axis=0, keepdims=True)


class LowPrecision(Mutant):
    """Computes in float16 and returns float32."""

    def corrupt(self, gradient, model, inputs, targets):  # type: ignore[no-untyped-def]
        return gradient.astype(np.float16).astype(np.float32)


class ScaledPredictions(Mutant):
    """Returns softmax probabilities from predict instead of the model's outputs."""

    def predict(self, model, inputs, options):  # type: ignore[no-untyped-def]
        outputs = get_backend("reference").predict(model, inputs, options)
        if outputs.ndim != 2:
            return outputs
        exp = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


class MutatesInputs(Mutant):
    """Normalises the caller's array in place."""

    def corrupt(self, gradient, model, inputs, targets):  # type: ignore[no-untyped-def]
        if inputs.flags.writeable:
            inputs *= 1.0
            inputs += 1e-3
        return gradient


class ReducesBeforeAbsolute(Mutant):
    """Declares magnitude maps and takes the absolute value after the reduction."""

    magnitude_maps = (None, "max", "mean", "sum")

    def gradient(self, model, inputs, targets, operator, options,  # type: ignore[no-untyped-def]
                 magnitude=None):
        exact = get_backend("reference").gradient(model, inputs, targets, operator, options)
        if magnitude is None:
            return exact
        reducer, axis = magnitude
        return np.abs(exact if reducer is None else getattr(np, reducer)(exact, axis=axis))


class ReusesItsBuffer(Mutant):
    """Writes every gradient into one array of its own and returns that array."""

    def __init__(self) -> None:
        self.buffer: np.ndarray | None = None

    def corrupt(self, gradient, model, inputs, targets):  # type: ignore[no-untyped-def]
        if self.buffer is None or self.buffer.shape != gradient.shape:
            self.buffer = np.empty_like(gradient)
        self.buffer[...] = gradient
        return self.buffer


class ReducesTheLastAxis(Mutant):
    """Declares max magnitude maps and reduces the last axis, whatever axis is asked for."""

    magnitude_maps = ("max",)

    def gradient(self, model, inputs, targets, operator, options,  # type: ignore[no-untyped-def]
                 magnitude=None):
        exact = get_backend("reference").gradient(model, inputs, targets, operator, options)
        return exact if magnitude is None else np.abs(exact).max(axis=-1)


class ScalesStructuredGradients(Mutant):
    """Doubles the gradient of every attributed input after the first, and of a layer."""

    def gradient(self, model, inputs, targets, operator, options):  # type: ignore[no-untyped-def]
        exact = get_backend("reference").gradient(model, inputs, targets, operator, options)
        if not isinstance(inputs, ModelInputs):
            return exact
        if inputs.layer is not None:
            return 2 * exact
        return {key: 2 * value if key != inputs.attributed[0] else value
                for key, value in exact.items()}
