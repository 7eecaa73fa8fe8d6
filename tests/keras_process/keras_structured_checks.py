"""Several inputs and layer outputs of Keras models: checks for any Keras backend.

Each check builds a small functional model and compares the maps with the gradients
computed analytically in NumPy from the model's own weights. Imported by
``tests/backends/test_keras_structured.py`` and ``test_keras_text.py`` (TensorFlow,
in process) and by ``keras_structured_suite.py`` (JAX and PyTorch, each in a child
process, since ``KERAS_BACKEND`` is fixed per process).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from agnostic_saliency import GradientInput, IntegratedGradients, Saliency, SmoothGrad

RNG = np.random.default_rng(5)


def _two_input_model(named: bool) -> Any:
    keras.utils.set_random_seed(0)
    image = keras.Input((4, 4, 2), name="image")
    table = keras.Input((5,), name="table")
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(image), table])
    hidden = keras.layers.Dense(6, activation="tanh", name="hidden")(joined)
    outputs = keras.layers.Dense(3, name="out")(hidden)
    return keras.Model({"image": image, "table": table} if named else [image, table], outputs)


def _two_input_gradients(model: Any, image: np.ndarray, table: np.ndarray,
                         targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d out[targets] / d (image, table), from the weights: W1 diag(1 - h^2) W2[:, k]."""
    w1, b1 = (np.asarray(v, np.float64) for v in model.get_layer("hidden").get_weights())
    w2 = np.asarray(model.get_layer("out").get_weights()[0], np.float64)
    joined = np.concatenate([image.reshape(len(image), -1), table], axis=1)
    slope = 1 - np.tanh(joined @ w1 + b1) ** 2
    grad = (slope * w2[:, targets].T) @ w1.T
    return grad[:, :32].reshape(image.shape), grad[:, 32:]


