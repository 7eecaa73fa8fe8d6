"""layer= inside nested and subclassed Keras models: checks for any Keras backend.

A keras_hub ``BertTextClassifier`` (a functional task model around the functional
``BertBackbone``) is explained through ``backbone.token_embedding``, and a subclassed
model through its ``Embedding``. The expected gradients come from the framework's own
autodiff (``tf.GradientTape``, ``jax.grad``, ``torch.autograd.grad``) of a reference
that runs the models' sublayers by hand on embeddings looked up in the weights: it
shares no code with the backend's interception of the layer's call.

Imported by ``tests/backends/test_keras_layers_nested.py`` (TensorFlow, in process)
and by ``keras_hub_suite.py`` (JAX and PyTorch, one child process each, since
``KERAS_BACKEND`` is fixed per process and importing keras_hub is slow).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import keras
import keras_hub
import numpy as np

from agnostic_saliency import GradientInput, IntegratedGradients, Saliency, SmoothGrad

N, LENGTH, HIDDEN, CLASSES = 3, 8, 16, 3
TARGETS = np.array([0, 2, 1])


def framework_gradient(f: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
    """d f(x) / d x with the autodiff of Keras' current backend (``f`` returns a scalar)."""
    framework = keras.backend.backend()
    if framework == "tensorflow":
        import tensorflow as tf

        tensor = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            total = f(tensor)
        return np.asarray(tape.gradient(total, tensor))
    if framework == "jax":
        import jax

        return np.asarray(jax.grad(f)(jax.numpy.asarray(x)))
    import torch

    leaf = torch.tensor(x, requires_grad=True)
    (grad,) = torch.autograd.grad(f(leaf), leaf)
    return grad.detach().cpu().numpy()


def _score(outputs: Any) -> Any:
    """The outputs at TARGETS, summed over the batch."""
    return keras.ops.sum(outputs * keras.ops.one_hot(TARGETS[:len(outputs)], CLASSES))


@cache
def bert() -> tuple[Any, Any]:
    """A small BertTextClassifier built from a config (no weights downloaded)."""
    keras.utils.set_random_seed(4)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=HIDDEN, intermediate_dim=32,
        max_sequence_length=16, dropout=0.0)
    classifier = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=CLASSES, preprocessor=None, dropout=0.0)
    return classifier, backbone


def bert_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(6)
    padding = np.ones((N, LENGTH), np.int32)
    padding[1, 5:] = 0
    padding[2, 3:] = 0
    return {"token_ids": (rng.integers(1, 100, (N, LENGTH)) * padding).astype(np.int32),
            "segment_ids": (np.arange(LENGTH) >= 4).astype(np.int32)[None].repeat(N, 0),
            "padding_mask": padding}


def bert_by_hand(backbone: Any, classifier: Any, inputs: dict[str, np.ndarray]
                 ) -> Callable[[Any], Any]:
    """The classifier's outputs as a function of the token embeddings: the backbone's
    sublayers called one by one, as BertBackbone wires them."""
    segments = backbone.segment_embedding(keras.ops.convert_to_tensor(inputs["segment_ids"]))
    padding = keras.ops.convert_to_tensor(inputs["padding_mask"])

    def outputs(tokens: Any) -> Any:
        x = backbone.embeddings_add((tokens, backbone.position_embedding(tokens), segments))
        x = backbone.embeddings_layer_norm(x)
        for layer in backbone.transformer_layers:
            x = layer(x, padding_mask=padding)
        return classifier.output_dense(backbone.pooled_dense(x[:, 0, :]))

    return outputs


