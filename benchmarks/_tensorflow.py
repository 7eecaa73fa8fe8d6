"""TensorFlow contenders: a Keras 3 model and a ``tf.Module``; native code, Xplique, PAIR.

Keras runs on its TensorFlow backend (``KERAS_BACKEND=tensorflow``, set by ``run.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _harness import Case, Contender, version, weights

__all__ = ["build_keras", "build_module", "contenders", "versions"]


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "keras_backend": keras.backend.backend(), "xplique": version("xplique"),
            "saliency": version("saliency")}


def build_keras(model: str) -> Any:
    """The benchmark model as a functional Keras 3 model with the shared seeded weights."""
    import keras

    spec = weights(model)
    inputs = keras.Input((64, 64, 3) if spec.convs else (784,))
    hidden = inputs
    layers = []
    for kernel, _, stride in spec.convs:
        layers.append(keras.layers.Conv2D(kernel.shape[3], 3, strides=stride, activation="relu"))
        hidden = layers[-1](hidden)
    if spec.convs:
        hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    for index, (kernel, _) in enumerate(spec.dense):
        last = index == len(spec.dense) - 1
        layers.append(keras.layers.Dense(kernel.shape[1], activation=None if last else "relu"))
        hidden = layers[-1](hidden)
    for layer, (kernel, bias, *_) in zip(layers, (*spec.convs, *spec.dense), strict=True):
        layer.set_weights([kernel, bias])
    return keras.Model(inputs, hidden)


def build_module(model: str) -> Any:
    """The benchmark model as a plain ``tf.Module`` of ``tf.nn`` ops, same weights."""
    import tensorflow as tf

    spec = weights(model)

    class Network(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kernels = [tf.Variable(kernel) for kernel, _, _ in spec.convs]
            self.conv_biases = [tf.Variable(bias) for _, bias, _ in spec.convs]
            self.strides = tuple(stride for _, _, stride in spec.convs)
            self.weights = [tf.Variable(kernel) for kernel, _ in spec.dense]
            self.biases = [tf.Variable(bias) for _, bias in spec.dense]

        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            for kernel, bias, stride in zip(self.kernels, self.conv_biases, self.strides,
                                            strict=True):
                x = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, kernel, stride, "VALID"), bias))
            if self.kernels:
                x = tf.reduce_mean(x, axis=(1, 2))
            for index, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
                x = tf.matmul(x, weight) + bias
                if index < len(self.weights) - 1:
                    x = tf.nn.relu(x)
            return x

    return Network()


def contenders(case: Case, kind: str) -> list[Contender]:
    """Contenders for a Keras model (``kind="keras"``) or a ``tf.Module`` (``"tensorflow"``)."""
    import agnostic_saliency_keras
    import agnostic_saliency_tensorflow

    from agnostic_saliency import Saliency

    x, y = case.inputs()
    model = build_keras(case.model) if kind == "keras" else build_module(case.model)
    image = x.ndim == 4
    call = (lambda inputs: model(inputs, training=False)) if kind == "keras" else model

    found = []
    for jit in (False, True):
        function = _native(call, x.shape[1:], image, jit)
        found.append(Contender(f"native{' (XLA)' if jit else ''}",
                               lambda function=function: function(x, y).numpy(),
                               traces=function.experimental_get_tracing_count,
                               note="tf.function(jit_compile=True)" if jit else "tf.function"))
    explainer = Saliency(model)
    counter = (agnostic_saliency_keras.trace_count if kind == "keras"
               else agnostic_saliency_tensorflow.trace_count)
    found.append(Contender("agnostic-saliency", lambda: explainer.explain(x, y), traces=counter))
    if kind == "keras":
        found += _xplique(model, x, y)
        found += _pair(model, x, y, image)
    return found


def _native(call: Any, sample_shape: tuple[int, ...], image: bool, jit: bool) -> Any:
    """One ``tf.function`` with a ``None`` batch axis: tape, gradient, abs, channel max."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *sample_shape), tf.float32),
                 tf.TensorSpec((None,), tf.int64)]

    @tf.function(input_signature=signature, jit_compile=jit)
    def saliency(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.reduce_sum(tf.gather(call(x), y, batch_dims=1))
        grad = tf.abs(tape.gradient(score, x))
        return tf.reduce_max(grad, axis=-1) if image else grad

    return saliency


def _xplique(model: Any, x: np.ndarray, y: np.ndarray) -> list[Contender]:
    if not version("xplique"):
        return []
    from xplique.attributions import Saliency as XpliqueSaliency

    one_hot = np.eye(10, dtype=np.float32)[y]
    found = []
    for batch_size, name in ((None, "xplique"), (32, "xplique (batch_size=32, its default)")):
        explainer = XpliqueSaliency(model, batch_size=batch_size)
        found.append(Contender(
            name, lambda explainer=explainer: explainer.explain(x, one_hot).numpy(),
            note="one-hot targets made outside the timing"))
    return found


def _pair(model: Any, x: np.ndarray, y: np.ndarray, image: bool) -> list[Contender]:
    """PAIR's GradientSaliency, per sample, with the eager call_model_function of its examples."""
    if not version("saliency"):
        return []
    import saliency.core as pair
    import tensorflow as tf

    def call_model(images: np.ndarray, call_model_args: Any = None,
                   expected_keys: Any = None) -> dict[str, np.ndarray]:
        images = tf.convert_to_tensor(images)
        with tf.GradientTape() as tape:
            tape.watch(images)
            outputs = model(images, training=False)[:, call_model_args["class"]]
        return {pair.INPUT_OUTPUT_GRADIENTS: tape.gradient(outputs, images).numpy()}

    method = pair.GradientSaliency()

    def run() -> np.ndarray:
        masks = np.abs(np.stack([method.GetMask(sample, call_model, {"class": int(target)})
                                 for sample, target in zip(x, y, strict=True)]))
        return masks.max(axis=-1) if image else masks

    return [Contender("PAIR saliency", run, note="GradientSaliency.GetMask per sample, eager")]