def _pair(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    return (RNG.normal(size=(n, 4, 4, 2)).astype(np.float32),
            RNG.normal(size=(n, 5)).astype(np.float32))


def check_list_inputs(batch_size: Any) -> None:
    model = _two_input_model(named=False)
    image, table = _pair()
    targets = np.array([0, 1, 2, 0, 1])
    maps = Saliency(model, backend="keras", batch_size=batch_size).explain(
        [image, table], targets)
    grad_image, grad_table = _two_input_gradients(model, image, table, targets)
    assert isinstance(maps, list) and maps[0].shape == (5, 4, 4)
    np.testing.assert_allclose(maps[0], np.abs(grad_image).max(axis=-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps[1], np.abs(grad_table), rtol=1e-4, atol=1e-6)


def check_dict_inputs() -> None:
    model = _two_input_model(named=True)
    image, table = _pair()
    maps = GradientInput(model, backend="keras", reducer=None).explain(
        {"image": image, "table": table}, 2)
    grad_image, grad_table = _two_input_gradients(model, image, table, np.full(5, 2))
    np.testing.assert_allclose(maps["image"], grad_image * image, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps["table"], grad_table * table, rtol=1e-4, atol=1e-6)
    only = Saliency(model, backend="keras", attribute="table").explain(
        {"image": image, "table": table}, 2)
    assert only["image"] is None
    np.testing.assert_allclose(only["table"], np.abs(grad_table), rtol=1e-4, atol=1e-6)


class MaskedMean(keras.layers.Layer):
    """Mean over the unmasked tokens: ``sum(x * mask) / sum(mask)``."""

    def call(self, x: Any, mask: Any) -> Any:
        weights = keras.ops.expand_dims(keras.ops.cast(mask, x.dtype), -1)
        return keras.ops.sum(x * weights, axis=1) / keras.ops.sum(weights, axis=1)


def _text_model() -> Any:
    keras.utils.set_random_seed(1)
    ids = keras.Input((6,), dtype="int32", name="ids")
    mask = keras.Input((6,), dtype="int32", name="mask")
    hidden = keras.layers.Embedding(11, 4, name="embedding")(ids)
    mixed = keras.layers.Dense(4, activation="tanh", name="mix")(hidden)
    outputs = keras.layers.Dense(3, name="head")(MaskedMean()(mixed, mask))
    return keras.Model([ids, mask], outputs)


def _tokens(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    ids = RNG.integers(0, 11, size=(n, 6)).astype(np.int32)
    mask = np.ones((n, 6), np.int32)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    return ids, mask


def _embedding_gradient(model: Any, ids: np.ndarray, mask: np.ndarray,
                        target: int) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings and d out[target] / d embeddings, from the weights."""
    table = np.asarray(model.get_layer("embedding").get_weights()[0], np.float64)
    wm, bm = (np.asarray(v, np.float64) for v in model.get_layer("mix").get_weights())
    wh = np.asarray(model.get_layer("head").get_weights()[0], np.float64)
    hidden = table[ids]
    slope = 1 - np.tanh(hidden @ wm + bm) ** 2  # (n, l, 4)
    share = mask / mask.sum(axis=1, keepdims=True)  # (n, l)
    grad = (slope * wh[:, target]) @ wm.T * share[..., None]
    return hidden, grad


def check_embedding_layer(batch_size: Any) -> None:
    model = _text_model()
    ids, mask = _tokens()
    layer = model.get_layer("embedding")
    maps = Saliency(model, backend="keras", layer=layer, batch_size=batch_size).explain(
        [ids, mask], 1)
    _, grad = _embedding_gradient(model, ids, mask, 1)
    assert maps.shape == (4, 6)
    np.testing.assert_allclose(maps, np.linalg.norm(grad, axis=-1), rtol=1e-4, atol=1e-7)
    assert np.all(maps[mask == 0] == 0) and np.all(maps[mask == 1] > 0)


def check_embedding_layer_ig() -> None:
    model = _text_model()
    ids, mask = _tokens()
    layer = model.get_layer("embedding")
    hidden, grad = _embedding_gradient(model, ids, mask, 0)
    gi = GradientInput(model, backend="keras", layer=layer, reducer="sum").explain(
        [ids, mask], 0)
    np.testing.assert_allclose(gi, (grad * hidden).sum(axis=-1), rtol=1e-4, atol=1e-6)
    ig = IntegratedGradients(model, backend="keras", layer=layer, steps=64,
                             reducer="sum").explain([ids, mask], 0)
    wm, bm = (np.asarray(v, np.float64) for v in model.get_layer("mix").get_weights())
    wh, bh = (np.asarray(v, np.float64) for v in model.get_layer("head").get_weights())
    share = (mask / mask.sum(axis=1, keepdims=True))[..., None]
    outputs = ((np.tanh(hidden @ wm + bm) * share).sum(axis=1) @ wh + bh)[:, 0]
    baseline = (np.tanh(bm) @ wh + bh)[0]
    np.testing.assert_allclose(ig.sum(axis=1), outputs - baseline, atol=1e-3)
    assert np.all(ig[mask == 0] == 0)


def check_smoothgrad_with_a_mask_side_input() -> None:
    x = keras.Input((6,), name="x")
    mask = keras.Input((6,), dtype="int32", name="mask")
    weights = keras.ops.cast(mask, "float32")
    outputs = keras.layers.Dense(3, use_bias=False, name="out")(keras.layers.Multiply()(
        [x, weights]))
    model = keras.Model([x, mask], outputs)
    values = RNG.normal(size=(4, 6)).astype(np.float32)
    given = (RNG.random(size=(4, 6)) > 0.5).astype(np.int32)
    kernel = model.get_layer("out").get_weights()[0]
    smooth = SmoothGrad(model, backend="keras", nb_samples=4, seed=0, batch_size=3).explain(
        [values, given], 1)
    assert smooth[1] is None
    # linear: every noisy copy has the same (signed) gradient
    np.testing.assert_allclose(smooth[0], kernel[:, 1] * given, rtol=1e-5, atol=1e-7)


def check_layer_of_a_subclassed_model() -> None:
    """layer= inside a subclassed model: d out_k / d embedding_l = W[:, k] / length."""
    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = keras.layers.Embedding(11, 4)
            self.head = keras.layers.Dense(2)

        def call(self, ids: Any) -> Any:
            return self.head(keras.ops.mean(self.embedding(ids), axis=1))

    keras.utils.set_random_seed(3)
    model = Subclassed()
    ids, _ = _tokens()
    model(ids)
    maps = Saliency(model, backend="keras", layer=model.embedding).explain(ids, 0)
    kernel = model.head.get_weights()[0]
    np.testing.assert_allclose(maps, np.full((4, 6), np.linalg.norm(kernel[:, 0]) / 6),
                               rtol=1e-5)
    assert "call" not in vars(model.embedding)


def check_intermediate_layer() -> None:
    """layer= the tanh Dense after the embedding: d out_k / d t_l = share_l * W_head[:, k]."""
    model = _text_model()
    ids, mask = _tokens()
    maps = Saliency(model, backend="keras", layer=model.get_layer("mix")).explain(
        [ids, mask], 2)
    head = model.get_layer("head").get_weights()[0]
    share = mask / mask.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(maps, np.linalg.norm(head[:, 2]) * share, rtol=1e-5)


def check_sequential_with_one_input() -> None:
    """One array of token ids: d out_k / d embedding_l = W[:, k] / length for every token."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(9, 3),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
    ids = RNG.integers(0, 9, size=(3, 5)).astype(np.int32)
    maps = Saliency(model, backend="keras", layer=model.layers[0]).explain(ids, 1)
    kernel = model.layers[-1].get_weights()[0]
    np.testing.assert_allclose(maps, np.full((3, 5), np.linalg.norm(kernel[:, 1]) / 5),
                               rtol=1e-5)
    masked = keras.Sequential([keras.Input((5,), dtype="int32"),
                               keras.layers.Embedding(9, 3, mask_zero=True),
                               keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
    try:
        Saliency(masked, backend="keras", layer=masked.layers[0]).explain(ids, 1)
    except TypeError as error:
        assert "mask_zero=True" in str(error) and "padding mask as an input" in str(error)
    else:
        raise AssertionError("an Embedding with mask_zero=True was not refused")


CHECKS = {
    "intermediate_layer": check_intermediate_layer,
    "sequential_one_input": check_sequential_with_one_input,
    "list_inputs_1": lambda: check_list_inputs(1),
    "list_inputs_2": lambda: check_list_inputs(2),
    "list_inputs_all": lambda: check_list_inputs(None),
    "dict_inputs": check_dict_inputs,
    "smoothgrad_mask": check_smoothgrad_with_a_mask_side_input,
    "embedding_1": lambda: check_embedding_layer(1),
    "embedding_all": lambda: check_embedding_layer(None),
    "embedding_ig": check_embedding_layer_ig,
    "subclassed_layer": check_layer_of_a_subclassed_model,
}
