"""A NumPy reference backend: exact gradients of :class:`ModelSpec` models.

It runs the conformance suite without any framework, so the suite itself is
tested, and it computes the exact answers the suite compares other backends to.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.backend import BackendBase, CallOptions, Magnitude, Operator
from agnostic_saliency.testing.models import (
    Conv2D,
    Dense,
    Flatten,
    GlobalAveragePool,
    ModelSpec,
    Tanh,
)

__all__ = ["NumpyModel", "ReferenceBackend"]


class NumpyModel:
    """A callable NumPy model built from a :class:`ModelSpec`, with an exact backward."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._forward(np.asarray(x))[0]

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        channels_first = self.spec.is_image and self.spec.layout == "channels_first"
        out = x.transpose(0, 2, 3, 1) if channels_first else x
        saved = []
        for layer in self.spec.layers:
            saved.append(out)
            out = _layer_forward(layer, out, channels_first)
        return out, saved

    def input_gradient(self, x: np.ndarray, output_weights: np.ndarray) -> np.ndarray:
        """Gradient of ``sum(model(x) * output_weights)`` with respect to ``x``."""
        channels_first = self.spec.is_image and self.spec.layout == "channels_first"
        out, saved = self._forward(x)
        upstream = np.broadcast_to(output_weights.reshape(out.shape), out.shape).astype(out.dtype)
        for layer, before in zip(reversed(self.spec.layers), reversed(saved), strict=True):
            upstream = _layer_backward(layer, before, upstream, channels_first)
        return upstream.transpose(0, 3, 1, 2) if channels_first else upstream


def _layer_forward(layer: object, x: np.ndarray, channels_first: bool) -> np.ndarray:
    if isinstance(layer, Dense):
        return x @ layer.weight + layer.bias
    if isinstance(layer, Tanh):
        return np.tanh(x)
    if isinstance(layer, Flatten):
        if channels_first and x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)
        return x.reshape(len(x), -1)
    if isinstance(layer, GlobalAveragePool):
        return x.mean(axis=(1, 2))
    if isinstance(layer, Conv2D):
        return _conv_forward(layer, x)
    raise TypeError(f"unknown layer {layer!r}")


def _layer_backward(layer: object, x: np.ndarray, upstream: np.ndarray,
                    channels_first: bool) -> np.ndarray:
    if isinstance(layer, Dense):
        return upstream @ layer.weight.T
    if isinstance(layer, Tanh):
        return upstream * (1.0 - np.tanh(x) ** 2)
    if isinstance(layer, Flatten):
        if channels_first and x.ndim == 4:
            return upstream.reshape(x.transpose(0, 3, 1, 2).shape).transpose(0, 2, 3, 1)
        return upstream.reshape(x.shape)
    if isinstance(layer, GlobalAveragePool):
        height, width = x.shape[1:3]
        return np.broadcast_to(upstream[:, None, None, :] / (height * width), x.shape).copy()
    if isinstance(layer, Conv2D):
        return _conv_backward(layer, x, upstream)
    raise TypeError(f"unknown layer {layer!r}")


