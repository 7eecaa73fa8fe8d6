"""Several inputs, side inputs and layer outputs of Keras models, on every Keras backend.

A multi-input Keras model is called with the caller's structure itself (a list,
tuple or dict of tensors, ``training=False``, ``model_kwargs`` as keywords). The
attributed entries are converted to the model's floating dtype and differentiated
with the framework's own autodiff (``tf.GradientTape``, ``jax.grad``,
``torch.autograd.grad``), run eagerly; side inputs (token ids, masks) are passed as
they are and never differentiated.

With ``layer=`` a layer of a functional model, the model is cut at that layer with
public Keras: ``keras.Model(model.input, layer.output)`` reads the layer's output,
and ``keras.Model([layer.output, *other_inputs], model.output)`` (Keras clones the
part of the graph between them) is the head whose first input is replaced by the
given values. Both are built once per model and layer, in a bounded cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.backend import CallOptions
from agnostic_saliency.cache import BoundedCache, ObjectKey
from agnostic_saliency_keras import _messages
from agnostic_saliency_keras._common import input_dtype, is_out_of_memory

__all__ = ["gradient", "layer_output", "predict"]

_MODELS: BoundedCache[Any] = BoundedCache(16)


def predict(model: Any, inputs: ModelInputs, options: CallOptions) -> Any:
    """The model's outputs on ``inputs`` (``training=False``)."""
    return _call(model, inputs, _converted(model, inputs), options)


def layer_output(model: Any, inputs: ModelInputs) -> np.ndarray:
    """The output of ``inputs.layer`` when ``model`` runs on ``inputs``."""
    import keras

    reader = _MODELS.get_or_create(
        ("reader", ObjectKey(model), ObjectKey(inputs.layer)),
        lambda: keras.Model(_graph(model, inputs.layer).input, inputs.layer.output))
    return np.asarray(keras.ops.convert_to_numpy(
        _call(reader, inputs, _converted(model, inputs), CallOptions())))


def gradient(model: Any, inputs: ModelInputs, targets: Any, options: CallOptions) -> Any:
    """Gradients by attributed key (NumPy), or the gradient of ``inputs.layer_values``."""
    if inputs.layer is not None:
        head, head_inputs = _head(model, inputs)
        grads = gradient(head, head_inputs, targets, options)
        return grads[0]
    import keras

    converted = _converted(model, inputs)
    framework = keras.backend.backend()
    wrt = {key: converted[key] for key in inputs.attributed}

    def score(values: Mapping[Any, Any]) -> Any:
        outputs = _call(model, inputs, {**converted, **values}, options)
        outputs = keras.ops.cast(outputs, "float64" if outputs.dtype == "float64" else "float32")
        target = keras.ops.convert_to_tensor(targets)
        if np.asarray(targets).dtype.kind in "iu":
            picked = keras.ops.take_along_axis(outputs, keras.ops.expand_dims(target, 1), 1)
            return keras.ops.sum(picked)
        return keras.ops.sum(outputs * keras.ops.cast(target, outputs.dtype))

    grads = _GRADIENTS[framework](score, wrt)
    return {key: np.zeros(np.shape(value), np.asarray(value).dtype) if grads[key] is None
            else np.asarray(keras.ops.convert_to_numpy(grads[key]))
            for key, value in inputs.values.items() if key in inputs.attributed}


def _converted(model: Any, inputs: ModelInputs) -> dict[Any, Any]:
    """Every entry as a tensor: attributed ones (and floating side inputs) in the
    model's floating dtype, others (ids, masks) as they are."""
    import keras

    dtype = input_dtype(model)
    converted = {}
    for key, value in inputs.values.items():
        wanted = dtype if value.dtype.kind == "f" else None
        converted[key] = keras.ops.convert_to_tensor(value, dtype=wanted)
    return converted


def _call(model: Any, inputs: ModelInputs, converted: Mapping[Any, Any],
          options: CallOptions) -> Any:
    try:
        outputs = model(inputs.structure(converted), training=False, **inputs.model_kwargs)
    except Exception as error:
        if is_out_of_memory(error):
            raise
        shapes = {str(key): tuple(value.shape) for key, value in inputs.values.items()}
        raise ValueError(_messages.structured_model_failed(shapes, error)) from error
    return options.output_selector(outputs) if options.output_selector else outputs


def _graph(model: Any, layer: Any) -> Any:
    """``model`` when it is a functional model holding ``layer``, else a clear error."""
    import keras

    try:  # a functional or sequential model has a graph from its inputs to its outputs
        functional = isinstance(model, keras.Model) and model.output is not None \
            and model.input is not None
    except (AttributeError, ValueError):
        functional = False
    if not functional:
        raise TypeError(_messages.layer_needs_functional(type(model).__name__))
    if not any(operation is layer for operation in model.operations):
        raise TypeError(_messages.layer_not_in_model(type(layer).__name__,
                                                     getattr(model, "name", "")))
    return model


def _model_inputs(model: Any, inputs: ModelInputs) -> dict[Any, Any]:
    """The model's ``keras.Input`` tensors by the caller's keys."""
    structure = model.input
    if inputs.kind == "array":
        return {inputs.keys[0]: structure[0] if isinstance(structure, list) else structure}
    if inputs.kind == "dict":
        if not isinstance(structure, Mapping):
            named = {tensor.name: tensor for tensor in model.inputs}
            return {key: named[key] for key in inputs.keys}
        return {key: structure[key] for key in inputs.keys}
    return {key: structure[key] for key in inputs.keys}


def _head(model: Any, inputs: ModelInputs) -> tuple[Any, ModelInputs]:
    """The model from the layer's output on, and what to run it on (the layer's values
    first, then the side inputs the head still needs)."""
    import keras

    layer = inputs.layer
    graph = _graph(model, layer)
    by_key = _model_inputs(graph, inputs)
    fed = layer.input if isinstance(layer.input, list) else [layer.input]
    others = [key for key, tensor in by_key.items() if not any(tensor is f for f in fed)]

    def build() -> Any:
        try:
            return keras.Model([layer.output, *[by_key[key] for key in others]], model.output)
        except Exception as error:
            raise TypeError(_messages.layer_head_failed(layer.name, error)) from error

    head = _MODELS.get_or_create(("head", ObjectKey(model), ObjectKey(layer), tuple(others)),
                                 build)
    values = {0: np.asarray(inputs.layer_values)}
    values.update({index + 1: inputs.values[key] for index, key in enumerate(others)})
    head_inputs = replace(inputs, kind="list", keys=tuple(values), values=values,
                          attributed=(0,), layer=None, layer_values=None)
    return head, head_inputs


def _tf_gradients(score: Any, wrt: dict[Any, Any]) -> dict[Any, Any]:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        for value in wrt.values():
            tape.watch(value)
        total = score(wrt)
    return dict(zip(wrt, tape.gradient(total, list(wrt.values())), strict=True))


def _jax_gradients(score: Any, wrt: dict[Any, Any]) -> dict[Any, Any]:
    import jax

    return dict(jax.grad(score)(wrt))


def _torch_gradients(score: Any, wrt: dict[Any, Any]) -> dict[Any, Any]:
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        leaves = {key: value.detach().clone().requires_grad_(True) for key, value in wrt.items()}
        total = score(leaves)
        grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return {key: None if grad is None else grad.detach()
            for key, grad in zip(leaves, grads, strict=True)}


_GRADIENTS = {"tensorflow": _tf_gradients, "jax": _jax_gradients, "torch": _torch_gradients}

