"""Several inputs, side inputs and layer outputs of Keras models, on every Keras backend.

A multi-input Keras model is called with the caller's structure itself (a list,
tuple or dict of tensors, ``training=False``, ``model_kwargs`` as keywords). The
attributed entries are converted to the model's floating dtype and differentiated
with the framework's own autodiff (``tf.GradientTape``, ``jax.grad``,
``torch.autograd.grad``): compiled once per signature on TensorFlow and JAX
(:mod:`._structured_compiled`), eager on PyTorch; side inputs (token ids, masks) are
passed as they are and never differentiated.

With ``layer=`` a layer anywhere inside the model (functional, Sequential,
subclassed, or nested such as ``classifier.backbone.token_embedding`` of keras_hub),
the whole model runs as the user calls it, and that layer's ``call`` is intercepted
for this one pass (:mod:`._intercept`): reading ends the pass at the layer, the
gradient pass replaces the layer's output with the given values, which are what is
differentiated (when compiled, the interception happens while tracing, and the
compiled function always replaces the output). One mechanism for every kind of Keras
model: nothing is cut or cloned, and the layer must run exactly once per pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.backend import CallOptions
from agnostic_saliency_keras import _messages, _structured_compiled
from agnostic_saliency_keras._common import ModelCallError, input_dtype, is_out_of_memory
from agnostic_saliency_keras._intercept import Interception, LayerRead, contains, intercepted

__all__ = ["gradient", "layer_output", "predict"]


def predict(model: Any, inputs: ModelInputs, options: CallOptions) -> Any:
    """The model's outputs on ``inputs`` (``training=False``), the layer's output
    replaced by ``inputs.layer_values`` where they are given."""
    converted = _converted(model, inputs)
    if inputs.layer is None or inputs.layer_values is None:
        with _model_errors(inputs):
            return _call(model, inputs, converted, options)
    import keras

    found = _checked_layer(model, inputs.layer)
    values = keras.ops.convert_to_tensor(np.asarray(inputs.layer_values))
    with intercepted(Interception(inputs.layer, values)) as interception, _model_errors(inputs):
        outputs = _call(model, inputs, converted, options)
    interception.check(found, _name(model))
    return outputs


def layer_output(model: Any, inputs: ModelInputs) -> np.ndarray:
    """The output of ``inputs.layer`` when ``model`` runs on ``inputs`` (the first
    tensor of a layer that returns a tuple or list)."""
    import keras

    found = _checked_layer(model, inputs.layer)
    converted = _converted(model, inputs)
    with intercepted(Interception(inputs.layer, None)) as interception, _model_errors(inputs):
        try:
            _call(model, inputs, converted, CallOptions())
        except LayerRead:
            pass
    interception.check(found, _name(model))
    return np.asarray(keras.ops.convert_to_numpy(interception.output))


def gradient(model: Any, inputs: ModelInputs, targets: Any, options: CallOptions,
             jit_compile: bool | None = None) -> Any:
    """Gradients by attributed key (NumPy), or the gradient of ``inputs.layer_values``.

    Compiled on Keras' TensorFlow and JAX backends (:mod:`._structured_compiled`),
    eager on PyTorch, and eager where ``model_kwargs`` cannot be hashed or the model
    cannot be traced; the forward pass and score are :func:`total` in every case.
    ``jit_compile``: XLA on TensorFlow, as for one array.
    """
    import keras

    if inputs.layer is not None:
        _checked_layer(model, inputs.layer)
    converted = _converted(model, inputs)
    with _model_errors(inputs):
        if not getattr(model, "built", True):  # create the variables eagerly, not traced
            _call(model, inputs, {key: value[:1] for key, value in converted.items()},
                  CallOptions())
        grads = _structured_compiled.gradients(model, inputs, converted, targets, options,
                                               total, jit_compile)
        if grads is None:
            grads = _eager_gradients(model, inputs, converted, targets, options)
    if inputs.layer is not None:
        values = np.asarray(inputs.layer_values)
        if grads[0] is None:  # the outputs do not depend on the layer
            return np.zeros_like(values)
        return np.asarray(keras.ops.convert_to_numpy(grads[0]))
    return {key: np.zeros(np.shape(value), np.asarray(value).dtype) if grads[key] is None
            else np.asarray(keras.ops.convert_to_numpy(grads[key]))
            for key, value in inputs.values.items() if key in inputs.attributed}


def total(model: Any, inputs: ModelInputs, converted: Mapping[Any, Any], layer_values: Any,
          targets: Any, options: CallOptions) -> Any:
    """The summed score of one forward pass on ``converted`` entries, with the layer's
    output replaced by ``layer_values`` where ``inputs.layer`` is given: run eagerly, or
    traced once into a compiled function (the layer is then intercepted while tracing,
    and its exactly-once checks raise at trace time)."""
    if inputs.layer is None:
        return _score(_call(model, inputs, converted, options), targets)
    with intercepted(Interception(inputs.layer, layer_values)) as interception:
        outputs = _call(model, inputs, converted, options)
    interception.check(contains(model, inputs.layer), _name(model))
    return _score(outputs, targets)


def _eager_gradients(model: Any, inputs: ModelInputs, converted: Mapping[Any, Any],
                     targets: Any, options: CallOptions) -> dict[Any, Any]:
    """The framework's eager gradients, by attributed key or ``{0: layer gradient}``."""
    import keras

    wrt: dict[Any, Any]
    if inputs.layer is not None:
        wrt = {0: keras.ops.convert_to_tensor(np.asarray(inputs.layer_values))}

        def score(given: Mapping[Any, Any]) -> Any:
            return total(model, inputs, converted, given[0], targets, options)
    else:
        wrt = {key: converted[key] for key in inputs.attributed}

        def score(given: Mapping[Any, Any]) -> Any:
            return total(model, inputs, {**converted, **given}, None, targets, options)

    return _GRADIENTS[keras.backend.backend()](score, wrt)


