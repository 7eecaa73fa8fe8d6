"""An up-cast (float32 inputs to a float64 model) loses nothing: no warning, and no
error under ``strict=True``; a down-cast still warns (issue: real models)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from agnostic_saliency import Saliency, SaliencyWarning

W = np.random.default_rng(0).normal(size=(4, 3))


def _torch_model(dtype: str) -> object:
    import torch

    model = torch.nn.Linear(4, 3, bias=False).to(getattr(torch, dtype))
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(W.T.copy()))
    return model.eval()


def _jax_model(dtype: str) -> object:
    import jax
    import jax.numpy as jnp

    weights = jnp.asarray(W, dtype=dtype)
    return jax.jit(lambda x: x @ weights)


def _keras_model(dtype: str) -> object:
    import keras

    layer = keras.layers.Dense(3, use_bias=False, dtype=dtype)
    model = keras.Sequential([keras.Input((4,)), layer])
    layer.set_weights([W.astype(dtype)])
    return model


@pytest.mark.parametrize("make", [_torch_model, _jax_model, _keras_model],
                         ids=["torch", "jax", "keras"])
def test_an_up_cast_passes_strict_and_a_down_cast_warns(make: object) -> None:
    import jax

    x = np.random.default_rng(1).normal(size=(5, 4))
    expected = np.abs(np.broadcast_to(W[:, 1], x.shape))
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error", SaliencyWarning)
        model = make("float64")  # type: ignore[operator]
        backend = "jax" if make is _jax_model else None
        maps = Saliency(model, backend=backend, strict=True).explain(x.astype(np.float32), 1)
        np.testing.assert_allclose(maps, expected, rtol=1e-6)
    if make is not _jax_model:  # JAX computes float32 inputs as they are
        with pytest.warns(SaliencyWarning, match="lower precision"):
            Saliency(make("float32")).explain(x, 1)  # type: ignore[operator]
