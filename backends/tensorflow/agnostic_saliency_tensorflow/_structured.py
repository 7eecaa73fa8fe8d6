"""Several inputs and side inputs of TensorFlow models, run eagerly.

A structured call (:class:`agnostic_saliency._structure.ModelInputs`) runs the model
as ``model(*args, **kwargs)``: a tuple or list positionally, a dict as keywords,
``model_kwargs`` as constant keywords. The attributed entries are converted to the
model's compute dtype and watched by a ``tf.GradientTape``; side inputs (token ids,
masks) are passed as they are and never differentiated. Layers (``layer=``) are not
supported for ``tf.Module`` models: explain a Keras model, or pass the layer's
output as an input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.backend import CallOptions
from agnostic_saliency_tensorflow import _messages

__all__ = ["gradient", "predict"]


def _converted(inputs: ModelInputs, compute: Callable[[Any], Any]) -> dict[Any, Any]:
    import tensorflow as tf

    converted = {}
    for key, value in inputs.values.items():
        tensor = tf.convert_to_tensor(value)
        converted[key] = tf.cast(tensor, compute(tensor.dtype)) if value.dtype.kind == "f" \
            else tensor
    return converted


def _call(model: Any, inputs: ModelInputs, converted: Mapping[Any, Any],
          options: CallOptions) -> Any:
    args, kwargs = inputs.arguments(converted)
    try:
        outputs = model(*args, **kwargs)
    except Exception as error:
        shapes = {str(key): tuple(value.shape) for key, value in inputs.values.items()}
        raise ValueError(_messages.structured_model_failed(shapes, error)) from error
    return options.output_selector(outputs) if options.output_selector else outputs


def predict(model: Any, inputs: ModelInputs, options: CallOptions,
            compute: Callable[[Any], Any]) -> Any:
    """The model's (selected) outputs on ``inputs``."""
    return _call(model, inputs, _converted(inputs, compute), options)


def gradient(model: Any, inputs: ModelInputs, targets: Any, options: CallOptions,
             compute: Callable[[Any], Any]) -> dict[Any, np.ndarray]:
    """Gradients of the summed scores by attributed key (zeros where disconnected)."""
    import tensorflow as tf

    converted = _converted(inputs, compute)
    wrt = [converted[key] for key in inputs.attributed]
    with tf.GradientTape() as tape:
        for value in wrt:
            tape.watch(value)
        outputs = _call(model, inputs, converted, options)
        if not tf.is_tensor(outputs):
            from agnostic_saliency import messages

            raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
        outputs = tf.cast(outputs, tf.float64 if outputs.dtype == tf.float64 else tf.float32)
        target = np.asarray(targets)
        if target.dtype.kind in "iu":
            total = tf.reduce_sum(tf.gather(outputs, target[:, None], batch_dims=1))
        else:
            total = tf.reduce_sum(outputs * tf.cast(target, outputs.dtype))
    grads = tape.gradient(total, wrt)
    return {key: np.zeros(inputs.values[key].shape, inputs.values[key].dtype) if grad is None
            else np.asarray(grad.numpy())
            for key, grad in zip(inputs.attributed, grads, strict=True)}
