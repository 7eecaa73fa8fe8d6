"""Small models and data shared by the metric and sanity-check tests."""

from __future__ import annotations

import numpy as np

from agnostic_saliency.testing.models import (
    Conv2D,
    Dense,
    GlobalAveragePool,
    ModelSpec,
    Tanh,
)

N, SIZE, CHANNELS, CLASSES = 8, 8, 3, 5


def image_spec(seed: int = 0) -> ModelSpec:
    """conv 3x3 (3 -> 6), tanh, conv 3x3 (6 -> 4), tanh, global mean, dense (4 -> 5),
    for channels-last 8x8x3 images; float32."""
    rng = np.random.default_rng(seed)
    layers = (
        Conv2D(rng.normal(0, 0.5, (3, 3, CHANNELS, 6)), rng.normal(0, 0.1, 6)),
        Tanh(),
        Conv2D(rng.normal(0, 0.4, (3, 3, 6, 4)), rng.normal(0, 0.1, 4)),
        Tanh(),
        GlobalAveragePool(),
        Dense(rng.normal(0, 1.0, (4, CLASSES)), rng.normal(0, 0.1, CLASSES)),
    )
    return ModelSpec("metrics_cnn", layers, (SIZE, SIZE, CHANNELS)).cast(np.float32)


def linear_spec(seed: int = 0, features: int = 12) -> ModelSpec:
    """One dense layer (features -> 3) for vector inputs; float32."""
    rng = np.random.default_rng(seed)
    return ModelSpec("metrics_linear", (Dense(rng.normal(0, 1, (features, 3)),
                                              rng.normal(0, 0.1, 3)),),
                     (features,)).cast(np.float32)


def images(seed: int = 1) -> np.ndarray:
    """N channels-last images in [0, 1), float32."""
    return np.random.default_rng(seed).uniform(size=(N, SIZE, SIZE, CHANNELS)).astype(np.float32)


def pixel_maps(seed: int = 2) -> np.ndarray:
    """N maps (N, H, W) without ties."""
    return np.random.default_rng(seed).normal(size=(N, SIZE, SIZE))


def targets() -> np.ndarray:
    return np.arange(N) % CLASSES


def build_nnx(spec: ModelSpec) -> object:
    """``spec`` (convolutions, tanh, global mean, dense) as a Flax NNX module whose
    parameters are the spec's weights (NNX's layouts are the canonical ones)."""
    import jax.numpy as jnp
    from flax import nnx

    layers: list[object] = []
    rngs = nnx.Rngs(0)
    for layer in spec.layers:
        if isinstance(layer, Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            module = nnx.Conv(cin, cout, (kh, kw), padding="VALID", rngs=rngs)
            module.kernel.value, module.bias.value = (jnp.asarray(layer.kernel),
                                                      jnp.asarray(layer.bias))
            layers.append(module)
        elif isinstance(layer, Dense):
            dense = nnx.Linear(*layer.weight.shape, rngs=rngs)
            dense.kernel.value, dense.bias.value = (jnp.asarray(layer.weight),
                                                    jnp.asarray(layer.bias))
            layers.append(dense)
        elif isinstance(layer, Tanh):
            layers.append(jnp.tanh)
        else:
            layers.append(_global_mean)
    return nnx.Sequential(*layers)


def _global_mean(x: object) -> object:
    return x.mean(axis=(1, 2))  # type: ignore[attr-defined]
