"""Build a :class:`ModelSpec` in each supported framework, from the same NumPy weights.

Used by our conformance tests, the cross-framework tests, the demo and the
benchmarks. Every framework is imported inside the function that needs it.
PyTorch models consume channels-first images (pass a spec made with
``layout="channels_first"``); the others consume channels-last images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from agnostic_saliency.testing.models import (
    Conv2D,
    Dense,
    Flatten,
    GlobalAveragePool,
    ModelSpec,
    Tanh,
)

__all__ = [
    "BUILDERS",
    "build_jax_function",
    "build_keras",
    "build_tensorflow",
    "build_tensorflow_function",
    "build_torch",
]


def build_torch(spec: ModelSpec) -> Any:
    """``spec`` as a ``torch.nn.Sequential`` in eval mode, in the weights' dtype."""
    import torch

    layers: list[Any] = []
    for layer in spec.layers:
        if isinstance(layer, Dense):
            fan_in, fan_out = layer.weight.shape
            linear = torch.nn.Linear(fan_in, fan_out, dtype=_torch_dtype(layer.weight))
            _assign(linear, layer.weight.T, layer.bias)
            layers.append(linear)
        elif isinstance(layer, Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            conv = torch.nn.Conv2d(cin, cout, (kh, kw), dtype=_torch_dtype(layer.kernel))
            _assign(conv, layer.kernel.transpose(3, 2, 0, 1), layer.bias)
            layers.append(conv)
        elif isinstance(layer, Tanh):
            layers.append(torch.nn.Tanh())
        elif isinstance(layer, Flatten):
            layers.append(torch.nn.Flatten())
        elif isinstance(layer, GlobalAveragePool):
            layers.extend([torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()])
    return torch.nn.Sequential(*layers).eval()


def _torch_dtype(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.zeros(0, dtype=array.dtype)).dtype


def _assign(module: Any, weight: np.ndarray, bias: np.ndarray) -> None:
    import torch

    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        module.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))


def build_keras(spec: ModelSpec, dropout: float | None = None) -> Any:
    """``spec`` as a channels-last ``keras.Sequential`` in the weights' dtype.

    Parameters
    ----------
    spec
        A zoo model for the ``"channels_last"`` layout.
    dropout
        Rate of a ``Dropout`` layer put after every ``tanh``; ``None`` for none. At
        ``training=False`` it is the identity, so the function is unchanged.
    """
    import keras

    dtype = next(str(layer.bias.dtype) for layer in spec.layers
                 if isinstance(layer, (Dense, Conv2D)))
    model = keras.Sequential([keras.Input(spec.input_shape, dtype=dtype)])
    for layer in spec.layers:
        if isinstance(layer, Dense):
            dense = keras.layers.Dense(layer.weight.shape[1], dtype=dtype)
            model.add(dense)
            dense.set_weights([layer.weight, layer.bias])
        elif isinstance(layer, Conv2D):
            kh, kw, _, cout = layer.kernel.shape
            conv = keras.layers.Conv2D(cout, (kh, kw), padding="valid",
                                       data_format="channels_last", dtype=dtype)
            model.add(conv)
            conv.set_weights([layer.kernel, layer.bias])
        elif isinstance(layer, Tanh):
            model.add(keras.layers.Activation("tanh", dtype=dtype))
            if dropout is not None:
                model.add(keras.layers.Dropout(dropout, dtype=dtype))
        elif isinstance(layer, Flatten):
            model.add(keras.layers.Flatten(dtype=dtype))
        elif isinstance(layer, GlobalAveragePool):
            model.add(keras.layers.GlobalAveragePooling2D(data_format="channels_last",
                                                          dtype=dtype))
    return model


def build_tensorflow(spec: ModelSpec) -> Any:
    """``spec`` as a ``tf.Module`` holding ``tf.Variable`` weights (channels-last); it
    pickles, as a user's module class defined at a module's top level does."""
    return _zoo_module_class()(spec)


def _zoo_module_class() -> type:
    """The ``tf.Module`` class of :func:`build_tensorflow`, made on first use (importing
    TensorFlow) and found by pickle as this module's ``ZooModule``."""
    if "ZooModule" in globals():
        return globals()["ZooModule"]
    import tensorflow as tf

    class ZooModule(tf.Module):  # type: ignore[misc]
        def __init__(self, spec: ModelSpec) -> None:
            super().__init__(name=f"zoo_{spec.name}")
            self.spec = spec
            self.weights = [_tf_weights(layer, tf.Variable) for layer in spec.layers]

        def __call__(self, x: Any) -> Any:
            return _tf_forward(self.spec, self.weights, x)

    ZooModule.__module__, ZooModule.__qualname__ = __name__, "ZooModule"
    globals()["ZooModule"] = ZooModule
    return ZooModule


def __getattr__(name: str) -> Any:
    if name == "ZooModule":  # pickle looks the class up by name
        return _zoo_module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_tensorflow_function(spec: ModelSpec) -> Callable[[Any], Any]:
    """``spec`` as a plain Python function of TensorFlow ops over constant weights."""
    import tensorflow as tf

    weights = [_tf_weights(layer, tf.constant) for layer in spec.layers]
    return lambda x: _tf_forward(spec, weights, x)


def _tf_weights(layer: object, make: Callable[[np.ndarray], Any]) -> tuple[Any, ...]:
    if isinstance(layer, Dense):
        return (make(layer.weight), make(layer.bias))
    if isinstance(layer, Conv2D):
        return (make(layer.kernel), make(layer.bias))  # already (kh, kw, in, out)
    return ()


def _tf_forward(spec: ModelSpec, weights: list[tuple[Any, ...]], x: Any) -> Any:
    import tensorflow as tf

    for layer, values in zip(spec.layers, weights, strict=True):
        if isinstance(layer, Dense):
            x = tf.matmul(x, values[0]) + values[1]
        elif isinstance(layer, Conv2D):
            x = tf.nn.conv2d(x, values[0], strides=1, padding="VALID") + values[1]
        elif isinstance(layer, Tanh):
            x = tf.tanh(x)
        elif isinstance(layer, Flatten):
            x = tf.reshape(x, (tf.shape(x)[0], -1))
        else:
            x = tf.reduce_mean(x, axis=(1, 2))
    return x


def build_jax_function(spec: ModelSpec) -> Callable[[Any], Any]:
    """``spec`` as a plain JAX function closing over ``jnp`` weights (channels-last)."""
    import jax
    import jax.numpy as jnp

    params = [[jnp.asarray(value) for value in vars(layer).values()] for layer in spec.layers]

    def forward(x: Any) -> Any:
        for layer, values in zip(spec.layers, params, strict=True):
            if isinstance(layer, Dense):
                x = x @ values[0] + values[1]
            elif isinstance(layer, Conv2D):
                x = jax.lax.conv_general_dilated(
                    x, values[0], (1, 1), "VALID",
                    dimension_numbers=("NHWC", "HWIO", "NHWC")) + values[1]
            elif isinstance(layer, Tanh):
                x = jnp.tanh(x)
            elif isinstance(layer, Flatten):
                x = x.reshape(x.shape[0], -1)
            else:
                x = x.mean(axis=(1, 2))
        return x

    return forward


#: Framework name -> (builder, input layout, ``backend=`` to pass or None to detect).
BUILDERS: dict[str, tuple[Callable[[ModelSpec], Any], str, str | None]] = {
    "torch": (build_torch, "channels_first", None),
    "tensorflow": (build_tensorflow, "channels_last", None),
    "keras": (build_keras, "channels_last", None),
    "jax": (build_jax_function, "channels_last", "jax"),
}
