"""Several inputs and side inputs on the TensorFlow backend (``tf.Module`` and
functions called as ``model(*args, **kwargs)``): maps equal ``tf.GradientTape``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from agnostic_saliency import IntegratedGradients, Saliency

RNG = np.random.default_rng(7)


class TwoInputs(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wa = tf.Variable(RNG.normal(size=(6, 3)).astype(np.float32))
        self.wb = tf.Variable(RNG.normal(size=(2, 3)).astype(np.float32))

    def __call__(self, x: Any, extra: Any) -> Any:
        return tf.tanh(x @ self.wa) * (extra @ self.wb)


@pytest.mark.parametrize("batch_size", [1, 2, None])
def test_tuple_and_dict_inputs_equal_gradient_tape(batch_size: Any) -> None:
    model = TwoInputs()
    x = RNG.normal(size=(4, 6)).astype(np.float32)
    extra = RNG.normal(size=(4, 2)).astype(np.float32)
    a, b = tf.constant(x), tf.constant(extra)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        score = tf.reduce_sum(model(a, b)[:, 2])
    grad_a, grad_b = (g.numpy() for g in tape.gradient(score, [a, b]))
    maps = Saliency(model, backend="tensorflow", batch_size=batch_size).explain((x, extra), 2)
    np.testing.assert_allclose(maps[0], np.abs(grad_a), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps[1], np.abs(grad_b), rtol=1e-5, atol=1e-7)
    named = Saliency(model, backend="tensorflow", batch_size=batch_size).explain(
        {"x": x, "extra": extra}, 2)
    np.testing.assert_allclose(named["extra"], np.abs(grad_b), rtol=1e-5, atol=1e-7)


def test_ig_passes_an_int_mask_unchanged() -> None:
    weights = tf.constant(RNG.normal(size=(5, 2)).astype(np.float32))

    def masked(x: Any, mask: Any) -> Any:
        return (x * tf.cast(mask, x.dtype)) @ weights

    x = RNG.normal(size=(3, 5)).astype(np.float32)
    mask = (RNG.random(size=(3, 5)) > 0.5).astype(np.int64)
    ig = IntegratedGradients(masked, backend="tensorflow", steps=4, batch_size=2).explain(
        (x, mask), 1)
    assert ig[1] is None
    np.testing.assert_allclose(ig[0], x * mask * weights.numpy()[:, 1], rtol=1e-5, atol=1e-7)
