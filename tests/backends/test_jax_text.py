"""Token saliency through a Flax NNX embedding (``layer=model.embed``): maps equal
``jax.grad`` with respect to the embedding's output; padding gets exactly zero."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import GradientInput, IntegratedGradients, Saliency

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nnx = pytest.importorskip("flax.nnx")

from agnostic_saliency_jax import JaxBackend  # noqa: E402

RNG = np.random.default_rng(3)


class TextClassifier(nnx.Module):
    """Embed, a non-linear token mixer, mean pooling over the unmasked tokens, Linear."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(11, 4, rngs=rngs)
        self.mix = nnx.Linear(4, 4, rngs=rngs)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def pooled(self, hidden: Any, mask: Any) -> Any:
        weights = mask[..., None].astype(hidden.dtype)
        mixed = jnp.tanh(self.mix(hidden)) * weights
        return self.head(mixed.sum(axis=1) / weights.sum(axis=1))

    def __call__(self, ids: Any, mask: Any) -> Any:
        return self.pooled(self.embed(ids), mask)


def _tokens(n: int = 4, length: int = 6) -> tuple[np.ndarray, np.ndarray]:
    ids = RNG.integers(0, 11, size=(n, length))
    mask = np.ones((n, length), np.int64)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    return ids, mask


def _embedding_gradient(model: TextClassifier, ids: np.ndarray, mask: np.ndarray,
                        target: int) -> tuple[np.ndarray, np.ndarray]:
    hidden = model.embed(jnp.asarray(ids))
    grad = jax.grad(lambda h: model.pooled(h, jnp.asarray(mask))[:, target].sum())(hidden)
    return np.asarray(hidden), np.asarray(grad)


@pytest.mark.parametrize("batch_size", [1, 2, None])
def test_token_saliency_equals_jax_grad_through_the_embedding(batch_size: Any) -> None:
    model = TextClassifier(nnx.Rngs(0))
    embed = model.embed
    ids, mask = _tokens()
    maps = Saliency(model, backend=JaxBackend(), layer=model.embed,
                    batch_size=batch_size).explain((ids, mask), 1)
    _, grad = _embedding_gradient(model, ids, mask, 1)
    assert maps.shape == (4, 6)
    np.testing.assert_allclose(maps, np.linalg.norm(grad, axis=-1), rtol=1e-5, atol=1e-7)
    assert np.all(maps[mask == 0] == 0) and np.all(maps[mask == 1] > 0)
    assert model.embed is embed  # the user's model is never changed


def test_gradient_input_and_ig_in_the_embedding_space() -> None:
    model = TextClassifier(nnx.Rngs(1))
    ids, mask = _tokens()
    hidden, grad = _embedding_gradient(model, ids, mask, 0)
    gi = GradientInput(model, backend="jax", layer=model.embed, reducer="sum").explain(
        (ids, mask), 0)
    np.testing.assert_allclose(gi, (grad * hidden).sum(axis=-1), rtol=1e-5, atol=1e-6)
    ig = IntegratedGradients(model, backend="jax", layer=model.embed, steps=64,
                             reducer="sum").explain((ids, mask), 0)
    # completeness: the map sums to f(x) - f(zero embeddings)
    outputs = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))[:, 0]
    baseline = np.asarray(model.pooled(jnp.zeros_like(hidden), jnp.asarray(mask)))[:, 0]
    np.testing.assert_allclose(ig.sum(axis=1), outputs - baseline, atol=1e-3)
    assert np.all(ig[mask == 0] == 0)


def test_layers_of_functions_and_foreign_modules_are_refused_with_the_next_step() -> None:
    model = TextClassifier(nnx.Rngs(2))
    ids, mask = _tokens()
    with pytest.raises(TypeError, match="Flax NNX and Equinox modules only"):
        Saliency(jax.jit(lambda i, m: model(i, m)), backend="jax",
                 layer=model.embed).explain((ids, mask), 0)
    other = TextClassifier(nnx.Rngs(3))
    with pytest.raises(TypeError, match="no submodule of the TextClassifier"):
        Saliency(model, backend="jax", layer=other.embed).explain((ids, mask), 0)


def test_a_submodule_of_an_equinox_model() -> None:
    import equinox as eqx

    class Table(eqx.Module):
        weight: Any

        def __call__(self, ids: Any) -> Any:
            return self.weight[ids]

    class Classifier(eqx.Module):
        embed: Table
        head: Any

        def pooled(self, hidden: Any, mask: Any) -> Any:
            weights = mask[..., None].astype(hidden.dtype)
            return jnp.tanh((hidden * weights).sum(axis=1)) @ self.head

        def __call__(self, ids: Any, mask: Any) -> Any:
            return self.pooled(self.embed(ids), mask)

    model = Classifier(Table(jnp.asarray(RNG.normal(size=(11, 4)), jnp.float32)),
                       jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32))
    ids, mask = _tokens()
    maps = Saliency(model, backend="jax", layer=model.embed, reducer="sum").explain(
        (ids, mask), 2)
    hidden = model.embed(jnp.asarray(ids))
    grad = jax.grad(lambda h: model.pooled(h, jnp.asarray(mask))[:, 2].sum())(hidden)
    np.testing.assert_allclose(maps, np.abs(np.asarray(grad)).sum(axis=-1), rtol=1e-5, atol=1e-7)
    assert np.all(maps[mask == 0] == 0)