def bert_reference(inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The token embeddings (from the weights) and d score / d token embeddings."""
    classifier, backbone = bert()
    table = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings)
    tokens = np.asarray(table[inputs["token_ids"]], np.float32)
    by_hand = bert_by_hand(backbone, classifier, inputs)
    return tokens, framework_gradient(lambda t: _score(by_hand(t)), tokens)


def _state(model: Any, layer: Any, inputs: Any) -> tuple[list[np.ndarray], np.ndarray]:
    assert "call" not in vars(layer)  # the class's call, no instance attribute left
    assert layer.call.__func__ is type(layer).call
    return ([np.array(w) for w in model.get_weights()],
            keras.ops.convert_to_numpy(model(inputs, training=False)))


def check_bert_token_saliency() -> None:
    """Maps equal the l2 norm of the reference gradient, for batch sizes 1, 2 and all;
    padding gets exactly zero: keras_hub's BERT turns padding_mask into an attention
    mask, so no token attends to a padded one (softmax weight exactly 0) and nothing
    reaches the [CLS] output from padded positions."""
    classifier, backbone = bert()
    inputs = bert_inputs()
    layer = backbone.token_embedding
    weights, before = _state(classifier, layer, inputs)
    _, grad = bert_reference(inputs)
    maps = [Saliency(classifier, backend="keras", layer=layer, reducer="l2",
                     batch_size=size).explain(inputs, TARGETS) for size in (1, 2, None)]
    assert maps[0].shape == (N, LENGTH)
    assert np.max(np.abs(maps[2] - np.linalg.norm(grad, axis=-1))) <= 1e-5
    # equal up to float32 rounding: matrix products of other batch shapes sum differently
    np.testing.assert_allclose(maps[0], maps[2], rtol=1e-6, atol=0)
    np.testing.assert_allclose(maps[1], maps[2], rtol=1e-6, atol=0)
    padded = inputs["padding_mask"] == 0
    assert np.all(grad[padded] == 0) and np.all(maps[2][padded] == 0)
    assert np.all(maps[2][~padded] > 0)
    weights_after, after = _state(classifier, layer, inputs)
    for old, new in zip(weights, weights_after, strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(before, after)


def check_bert_gradient_input_ig_smoothgrad() -> None:
    """GradientInput = sum over hidden of grad * embeddings; IG (trapezoid, 3 points from
    a zero baseline) = embeddings * the mean of the reference gradients at the points;
    SmoothGrad without noise = Saliency, with noise still zero on padding."""
    classifier, backbone = bert()
    inputs = bert_inputs()
    layer = backbone.token_embedding
    tokens, grad = bert_reference(inputs)
    # One chunk shape (N rows) for every method: JAX compiles the gradient once.
    gi = GradientInput(classifier, backend="keras", layer=layer, reducer="sum",
                       batch_size=N).explain(inputs, TARGETS)
    assert np.max(np.abs(gi - (grad * tokens).sum(axis=-1))) <= 1e-5
    by_hand = bert_by_hand(backbone, classifier, inputs)
    points = [framework_gradient(lambda t: _score(by_hand(t)), np.float32(alpha) * tokens)
              for alpha in (0.0, 0.5, 1.0)]
    expected = tokens * (points[0] / 4 + points[1] / 2 + points[2] / 4)
    ig = IntegratedGradients(classifier, backend="keras", layer=layer, steps=3,
                             quadrature="trapezoid", reducer=None, batch_size=N).explain(
        inputs, TARGETS)
    assert ig.shape == (N, LENGTH, HIDDEN)
    assert np.max(np.abs(ig - expected)) <= 1e-5
    still = SmoothGrad(classifier, backend="keras", layer=layer, nb_samples=2, noise=0.0,
                       reducer="l2", batch_size=N).explain(inputs, TARGETS)
    assert np.max(np.abs(still - np.linalg.norm(grad, axis=-1))) <= 1e-5
    noisy = SmoothGrad(classifier, backend="keras", layer=layer, nb_samples=3, noise=0.5,
                       seed=0, batch_size=N).explain(inputs, TARGETS)
    padded = inputs["padding_mask"] == 0
    assert np.all(noisy[padded] == 0) and np.all(noisy[~padded] > 0)
    assert "call" not in vars(layer)


class MaskedText(keras.Model):
    """A subclassed text model: Embedding -> Dense(tanh) -> mean over the unmasked
    tokens -> Dense, called with ``[ids, mask]``."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = keras.layers.Embedding(20, 5)
        self.mix = keras.layers.Dense(5, activation="tanh")
        self.head = keras.layers.Dense(CLASSES)

    def pooled(self, hidden: Any, mask: Any) -> Any:
        weights = keras.ops.expand_dims(keras.ops.cast(mask, hidden.dtype), -1)
        return keras.ops.sum(self.mix(hidden) * weights, axis=1) / keras.ops.sum(weights, 1)

    def call(self, inputs: Any) -> Any:
        ids, mask = inputs
        return self.head(self.pooled(self.embedding(ids), mask))


def check_subclassed_model_with_a_mask() -> None:
    """Saliency and GradientInput through the Embedding of a subclassed model equal the
    framework's gradient of the model's own sublayers called by hand; padding is zero;
    the model is unchanged afterwards."""
    keras.utils.set_random_seed(7)
    model = MaskedText()
    rng = np.random.default_rng(8)
    ids = rng.integers(1, 20, (N, LENGTH)).astype(np.int32)
    mask = np.ones((N, LENGTH), np.int32)
    mask[0, 6:] = 0
    mask[2, 2:] = 0
    model([ids, mask])
    weights, before = _state(model, model.embedding, [ids, mask])
    hidden = np.asarray(keras.ops.convert_to_numpy(model.embedding.embeddings)[ids])
    given = keras.ops.convert_to_tensor(mask)
    grad = framework_gradient(lambda h: _score(model.head(model.pooled(h, given))), hidden)
    maps = [Saliency(model, backend="keras", layer=model.embedding, batch_size=size).explain(
        [ids, mask], TARGETS) for size in (1, None)]
    assert np.max(np.abs(maps[1] - np.linalg.norm(grad, axis=-1))) <= 1e-5
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-6, atol=0)
    assert np.all(maps[1][mask == 0] == 0) and np.all(maps[1][mask == 1] > 0)
    gi = GradientInput(model, backend="keras", layer=model.embedding, reducer="sum").explain(
        [ids, mask], TARGETS)
    assert np.max(np.abs(gi - (grad * hidden).sum(axis=-1))) <= 1e-5
    weights_after, after = _state(model, model.embedding, [ids, mask])
    for old, new in zip(weights, weights_after, strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(before, after)


def check_threads() -> None:
    """Two threads explaining the same layer, and one calling the model meanwhile, get
    what each gets alone: the interception is per thread and per layer, under a lock."""
    import threading

    keras.utils.set_random_seed(9)
    model = MaskedText()
    rng = np.random.default_rng(10)
    batches = [[rng.integers(1, 20, (N, LENGTH)).astype(np.int32),
                np.ones((N, LENGTH), np.int32)] for _ in range(2)]
    model(batches[0])

    def explain(batch: list[np.ndarray]) -> np.ndarray:
        return GradientInput(model, backend="keras", layer=model.embedding,
                             reducer="sum").explain(batch, TARGETS)

    def predict() -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(model(batches[0], training=False)))

    alone = [explain(batch) for batch in batches] + [predict()]
    found: dict[int, np.ndarray] = {}
    tasks = [lambda: explain(batches[0]), lambda: explain(batches[1])] + [predict] * 4
    threads = [threading.Thread(target=lambda i=i, task=task: found.__setitem__(i, task()))
               for i, task in enumerate(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_allclose(found[0], alone[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(found[1], alone[1], rtol=1e-6, atol=1e-9)
    for i in range(2, len(tasks)):
        np.testing.assert_allclose(found[i], alone[2], rtol=1e-6, atol=1e-9)
    assert "call" not in vars(model.embedding)


def check_layer_refusals() -> None:
    """A layer of another model, and one that runs twice, are refused by name."""
    classifier, _ = bert()
    inputs = bert_inputs()
    stranger = keras.layers.Embedding(100, HIDDEN, name="stranger")
    for layer, expected in ((stranger, "not one of the model's layers"),):
        try:
            Saliency(classifier, backend="keras", layer=layer).explain(inputs, TARGETS)
        except ValueError as error:
            assert expected in str(error) and "'bert_text_classifier'" in str(error), error
        else:
            raise AssertionError("a layer of another model was not refused")
    ids = keras.Input((4,), dtype="int32")
    shared = keras.layers.Embedding(9, 3, name="shared")
    joined = keras.layers.Concatenate(axis=1)([shared(ids), shared(ids)])
    twice = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(joined)))
    try:
        Saliency(twice, backend="keras", layer=shared).explain(
            np.zeros((2, 4), np.int32), 0)
    except ValueError as error:
        assert "(a Embedding 'shared') ran 2 times" in str(error), error
    else:
        raise AssertionError("a layer that runs twice was not refused")
    assert "call" not in vars(shared)


CHECKS: dict[str, Callable[[], None]] = {
    "bert_token_saliency": check_bert_token_saliency,
    "bert_gradient_input_ig_smoothgrad": check_bert_gradient_input_ig_smoothgrad,
    "subclassed_model_with_a_mask": check_subclassed_model_with_a_mask,
    "layer_refusals": check_layer_refusals,
    "threads": check_threads,
}
