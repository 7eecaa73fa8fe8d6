"""Keras 3: a ResNet-18 and a small ViT as functional models, native code and ours.

Keras fixes its backend when it is imported (``KERAS_BACKEND``), so each backend runs
in its own process; native code is the backend's idiom: a ``tf.function`` with a
``GradientTape`` on TensorFlow, ``jax.jit(jax.grad(...))`` over ``stateless_call`` on
JAX, ``torch.autograd.grad`` on PyTorch. Images are channels-last (Keras' default)
for both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from _real_common import Config

__all__ = ["build", "channels_first", "native", "ours", "versions"]

#: Keras' images are NHWC.
channels_first = False


def versions() -> dict[str, str]:
    """Keras' version and backend, and the backend framework's version."""
    import keras

    backend = keras.backend.backend()
    framework = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    module = __import__(framework)
    return {"keras": keras.__version__, "keras_backend": backend,
            framework: module.__version__}


def build(model: str, config: Config) -> Any:
    """``"resnet18"`` or ``"vit"`` of ``config``'s sizes as a functional ``keras.Model``."""
    import keras

    keras.utils.set_random_seed(0)
    return _resnet(config) if model == "resnet18" else _vit(config)


def _resnet(config: Config) -> Any:
    import keras
    from keras import layers

    def conv_bn(x: Any, width: int, size: int, stride: int, relu: bool = True) -> Any:
        if size > 1:
            x = layers.ZeroPadding2D(size // 2)(x)
        x = layers.Conv2D(width, size, strides=stride, use_bias=False)(x)
        x = layers.BatchNormalization(epsilon=1e-5)(x)
        return layers.ReLU()(x) if relu else x

    inputs = keras.Input((config.image, config.image, 3))
    x = conv_bn(inputs, config.resnet_width, 7, 2)
    x = layers.MaxPooling2D(3, 2)(layers.ZeroPadding2D(1)(x))
    cin = config.resnet_width
    for stage, (cout, count) in enumerate(zip(config.stage_widths, config.blocks, strict=True)):
        for index in range(count):
            stride = 2 if stage and not index else 1
            shortcut = x
            if stride != 1 or cin != cout:
                shortcut = conv_bn(x, cout, 1, stride, relu=False)
            out = conv_bn(conv_bn(x, cout, 3, stride), cout, 3, 1, relu=False)
            x = layers.ReLU()(layers.Add()([out, shortcut]))
            cin = cout
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(config.classes)(x), name="resnet18")


def _vit(config: Config) -> Any:
    import keras
    from keras import layers

    class Tokens(layers.Layer):
        """Prepends a learned class token and adds learned position embeddings."""

        def build(self, input_shape: Any) -> None:
            width = input_shape[-1]
            init = keras.initializers.RandomNormal(stddev=0.02)
            self.cls = self.add_weight(shape=(1, 1, width), initializer=init, name="cls")
            self.position = self.add_weight(shape=(1, input_shape[1] + 1, width),
                                            initializer=init, name="position")

        def call(self, tokens: Any) -> Any:
            cls = keras.ops.broadcast_to(self.cls, (keras.ops.shape(tokens)[0], 1,
                                                    tokens.shape[-1]))
            return keras.ops.concatenate([cls, tokens], axis=1) + self.position

    width = config.vit_width
    inputs = keras.Input((config.image, config.image, 3))
    x = layers.Conv2D(width, config.patch, strides=config.patch)(inputs)
    x = Tokens()(layers.Reshape((config.tokens, width))(x))
    for _ in range(config.vit_depth):
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.MultiHeadAttention(config.heads, width // config.heads)(h, h)
        x = layers.Add()([x, h])
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.Dense(config.mlp, activation="gelu")(h)
        x = layers.Add()([x, layers.Dense(width)(h)])
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    x = layers.Lambda(lambda tokens: tokens[:, 0])(x)
    return keras.Model(inputs, layers.Dense(config.classes)(x), name="vit")


def native(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """The idiomatic input gradient on Keras' backend: ``run() -> (N, H, W)`` maps."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _native_tensorflow(model, x, y)
    if backend == "jax":
        return _native_jax(model, x, y)
    return _native_torch(model, x, y)


def _native_tensorflow(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """One ``tf.function`` with a ``None`` batch axis: tape, gradient, abs, channel max."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *x.shape[1:]), tf.float32),
                 tf.TensorSpec((None,), tf.int64)]

    @tf.function(input_signature=signature)
    def saliency(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(images)
            score = tf.reduce_sum(tf.gather(model(images, training=False), labels,
                                            batch_dims=1))
        return tf.reduce_max(tf.abs(tape.gradient(score, images)), axis=-1)

    return lambda: saliency(x, y).numpy()


def _native_jax(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """``jax.jit`` of ``jax.grad`` over ``model.stateless_call``, the variables as arguments."""
    import jax
    import jax.numpy as jnp

    trainable = [variable.value for variable in model.trainable_variables]
    non_trainable = [variable.value for variable in model.non_trainable_variables]

    @jax.jit
    def saliency(trainable: Any, non_trainable: Any, images: Any, labels: Any) -> Any:
        def score(images: Any) -> Any:
            outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
            return jnp.take_along_axis(outputs, labels[:, None], axis=1).sum()

        return jnp.abs(jax.grad(score)(images)).max(axis=-1)

    return lambda: np.asarray(saliency(trainable, non_trainable, x, y))


def _native_torch(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """``torch.autograd.grad`` on a leaf, backward from one-hot rows of the labels."""
    import torch

    rows = torch.from_numpy(y)[:, None]

    def run() -> np.ndarray:
        leaf = torch.from_numpy(x).requires_grad_(True)
        outputs = model(leaf, training=False)
        one_hot = torch.zeros_like(outputs).scatter_(1, rows, 1.0)
        (grad,) = torch.autograd.grad(outputs, leaf, grad_outputs=one_hot)
        return grad.abs().amax(dim=-1).numpy()

    return run


def ours(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """``Saliency(model).explain(x, y)`` with its defaults."""
    from agnostic_saliency import Saliency

    explainer = Saliency(model)
    return lambda: explainer.explain(x, y)
