"""Small models described by NumPy weights, with exact forward and backward passes.

A :class:`ModelSpec` is a sequence of layers from a tiny vocabulary (dense,
convolution, tanh, flatten, global average pooling). A backend author builds the
same layers in their framework; the suite compares the backend's gradients with
the exact ones computed here.

Conventions every factory follows:

- :class:`Conv2D` is a cross-correlation with ``"valid"`` padding and stride 1;
  its kernel is stored as ``(kh, kw, in, out)`` (TensorFlow/Keras/JAX layout;
  PyTorch wants ``kernel.transpose(3, 2, 0, 1)``).
- :class:`Dense` computes ``x @ weight + bias`` with ``weight`` of shape ``(in, out)``
  (PyTorch's ``nn.Linear.weight`` is ``weight.T``).
- A spec made for the ``"channels_first"`` layout already has the rows of a dense
  layer after :class:`Flatten` permuted to the ``(C, H, W)`` flattening order, so a
  factory builds every layer as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

__all__ = [
    "SPEC_NAMES",
    "Conv2D",
    "Dense",
    "Flatten",
    "GlobalAveragePool",
    "Layer",
    "ModelSpec",
    "Tanh",
    "load_spec",
    "make_spec",
    "save_spec",
]

Layout = Literal["channels_last", "channels_first"]


@dataclass(frozen=True)
class Dense:
    weight: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class Conv2D:
    kernel: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class Tanh:
    pass


@dataclass(frozen=True)
class Flatten:
    pass


@dataclass(frozen=True)
class GlobalAveragePool:
    """Mean over the two spatial axes."""


Layer = Dense | Conv2D | Tanh | Flatten | GlobalAveragePool


@dataclass(frozen=True)
class ModelSpec:
    """A model as layers with NumPy weights, for inputs of ``input_shape`` per sample.

    ``input_shape`` is given in the spec's ``layout``; ``canonical_shape`` is the
    channels-last shape every reference computation uses.
    """

    name: str
    layers: tuple[Layer, ...]
    canonical_shape: tuple[int, ...]
    layout: Layout = "channels_last"

    @property
    def is_image(self) -> bool:
        return len(self.canonical_shape) == 3

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.is_image and self.layout == "channels_first":
            height, width, channels = self.canonical_shape
            return (channels, height, width)
        return self.canonical_shape

    def dense(self, index: int) -> Dense:
        """The layer at ``index``, which must be a :class:`Dense` layer."""
        layer = self.layers[index]
        if not isinstance(layer, Dense):
            raise TypeError(f"layer {index} of {self.name!r} is {type(layer).__name__}, not Dense")
        return layer

    @property
    def n_outputs(self) -> int:
        last = [layer for layer in self.layers if isinstance(layer, Dense)][-1]
        return int(last.weight.shape[1])

    def for_layout(self, layout: Layout) -> ModelSpec:
        """The same function for inputs in ``layout``."""
        if layout == self.layout or not self.is_image:
            return replace(self, layout=layout)
        layers = list(self.layers)
        for index, layer in enumerate(layers[:-1]):
            after = layers[index + 1]
            if isinstance(layer, Flatten) and isinstance(after, Dense):
                shape = _shape_before(self, index)
                layers[index + 1] = Dense(_permute_rows(after.weight, shape), after.bias)
        return ModelSpec(self.name, tuple(layers), self.canonical_shape, layout)

    def cast(self, dtype: np.dtype | type) -> ModelSpec:
        """The same spec with every weight in ``dtype``."""
        layers = tuple(
            type(layer)(*(np.asarray(value, dtype=dtype) for value in vars(layer).values()))
            for layer in self.layers
        )
        return replace(self, layers=layers)


def _shape_before(spec: ModelSpec, index: int) -> tuple[int, ...]:
    height, width, channels = spec.canonical_shape
    for layer in spec.layers[:index]:
        if isinstance(layer, Conv2D):
            kh, kw, _, channels = layer.kernel.shape
            height, width = height - kh + 1, width - kw + 1
    return (height, width, channels)


def _permute_rows(weight: np.ndarray, hwc: tuple[int, ...]) -> np.ndarray:
    """Rows ordered for flattening (C, H, W) instead of (H, W, C)."""
    height, width, channels = hwc
    rows = weight.reshape(height, width, channels, -1).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(rows.reshape(height * width * channels, -1))


# --- files ------------------------------------------------------------------------------

_LAYER_TYPES: dict[str, type] = {
    "Dense": Dense, "Conv2D": Conv2D, "Tanh": Tanh, "Flatten": Flatten,
    "GlobalAveragePool": GlobalAveragePool,
}


def save_spec(spec: ModelSpec, path: str, **extra: np.ndarray) -> None:
    """Write a channels-last ``spec`` (and ``extra`` arrays) to an ``.npz`` file."""
    arrays: dict[str, np.ndarray] = {
        "name": np.array(spec.name),
        "canonical_shape": np.array(spec.canonical_shape),
        "layers": np.array([type(layer).__name__ for layer in spec.layers]),
    }
    for index, layer in enumerate(spec.layers):
        for key, value in vars(layer).items():
            arrays[f"layer{index}_{key}"] = value
    arrays.update({f"extra_{key}": value for key, value in extra.items()})
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load_spec(path: Any) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """Read a file written by :func:`save_spec`: the spec and its extra arrays."""
    with np.load(path, allow_pickle=False) as data:
        layers = []
        for index, kind in enumerate(data["layers"]):
            cls = _LAYER_TYPES[str(kind)]
            fields = [data[f"layer{index}_{field.name}"] for field in dataclasses.fields(cls)]
            layers.append(cls(*fields))
        spec = ModelSpec(str(data["name"]), tuple(layers),
                         tuple(int(v) for v in data["canonical_shape"]))
        extra = {key[len("extra_"):]: data[key] for key in data.files if key.startswith("extra_")}
    return spec, extra


# --- the zoo ----------------------------------------------------------------------------


def _dense(rng: np.random.Generator, fan_in: int, fan_out: int) -> Dense:
    weight = rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=(fan_in, fan_out))
    return Dense(weight, rng.normal(0.0, 0.1, size=fan_out))


def _conv(rng: np.random.Generator, size: int, fan_in: int, fan_out: int) -> Conv2D:
    kernel = rng.normal(0.0, 1.0 / np.sqrt(size * size * fan_in), size=(size, size, fan_in,
                                                                         fan_out))
    return Conv2D(kernel, rng.normal(0.0, 0.1, size=fan_out))


def _linear_vector(rng: np.random.Generator) -> ModelSpec:
    return ModelSpec("linear_vector", (_dense(rng, 7, 4),), (7,))


def _linear_image(rng: np.random.Generator) -> ModelSpec:
    return ModelSpec("linear_image", (Flatten(), _dense(rng, 6 * 5 * 3, 4)), (6, 5, 3))


def _regression(rng: np.random.Generator) -> ModelSpec:
    return ModelSpec("regression", (_dense(rng, 5, 1),), (5,))


def _mlp(rng: np.random.Generator) -> ModelSpec:
    layers = (_dense(rng, 6, 8), Tanh(), _dense(rng, 8, 3))
    return ModelSpec("mlp", layers, (6,))


def _cnn(rng: np.random.Generator) -> ModelSpec:
    layers = (_conv(rng, 3, 3, 4), Tanh(), GlobalAveragePool(), _dense(rng, 4, 3))
    return ModelSpec("cnn", layers, (7, 6, 3))


def _cnn_flatten(rng: np.random.Generator) -> ModelSpec:
    layers = (_conv(rng, 2, 2, 3), Tanh(), Flatten(), _dense(rng, 4 * 3 * 3, 3))
    return ModelSpec("cnn_flatten", layers, (5, 4, 2))


def _wide_channels(rng: np.random.Generator) -> ModelSpec:
    """Eight channels on a 3 x 3 image: in either layout the default channel axis is
    larger than the other candidate (3), so the frontend asks for ``channel_axis=``."""
    layers = (_conv(rng, 2, 8, 4), Tanh(), GlobalAveragePool(), _dense(rng, 4, 3))
    return ModelSpec("wide_channels", layers, (3, 3, 8))


_BUILDERS = {
    "linear_vector": _linear_vector,
    "linear_image": _linear_image,
    "regression": _regression,
    "mlp": _mlp,
    "cnn": _cnn,
    "cnn_flatten": _cnn_flatten,
    "wide_channels": _wide_channels,
}
SPEC_NAMES = tuple(_BUILDERS)


def make_spec(name: str, layout: Layout = "channels_last", dtype: type = np.float32,
              seed: int = 0) -> ModelSpec:
    """Build the zoo model ``name`` with seeded weights in ``dtype`` for ``layout``."""
    spec = _BUILDERS[name](np.random.default_rng(seed))
    return spec.cast(dtype).for_layout(layout)
