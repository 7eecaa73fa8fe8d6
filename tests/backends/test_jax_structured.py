"""Several inputs and side inputs on the JAX backend: maps equal ``jax.grad`` per input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import IntegratedGradients, Saliency, SmoothGrad

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

from agnostic_saliency_jax import JaxBackend  # noqa: E402

RNG = np.random.default_rng(0)
WA = jnp.asarray(RNG.normal(size=(3, 4, 4, 2)), jnp.float32)  # classes x image (H, W, C)
WB = jnp.asarray(RNG.normal(size=(3, 5)), jnp.float32)  # classes x table features


def two_inputs(image: Any, table: Any) -> Any:
    """A non-linear model of an image and a table."""
    return jnp.tanh(0.05 * jnp.einsum("nhwc,khwc->nk", image, WA) * (table @ WB.T))


def by_name(*, image: Any, table: Any) -> Any:
    return two_inputs(image, table)


def _pair(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    return (RNG.normal(size=(n, 4, 4, 2)).astype(np.float32),
            RNG.normal(size=(n, 5)).astype(np.float32))


def _expected(image: np.ndarray, table: np.ndarray, targets: np.ndarray) -> Any:
    def score(a: Any, b: Any) -> Any:
        return jnp.sum(jnp.take_along_axis(two_inputs(a, b), jnp.asarray(targets)[:, None], 1))

    grad_a, grad_b = jax.grad(score, argnums=(0, 1))(jnp.asarray(image), jnp.asarray(table))
    return np.abs(np.asarray(grad_a)).max(axis=-1), np.abs(np.asarray(grad_b))


@pytest.mark.parametrize("batch_size", [1, 2, None])
def test_two_positional_inputs_equal_jax_grad(batch_size: Any) -> None:
    image, table = _pair()
    targets = np.array([0, 1, 2, 0, 1])
    backend = JaxBackend()
    maps = Saliency(jax.jit(two_inputs), backend=backend, batch_size=batch_size).explain(
        (image, table), targets)
    expected = _expected(image, table, targets)
    assert isinstance(maps, tuple) and maps[0].shape == (5, 4, 4)
    np.testing.assert_allclose(maps[0], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps[1], expected[1], rtol=1e-5, atol=1e-6)
    listed = Saliency(two_inputs, backend=backend, batch_size=batch_size).explain(
        [image, table], targets)
    assert isinstance(listed, list)
    np.testing.assert_allclose(listed[1], expected[1], rtol=1e-5, atol=1e-6)


def test_a_dict_is_passed_as_keywords_and_equal_shapes_trace_once() -> None:
    image, table = _pair()
    backend = JaxBackend()
    explainer = Saliency(by_name, backend=backend)
    maps = explainer.explain({"image": image, "table": table}, 2)
    expected = _expected(image, table, np.full(5, 2))
    np.testing.assert_allclose(maps["image"], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["table"], expected[1], rtol=1e-5, atol=1e-6)
    traces = backend.trace_count
    again = explainer.explain({"image": image * 2, "table": table}, 2)
    assert backend.trace_count == traces  # same structure, shapes and dtypes: no new trace
    only = Saliency(by_name, backend=backend, attribute="table").explain(
        {"image": image, "table": table}, 2)
    assert only["image"] is None
    np.testing.assert_allclose(only["table"], expected[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(again["table"], maps["table"])


def masked_sum(x: Any, mask: Any) -> Any:
    """class k = (k + 1) * sum(mask * x): reads only the unmasked features."""
    total = jnp.sum(mask.astype(x.dtype) * x, axis=1, keepdims=True)
    return total * jnp.arange(1, 4, dtype=x.dtype)


@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_smoothgrad_and_ig_pass_an_int_mask_unchanged(batch_size: Any) -> None:
    x = RNG.normal(size=(4, 6)).astype(np.float32)
    mask = (RNG.random(size=(4, 6)) > 0.5).astype(np.int64)
    smooth = SmoothGrad(masked_sum, backend="jax", nb_samples=5, seed=1,
                        batch_size=batch_size).explain((x, mask), 1)
    assert smooth[1] is None
    np.testing.assert_allclose(smooth[0], 2.0 * mask, atol=1e-6)  # linear: noise changes nothing
    ig = IntegratedGradients(masked_sum, backend="jax", steps=4,
                             batch_size=batch_size).explain((x, mask), 2)
    np.testing.assert_allclose(ig[0], 3.0 * mask * x, rtol=1e-5, atol=1e-6)


def test_model_kwargs_are_constants() -> None:
    x = RNG.normal(size=(3, 4)).astype(np.float32)

    def scaled(values: Any, *, scale: float = 1.0) -> Any:
        return masked_sum(values, jnp.ones_like(values)) * scale

    maps = Saliency(scaled, backend="jax", model_kwargs={"scale": -2.0}).explain((x,), 0)
    np.testing.assert_allclose(maps[0], np.full((3, 4), 2.0), atol=1e-6)
    maps = Saliency(scaled, backend="jax", model_kwargs={"scale": 3.0}).explain((x,), 0)
    np.testing.assert_allclose(maps[0], np.full((3, 4), 3.0), atol=1e-6)


def test_a_model_that_fails_names_the_shapes_and_the_convention() -> None:
    image, table = _pair()
    with pytest.raises(ValueError, match=r"inputs of shapes \{'0': \(5, 4, 4, 2\)"):
        Saliency(by_name, backend="jax").explain((image, table), 0)


def test_flax_nnx_and_equinox_modules_take_several_inputs() -> None:
    import equinox as eqx
    from flax import nnx

    class Joined(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.a = nnx.Linear(6, 3, rngs=rngs)
            self.b = nnx.Linear(2, 3, rngs=rngs)

        def __call__(self, x: Any, *, extra: Any) -> Any:
            return jnp.tanh(self.a(x)) * self.b(extra)

    class JoinedEqx(eqx.Module):
        a: Any
        b: Any

        def __call__(self, x: Any, *, extra: Any) -> Any:
            return jnp.tanh(x @ self.a) * (extra @ self.b)

    x = RNG.normal(size=(4, 6)).astype(np.float32)
    extra = RNG.normal(size=(4, 2)).astype(np.float32)
    models = [Joined(nnx.Rngs(0)),
              JoinedEqx(jnp.asarray(RNG.normal(size=(6, 3)), jnp.float32),
                        jnp.asarray(RNG.normal(size=(2, 3)), jnp.float32))]
    for model in models:
        maps = Saliency(model, backend="jax").explain({"x": x, "extra": extra}, 1)

        def score(a: Any, b: Any, model: Any = model) -> Any:
            return model(a, extra=b)[:, 1].sum()

        grad_x, grad_extra = jax.grad(score, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(extra))
        np.testing.assert_allclose(maps["x"], np.abs(grad_x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(maps["extra"], np.abs(grad_extra), rtol=1e-5, atol=1e-6)
