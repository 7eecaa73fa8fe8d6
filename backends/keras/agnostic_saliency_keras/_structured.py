"""Several inputs, side inputs and layer outputs of Keras models, on every Keras backend.

A multi-input Keras model is called with the caller's structure itself (a list,
tuple or dict of tensors, ``training=False``, ``model_kwargs`` as keywords). The
attributed entries are converted to the model's floating dtype and differentiated
with the framework's own autodiff (``tf.GradientTape``, ``jax.grad``,
``torch.autograd.grad``), run eagerly; side inputs (token ids, masks) are passed as
they are and never differentiated.

With ``layer=`` a layer of a functional model, the model is cut at that layer with
public Keras: ``keras.Model(model.inputs, layer.output)`` reads the layer's output,
and ``keras.Model([layer.output, *other_inputs], model.outputs)`` (Keras clones the
part of the graph between them) is the head whose first input is replaced by the
given values. Both are built once per model and layer, in a bounded cache.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
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

    layer = _checked_layer(model, inputs.layer)
    by_key = _model_inputs(model, inputs)
    reader = _MODELS.get_or_create(
        ("reader", ObjectKey(model), ObjectKey(layer), tuple(by_key)),
        lambda: keras.Model([by_key[key] for key in inputs.keys], layer.output))
    converted = _converted(model, inputs)
    try:
        outputs = reader([converted[key] for key in inputs.keys], training=False)
    except Exception as error:
        if is_out_of_memory(error):
            raise
        shapes = {str(key): tuple(value.shape) for key, value in inputs.values.items()}
        raise ValueError(_messages.structured_model_failed(shapes, error)) from error
    return np.asarray(keras.ops.convert_to_numpy(outputs))


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


def _checked_layer(model: Any, layer: Any) -> Any:
    """``layer`` when ``model`` is a functional or Sequential model holding it, else a
    clear error."""
    import keras

    try:  # a functional or sequential model has a graph from its inputs to its outputs
        functional = isinstance(model, keras.Model) and bool(model.inputs) \
            and bool(model.outputs)
    except (AttributeError, ValueError):
        functional = False
    if not functional:
        raise TypeError(_messages.layer_needs_functional(type(model).__name__))
    if not any(item is layer for item in model.layers):
        raise TypeError(_messages.layer_not_in_model(type(layer).__name__,
                                                     getattr(model, "name", "")))
    if getattr(layer, "mask_zero", False):
        raise TypeError(_messages.layer_with_mask(layer.name))
    return layer


def _model_inputs(model: Any, inputs: ModelInputs) -> dict[Any, Any]:
    """The model's ``keras.Input`` tensors by the caller's keys (by name for a dict, by
    position for a list or tuple)."""
    tensors = list(model.inputs)
    if inputs.kind != "dict":
        if len(tensors) != len(inputs.keys):
            raise ValueError(_messages.inputs_count(len(inputs.keys), len(tensors)))
        return dict(zip(inputs.keys, tensors, strict=True))
    named = {tensor.name: tensor for tensor in tensors}
    missing = [key for key in inputs.keys if key not in named]
    if missing:
        raise ValueError(_messages.inputs_names(missing, list(named)))
    return {key: named[key] for key in inputs.keys}


def _head(model: Any, inputs: ModelInputs) -> tuple[Any, ModelInputs]:
    """The model from the layer's output on, and what to run it on (the layer's values
    first, then the side inputs the head still needs)."""
    import keras

    layer = _checked_layer(model, inputs.layer)
    by_key = _model_inputs(model, inputs)
    fed = layer.input if isinstance(layer.input, list) else [layer.input]
    others = [key for key, tensor in by_key.items() if not any(tensor is f for f in fed)]

    def build() -> Any:
        try:
            return keras.Model([layer.output, *[by_key[key] for key in others]],
                               model.outputs[0] if len(model.outputs) == 1 else model.outputs)
        except Exception as error:
            raise TypeError(_messages.layer_head_failed(layer.name, error)) from error

    head = _MODELS.get_or_create(("head", ObjectKey(model), ObjectKey(layer), tuple(others)),
                                 build)
    values: dict[Hashable, np.ndarray] = {0: np.asarray(inputs.layer_values)}
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