def _score(outputs: Any, targets: Any) -> Any:
    """The summed scores: the outputs at class indices, or weighted by output weights."""
    import keras

    outputs = keras.ops.cast(outputs, "float64" if outputs.dtype == "float64" else "float32")
    target = keras.ops.convert_to_tensor(targets)
    if keras.backend.standardize_dtype(target.dtype).startswith(("int", "uint")):
        picked = keras.ops.take_along_axis(outputs, keras.ops.expand_dims(target, 1), 1)
        return keras.ops.sum(picked)
    return keras.ops.sum(outputs * keras.ops.cast(target, outputs.dtype))


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
        raise ModelCallError(error) from error
    return options.output_selector(outputs) if options.output_selector else outputs


@contextmanager
def _model_errors(inputs: ModelInputs) -> Iterator[None]:
    """The model's own errors (raised eagerly or while tracing) as a ``ValueError``
    naming the caller's shapes."""
    try:
        yield
    except ModelCallError as error:
        shapes = {str(key): tuple(value.shape) for key, value in inputs.values.items()}
        raise ValueError(_messages.structured_model_failed(shapes, error.error)
                         ) from error.error


def _checked_layer(model: Any, layer: Any) -> bool:
    """Whether ``layer`` (a Keras layer, else a clear error) is found among the
    model's nested layers; one inside a custom layer is not found there, and is then
    refused only if it does not run."""
    import keras

    if not isinstance(layer, keras.Layer) or layer is model:
        raise TypeError(_messages.layer_not_in_model(type(layer).__name__, _name(model)))
    if getattr(layer, "mask_zero", False):
        raise TypeError(_messages.layer_with_mask(layer.name))
    return contains(model, layer)


def _name(model: Any) -> str:
    return str(getattr(model, "name", type(model).__name__))


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
