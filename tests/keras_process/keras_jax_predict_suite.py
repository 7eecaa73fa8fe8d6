"""Predictions of Keras on JAX through the jitted forward pass (``_jax.predict``).

Run by ``tests/backends/test_keras_jax_predict.py`` with ``KERAS_BACKEND=jax``, since
``KERAS_BACKEND`` is fixed per process. References are Keras' own eager call
``model(x, training=False)``; the eager path of ``predict`` is reached by making the
jitted function decline (as it does for a model that cannot be traced).
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import keras
import numpy as np
import pytest
from agnostic_saliency_keras import KerasBackend, _jax

from agnostic_saliency.backend import CallOptions
from agnostic_saliency.metrics import Deletion

RNG = np.random.default_rng(5)
BACKEND = KerasBackend()


def _cnn() -> keras.Model:
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(5)])


def _batch_norm_dropout() -> keras.Model:
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                              keras.layers.BatchNormalization(), keras.layers.Dropout(0.5),
                              keras.layers.Dense(3)])
    norm = model.layers[1]
    gamma, beta, mean, variance = norm.get_weights()
    norm.set_weights([gamma * 1.5, beta + 0.3, RNG.normal(size=mean.shape).astype(np.float32),
                      RNG.uniform(0.5, 2.0, size=variance.shape).astype(np.float32)])
    return model


class _Branching(keras.Model):
    """Branches in Python on a value of its input: JAX cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x: Any) -> Any:
        outputs = self.dense(x)
        return outputs if float(keras.ops.sum(x)) > 0 else -outputs


def _keras_call(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def _eager_predict() -> Any:
    return mock.patch.object(_jax._Forward, "__call__", lambda self, model, x: None)


def test_runs_on_jax() -> None:
    assert keras.backend.backend() == "jax"


@pytest.mark.parametrize("build", [_cnn, _batch_norm_dropout])
def test_jitted_predict_equals_the_eager_call(build: Any) -> None:
    model = build()
    x = RNG.normal(size=(7, *model.input_shape[1:])).astype(np.float32)
    before = _jax.predict_trace_count()
    found = BACKEND.predict(model, x, CallOptions())
    assert _jax.predict_trace_count() == before + 1  # the jitted function answered
    np.testing.assert_allclose(found, _keras_call(model, x), rtol=0, atol=1e-6)
    # training=False: Dropout is off and BatchNormalization uses its moving statistics.
    np.testing.assert_array_equal(BACKEND.predict(model, x, CallOptions()), found)


def test_output_selector_is_applied() -> None:
    model = _cnn()
    x = RNG.normal(size=(3, 8, 8, 3)).astype(np.float32)
    found = BACKEND.predict(model, x, CallOptions(output_selector=lambda y: y[:, 1:3]))
    np.testing.assert_allclose(found, _keras_call(model, x)[:, 1:3], rtol=0, atol=1e-6)


def test_changed_weights_are_used_without_retracing() -> None:
    model = _cnn()
    x = RNG.normal(size=(4, 8, 8, 3)).astype(np.float32)
    first = BACKEND.predict(model, x, CallOptions())
    traces = _jax.predict_trace_count()
    model.set_weights([weight * 2.0 + 0.1 for weight in model.get_weights()])
    second = BACKEND.predict(model, x, CallOptions())
    assert _jax.predict_trace_count() == traces
    assert np.max(np.abs(second - first)) > 1e-2
    np.testing.assert_allclose(second, _keras_call(model, x), rtol=0, atol=1e-6)


def test_an_unbuilt_model_is_built_then_predicted() -> None:
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.layers.Dense(3)])
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    found = BACKEND.predict(model, x, CallOptions())
    assert model.built
    np.testing.assert_allclose(found, _keras_call(model, x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(BACKEND.predict(model, x, CallOptions()), found, rtol=0,
                               atol=1e-6)


def test_an_untraceable_model_is_predicted_eagerly() -> None:
    model = _Branching()
    x = np.abs(RNG.normal(size=(3, 4))).astype(np.float32)
    model(x)
    before = _jax.predict_trace_count()
    for inputs in (x, -x, x):
        found = BACKEND.predict(model, inputs, CallOptions())
        np.testing.assert_allclose(found, _keras_call(model, inputs), rtol=0, atol=1e-6)
    assert _jax.predict_trace_count() == before + 1  # one failed trace, then eager only
    np.testing.assert_allclose(BACKEND.predict(model, -x, CallOptions()),
                               -np.asarray(model.dense(-x)), rtol=0, atol=1e-6)


def test_model_errors_keep_their_message() -> None:
    model = _cnn()
    x = RNG.normal(size=(2, 5, 5, 3)).astype(np.float32)  # wrong image size
    with pytest.raises(ValueError, match=r"\(2, 5, 5, 3\)"):
        BACKEND.predict(model, x, CallOptions())


def test_deletion_equals_the_eager_path() -> None:
    model = _cnn()
    x = RNG.normal(size=(10, 8, 8, 3)).astype(np.float32)
    targets = np.arange(10) % 5
    maps = RNG.normal(size=(10, 8, 8)).astype(np.float32)
    metric = Deletion(model, steps=6, batch_size=4)
    before = _jax.predict_trace_count()
    jitted = metric.evaluate(x, targets, maps)
    assert _jax.predict_trace_count() > before
    with _eager_predict():
        before = _jax.predict_trace_count()
        eager = metric.evaluate(x, targets, maps)
        assert _jax.predict_trace_count() == before
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-6)
