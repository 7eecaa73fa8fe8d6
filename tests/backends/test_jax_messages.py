"""Messages for JAX models written the way their libraries teach (issue 25 item 12).

An Equinox module written for one sample fails on a batch: the message says how to
map it over the batch, and the fix it names gives the exact per-sample gradients.
A Flax Linen module holds no parameters: the message shows how to bind them, and
the binding it shows works.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from agnostic_saliency import Saliency

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
eqx = pytest.importorskip("equinox")
linen = pytest.importorskip("flax.linen")


def _inputs() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


def _per_sample_gradient(function: object, x: np.ndarray, target: int) -> np.ndarray:
    """``d f(x_i)[target] / d x_i`` for each sample, with ``jax.grad`` of one sample."""
    grad = jax.vmap(jax.grad(lambda sample: function(sample)[target]))  # type: ignore[operator]
    return np.asarray(grad(jnp.asarray(x)))


def test_per_sample_equinox_module_gets_the_vmap_hint_and_the_hint_works() -> None:
    mlp = eqx.nn.MLP(4, 3, 8, 2, key=jax.random.PRNGKey(0))
    x = _inputs()
    with pytest.raises(ValueError, match=r"one sample.*eqx\.filter_vmap\(model\).*jax\.vmap"):
        Saliency(mlp).explain(x, 1)
    expected = _per_sample_gradient(mlp, x, 1)
    mapped = Saliency(eqx.filter_vmap(mlp), reducer=None, absolute=False).explain(x, 1)
    np.testing.assert_allclose(mapped, expected, rtol=1e-6, atol=1e-7)
    vmapped = Saliency(jax.vmap(mlp), backend="jax", reducer=None, absolute=False).explain(x, 1)
    np.testing.assert_allclose(vmapped, expected, rtol=1e-6, atol=1e-7)


class _Dense(linen.Module):
    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return linen.Dense(3)(jnp.tanh(x))


@pytest.mark.parametrize("backend", [None, "jax"])
def test_flax_linen_module_is_refused_with_the_binding_that_works(backend: str | None) -> None:
    module, x = _Dense(), _inputs()
    params = module.init(jax.random.PRNGKey(0), x)
    explainer = Saliency(module, backend=backend)
    assert explainer.backend.name == "jax"
    with pytest.raises(TypeError, match=r"Linen.*partial\(module\.apply, params\), "
                                        r"backend='jax'\)"):
        explainer.explain(x, 2)
    bound = partial(module.apply, params)
    maps = Saliency(bound, backend="jax", reducer=None, absolute=False).explain(x, 2)
    np.testing.assert_allclose(maps, _per_sample_gradient(bound, x, 2), rtol=1e-6, atol=1e-7)
