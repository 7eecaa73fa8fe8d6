"""JAX models built from the zoo's :class:`ModelSpec` (channels last), for the JAX
conformance runs: a plain function closing over jnp weights, a Flax NNX module of real
``nnx.Linear``/``nnx.Conv`` layers and an Equinox module, plus embedding models of the
latter two for the ``layer=`` check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agnostic_saliency.testing import ModelSpec
from agnostic_saliency.testing.models import Conv2D, Dense, Flatten, GlobalAveragePool, Tanh


def _flatten(x: Any) -> Any:
    return x.reshape(x.shape[0], -1)


def _pool(x: Any) -> Any:
    return x.mean(axis=(1, 2))


def _tanh(x: Any) -> Any:
    return jnp.tanh(x)  # a function of this module pickles; jnp.tanh itself does not


def _apply(kinds: tuple[str, ...], params: list[Any], x: Any) -> Any:
    for kind, weights in zip(kinds, params, strict=True):
        if kind == "dense":
            x = x @ weights[0] + weights[1]
        elif kind == "conv":
            x = jax.lax.conv_general_dilated(x, weights[0], (1, 1), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            x = x + weights[1]
        else:
            x = {"tanh": jnp.tanh, "flatten": _flatten, "pool": _pool}[kind](x)
    return x


def kinds_and_params(spec: ModelSpec) -> tuple[tuple[str, ...], list[Any]]:
    names = {Dense: "dense", Conv2D: "conv", Tanh: "tanh", Flatten: "flatten",
             GlobalAveragePool: "pool"}
    kinds = tuple(names[type(layer)] for layer in spec.layers)
    params = [[jnp.asarray(value) for value in vars(layer).values()] for layer in spec.layers]
    return kinds, params


def build_function(spec: ModelSpec) -> Callable[[Any], Any]:
    """A plain function closing over jnp weights."""
    kinds, params = kinds_and_params(spec)
    return lambda x: _apply(kinds, params, x)


def build_nnx(spec: ModelSpec) -> Any:
    """An ``nnx.Sequential`` of ``nnx.Linear``/``nnx.Conv`` layers holding the spec's weights."""
    rngs, layers = nnx.Rngs(0), []
    for layer in spec.layers:
        if isinstance(layer, (Dense, Conv2D)):
            kernel, bias = vars(layer).values()
            init = {"kernel_init": _constant(kernel), "bias_init": _constant(bias),
                    "param_dtype": kernel.dtype, "rngs": rngs}
            if isinstance(layer, Dense):
                layers.append(nnx.Linear(*kernel.shape, **init))
            else:
                layers.append(nnx.Conv(*kernel.shape[2:], kernel.shape[:2], padding="VALID",
                                       **init))
        else:
            layers.append({Tanh: _tanh, Flatten: _flatten,
                           GlobalAveragePool: _pool}[type(layer)])
    return nnx.Sequential(*layers)


def _constant(value: np.ndarray) -> Callable[..., Any]:
    """An initializer returning ``value`` (no random draw to compile)."""
    return lambda key, shape, dtype: jnp.asarray(value, dtype=dtype)


class SpecModule(eqx.Module):
    """An Equinox module applying the spec's layers to a batch."""

    params: list[Any]
    kinds: tuple[str, ...] = eqx.field(static=True)

    def __call__(self, x: Any) -> Any:
        return _apply(self.kinds, self.params, x)


def build_equinox(spec: ModelSpec) -> Any:
    kinds, params = kinds_and_params(spec)
    return SpecModule(params, kinds)


BUILDERS = {"function": build_function, "nnx": build_nnx, "equinox": build_equinox}


class NnxEmbedded(nnx.Module):
    """``nnx.Embed`` holding a table, flattened into a spec's NNX layers."""

    def __init__(self, spec: ModelSpec, table: np.ndarray) -> None:
        self.embed = nnx.Embed(*table.shape, embedding_init=_constant(table), rngs=nnx.Rngs(0))
        self.head = build_nnx(spec)

    def __call__(self, ids: Any) -> Any:
        return self.head(_flatten(self.embed(ids)))


class EqxLookup(eqx.Module):
    table: Any

    def __call__(self, ids: Any) -> Any:
        return self.table[ids]


class EqxEmbedded(eqx.Module):
    """An Equinox lookup of a table's rows, flattened into a spec's layers."""

    embed: EqxLookup
    head: SpecModule

    def __call__(self, ids: Any) -> Any:
        return self.head(_flatten(self.embed(ids)))
