"""The JAX backend learns the output spec from ``jax.eval_shape``: given classes compile
the gradient alone, and every mistake reads as it does when the model runs."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agnostic_saliency_jax import JaxBackend
from flax import nnx

from agnostic_saliency import CallOptions, Saliency

RNG = np.random.default_rng(0)
WEIGHT = RNG.normal(size=(6, 3)).astype(np.float32)


class Counting(JaxBackend):
    """The JAX backend, counting its ``predict`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.predict_calls = 0

    def predict(self, model: Any, inputs: Any, options: CallOptions) -> Any:
        self.predict_calls += 1
        return super().predict(model, inputs, options)


class Running(Counting):
    """The JAX backend as it was: the output spec only from a forward pass."""

    def output_shape(self, model: Any, inputs: Any, options: CallOptions) -> None:
        return None


def function(x: Any) -> Any:
    return jnp.tanh(x @ WEIGHT)


class Network(nnx.Module):
    def __init__(self) -> None:
        self.dense = nnx.Linear(6, 3, rngs=nnx.Rngs(0))
        self.dense.kernel[...] = jnp.asarray(WEIGHT)
        self.dense.bias[...] = jnp.zeros(3)

    def __call__(self, x: Any) -> Any:
        return jnp.tanh(self.dense(x))


class Module(eqx.Module):
    weight: Any

    def __call__(self, x: Any) -> Any:
        return jnp.tanh(x @ self.weight)


MODELS = {"function": function, "jitted": jax.jit(function), "nnx": Network(),
          "equinox": Module(jnp.asarray(WEIGHT))}


def _expected(x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """|d tanh(x W)[t] / dx| = (1 - tanh^2) |W[:, t]|, by hand."""
    chosen = np.tanh(x.astype(np.float64) @ WEIGHT)[np.arange(len(x)), targets]
    return np.abs((1 - chosen**2)[:, None] * WEIGHT[:, targets].T)


@pytest.mark.parametrize("name", list(MODELS))
def test_given_classes_compile_the_gradient_alone(name: str) -> None:
    backend = Counting()
    x = RNG.normal(size=(5, 6)).astype(np.float32)
    targets = np.array([0, 2, 1, 1, 2])
    explainer = Saliency(MODELS[name], backend=backend, batch_size=2)
    maps = explainer.explain(x, targets)
    assert backend.predict_calls == 0 and backend.predict_trace_count == 0
    assert backend.trace_count == 2  # chunks of 2 and the last of 1: no forward trace
    np.testing.assert_allclose(maps, _expected(x, targets), rtol=1e-5, atol=1e-6)
    explainer.explain(x)  # predicted classes need the outputs: then it runs
    assert backend.predict_calls == 3 and backend.predict_trace_count == 2


@pytest.mark.parametrize("name", list(MODELS))
def test_the_shape_is_the_one_predict_returns(name: str) -> None:
    backend = JaxBackend()
    for x in (np.ones((4, 6), np.float32), np.ones((1, 6), np.float64)):
        predicted = backend.predict(MODELS[name], x, CallOptions())
        assert backend.output_shape(MODELS[name], x, CallOptions()) == predicted.shape == (
            len(x), 3)
    assert backend.predict_trace_count == 2 and backend.trace_count == 0


def test_an_output_selector_is_traced_too() -> None:
    def two_heads(x: Any) -> Any:
        return {"logits": x @ WEIGHT, "features": x}

    backend = Counting()
    x = RNG.normal(size=(3, 6)).astype(np.float32)
    maps = Saliency(two_heads, backend=backend,
                    output_selector=lambda out: out["logits"]).explain(x, 1)
    assert backend.predict_calls == 0
    np.testing.assert_allclose(maps, np.abs(np.tile(WEIGHT[:, 1], (3, 1))), rtol=1e-6)


def test_several_inputs_and_a_layer_need_no_forward_pass() -> None:
    def two_inputs(image: Any, table: Any) -> Any:
        return jnp.tanh(image @ WEIGHT) * jnp.sum(table, axis=1, keepdims=True)

    backend = Counting()
    image = RNG.normal(size=(4, 6)).astype(np.float32)
    table = np.ones((4, 2), np.float32)
    maps = Saliency(two_inputs, backend=backend).explain((image, table), 2)
    assert backend.predict_calls == 0
    np.testing.assert_allclose(maps[0], 2 * _expected(image, np.full(4, 2)), rtol=1e-5,
                               atol=1e-6)
    model = Network()
    layer = Saliency(model, backend=backend, layer=model.dense).explain(image, 0)
    assert backend.predict_calls == 0
    expected = np.zeros((4, 3), np.float32)  # d tanh(h)[0] / dh = 1 - tanh(h0)^2 in column 0
    expected[:, 0] = 1 - np.tanh(image @ WEIGHT)[:, 0] ** 2
    np.testing.assert_allclose(layer, expected, rtol=1e-5, atol=1e-6)


def _single(x: Any) -> Any:
    return jnp.sum(x, axis=1)


def _wrong_rank(x: Any) -> Any:
    return (x @ WEIGHT)[:, :, None]


def _pair(x: Any) -> Any:
    return x @ WEIGHT, x


def _single_sample(x: Any) -> Any:
    return x.reshape(6) @ WEIGHT  # fails on a batch: (N, 6) has no shape (6,)


class Dropping(nnx.Module):
    def __init__(self) -> None:
        self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(0))

    def __call__(self, x: Any) -> Any:
        return self.drop(x @ WEIGHT)


# (model, targets, input features, the error's type and a part of its message)
MISTAKES = {
    "class out of range": (function, [0, 1, 3, 0], 6, ValueError, "target 3 out of range"),
    "second class of one output": (_single, 1, 6, ValueError, "one output"),
    "input of the wrong shape": (function, 0, 5, ValueError, r"shape \(4, 5\)"),
    "selector of the wrong rank": (_wrong_rank, 0, 6, ValueError, r"shape \(4, 3, 1\)"),
    "a tuple": (_pair, 0, 6, TypeError, "not a single tensor"),
    "one sample at a time": (_single_sample, 0, 6, ValueError, r"shape \(4, 6\)"),
    "dropout in training": (Dropping(), 0, 6, ValueError, "training"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_mistakes_read_as_when_the_model_runs(mistake: str) -> None:
    model, targets, features, kind, part = MISTAKES[mistake]
    x = RNG.normal(size=(4, features)).astype(np.float32)
    found = []
    for backend in (Counting(), Running()):
        with pytest.raises(kind, match=part) as error:
            Saliency(model, backend=backend).explain(x, targets)
        found.append(str(error.value))
    assert found[0] == found[1]


def test_a_single_output_model_needs_no_forward_pass() -> None:
    backend = Counting()
    x = RNG.normal(size=(3, 6)).astype(np.float32)
    maps = Saliency(_single, backend=backend).explain(x, 0)
    assert backend.predict_calls == 0
    np.testing.assert_array_equal(maps, np.ones((3, 6), np.float32))


def _softmax(x: Any) -> Any:
    return jax.nn.softmax(x @ WEIGHT)


def test_strict_runs_the_model_to_find_probability_outputs() -> None:
    """``strict=True`` promises every check that can spoil a map, the probability check
    among them, which needs output values: the forward pass runs then, and only then."""
    x = RNG.normal(size=(4, 6)).astype(np.float32)
    lenient = Counting()
    Saliency(_softmax, backend=lenient).explain(x, [0, 1, 2, 0])
    assert lenient.predict_calls == 0
    strict = Counting()
    with pytest.raises(RuntimeError, match="probabilities"):
        Saliency(_softmax, backend=strict, strict=True).explain(x, [0, 1, 2, 0])
    assert strict.predict_calls == 1