def _conv_forward(layer: Conv2D, x: np.ndarray) -> np.ndarray:
    kh, kw = layer.kernel.shape[:2]
    height, width = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((len(x), height, width, layer.kernel.shape[3]), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            out += x[:, a:a + height, b:b + width, :] @ layer.kernel[a, b]
    return out + layer.bias


def _conv_backward(layer: Conv2D, x: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    kh, kw = layer.kernel.shape[:2]
    height, width = upstream.shape[1:3]
    grad = np.zeros_like(x)
    for a in range(kh):
        for b in range(kw):
            grad[:, a:a + height, b:b + width, :] += upstream @ layer.kernel[a, b].T
    return grad


class ReferenceBackend(BackendBase):
    """Backend for :class:`NumpyModel` (exact) and for operators (central differences).

    Gradients of an ``operator`` are central finite differences in float64, so
    they are accurate to about 1e-7 relative for the smooth models of the zoo.
    """

    name = "reference"
    modules: tuple[str, ...] = ("agnostic_saliency",)
    priority = 0
    channel_axis = -1
    class_index_targets = True
    magnitude_maps = (None, "max", "mean", "sum")
    structured_inputs = True
    layer_outputs = True

    def can_handle(self, model: Any) -> bool:
        return isinstance(model, (NumpyModel, LayeredModel))

    def to_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def predict(self, model: Any, inputs: Any, options: CallOptions) -> Any:
        outputs = (_call(model, inputs) if isinstance(inputs, np.ndarray)
                   else _call_structured(model, inputs))
        return options.output_selector(outputs) if options.output_selector else outputs

    def layer_output(self, model: Any, inputs: Any, options: CallOptions) -> np.ndarray:
        return np.asarray(_call_structured(model, inputs, read_layer=True))

    def gradient(self, model: Any, inputs: Any, targets: Any, operator: Operator | None,
                 options: CallOptions, magnitude: Magnitude | None = None) -> Any:
        if isinstance(inputs, ModelInputs):
            return self._structured_gradient(model, inputs, targets, options)
        gradient = self._signed_gradient(model, inputs, targets, operator, options)
        if magnitude is None:
            return gradient
        reducer, axis = magnitude
        absolute = np.abs(gradient)
        return absolute if reducer is None else getattr(np, reducer)(absolute, axis=axis)

    def _signed_gradient(self, model: Any, inputs: np.ndarray, targets: Any,
                         operator: Operator | None, options: CallOptions) -> np.ndarray:
        if operator is not None:
            return _operator_gradient(model, inputs, targets, operator)
        if np.asarray(targets).dtype.kind in "iu":  # class indices: one-hot rows
            n_outputs = np.shape(self.predict(model, inputs, options))[1]  # all: a static batch
            targets = np.eye(n_outputs, dtype=inputs.dtype)[targets]
        if options.output_selector is not None or not isinstance(model, NumpyModel):
            return _numeric_gradient(
                lambda x: np.sum(self.predict(model, x, options) * targets), inputs)
        return model.input_gradient(inputs, targets).astype(inputs.dtype, copy=False)


    def _structured_gradient(self, model: Any, inputs: ModelInputs, targets: Any,
                             options: CallOptions) -> Any:
        """Central differences for each attributed entry, or for the layer's output."""
        if np.asarray(targets).dtype.kind in "iu":
            n_outputs = np.shape(self.predict(model, inputs, options))[1]
            targets = np.eye(n_outputs)[targets]

        def score(values: dict[Any, np.ndarray], layer_values: Any) -> float:
            changed = replace(inputs, values=values, layer_values=layer_values)
            return float(np.sum(self.predict(model, changed, options) * targets))

        if inputs.layer is not None:
            return _numeric_gradient(lambda v: score(dict(inputs.values), v),
                                     np.asarray(inputs.layer_values))
        return {key: _numeric_gradient(
            lambda v, key=key: score({**inputs.values, key: v}, None), inputs.values[key])
            for key in inputs.attributed}


class LayeredModel:
    """A NumPy model in two stages, ``head(embed(first), *rest)``: ``embed`` is the layer
    that ``layer=`` can name (token ids to embeddings, say), ``head`` takes its output
    and the other inputs (an attention mask)."""

    def __init__(self, embed: Any, head: Any) -> None:
        self.embed = embed
        self.head = head

    def __call__(self, first: Any, *rest: Any, **named: Any) -> Any:
        return self.head(self.embed(first), *rest, **named)


def _call_structured(model: Any, inputs: ModelInputs, read_layer: bool = False) -> Any:
    converted = {key: np.asarray(value) for key, value in inputs.values.items()}
    args, kwargs = inputs.arguments(converted)
    if inputs.kind == "array":
        args = (converted[inputs.keys[0]],)
    if inputs.layer is None:
        return model(*args, **kwargs)
    if not isinstance(model, LayeredModel) or inputs.layer is not model.embed:
        raise ValueError(f"layer {inputs.layer!r} is not the embed stage of {model!r}")
    if read_layer:
        return model.embed(args[0])
    return model.head(np.asarray(inputs.layer_values), *args[1:], **kwargs)


def _call(model: Any, inputs: np.ndarray) -> Any:
    try:
        return model(inputs)
    except Exception as error:
        raise ValueError(messages.model_failed(inputs.shape, error)) from error


def _operator_gradient(model: Any, inputs: np.ndarray, targets: Any,
                       operator: Operator) -> np.ndarray:
    scores = np.asarray(operator(model, inputs, targets))
    if scores.shape != (len(inputs),):
        raise ValueError(messages.operator_wrong_shape(scores.shape, len(inputs)))
    return _numeric_gradient(lambda x: float(np.sum(operator(model, x, targets))), inputs)


def _numeric_gradient(score: Any, inputs: np.ndarray, step: float = 1e-5) -> np.ndarray:
    x = inputs.astype(np.float64)
    grad = np.zeros_like(x)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    for index in range(flat_x.size):
        original = flat_x[index]
        flat_x[index] = original + step
        upper = score(x)
        flat_x[index] = original - step
        lower = score(x)
        flat_x[index] = original
        flat_grad[index] = (upper - lower) / (2 * step)
    return grad.astype(inputs.dtype)


def use_reference_backend() -> ReferenceBackend:
    """Register the reference backend as ``"reference"`` (once) and return it."""
    from agnostic_saliency.registry import get_backend, register_backend, registered_as

    if registered_as("reference") is None:
        try:
            get_backend("reference")  # an installed plugin of that name comes first
        except ValueError:
            register_backend(ReferenceBackend())
    backend = get_backend("reference")
    assert isinstance(backend, ReferenceBackend)
    return backend
