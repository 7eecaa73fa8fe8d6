"""Compiled structured gradients (several inputs, side inputs, layer=): checks for any
Keras backend.

On TensorFlow and JAX the structured path compiles one function per signature; the
maps must equal the eager path's (the same forward pass run by the framework's eager
autodiff, reached by removing the compiled builders) and analytic gradients from the
weights; repeated calls must not retrace, and weights changed between calls must be
used. On PyTorch everything runs eagerly and nothing is traced.

Imported by ``tests/backends/test_keras_structured_compiled.py`` (TensorFlow, in
process) and ``keras_compiled_suite.py`` (JAX and PyTorch, one child process each).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import keras
import numpy as np
from agnostic_saliency_keras import _structured_compiled, trace_count

from agnostic_saliency import GradientInput, Saliency
from keras_process.keras_structured_checks import (
    _embedding_gradient,
    _text_model,
    _two_input_gradients,
    _two_input_model,
)

RNG = np.random.default_rng(11)
FRAMEWORK = keras.backend.backend()
COMPILED = FRAMEWORK in ("tensorflow", "jax")


def eager(explain: Callable[[], Any]) -> Any:
    """``explain()`` with the compiled builders removed: the eager path."""
    with mock.patch.dict(_structured_compiled._BUILDERS, clear=True):
        before = trace_count()
        result = explain()
        assert trace_count() == before
    return result


def _pair(n: int) -> tuple[np.ndarray, np.ndarray]:
    return (RNG.normal(size=(n, 4, 4, 2)).astype(np.float32),
            RNG.normal(size=(n, 5)).astype(np.float32))


def _tokens(n: int) -> tuple[np.ndarray, np.ndarray]:
    ids = RNG.integers(0, 11, size=(n, 6)).astype(np.int32)
    mask = np.ones((n, 6), np.int32)
    mask[0, 3:] = 0
    return ids, mask


def _close(found: Any, expected: Any) -> None:
    if isinstance(found, dict):
        for key in expected:
            _close(found[key], expected[key])
        return
    if isinstance(found, (list, tuple)):
        for one, other in zip(found, expected, strict=True):
            _close(one, other)
        return
    if expected is None:
        assert found is None
        return
    assert np.max(np.abs(np.asarray(found) - np.asarray(expected))) <= 1e-6


def check_tuple_dict_and_side_inputs_equal_the_eager_path() -> None:
    """Tuple, dict, one attributed entry of a dict, and an Embedding through a mask side
    input: compiled maps equal the eager path's and the analytic gradients."""
    image, table = _pair(5)
    targets = np.array([0, 1, 2, 0, 1])
    listed = _two_input_model(named=False)
    run = lambda: Saliency(listed, backend="keras").explain((image, table), targets)  # noqa: E731
    maps = run()
    _close(maps, eager(run))
    grad_image, grad_table = _two_input_gradients(listed, image, table, targets)
    np.testing.assert_allclose(maps[0], np.abs(grad_image).max(axis=-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps[1], np.abs(grad_table), rtol=1e-4, atol=1e-6)
    named = _two_input_model(named=True)
    inputs = {"image": image, "table": table}
    for attribute in (None, "table"):
        run = lambda a=attribute: GradientInput(  # noqa: E731
            named, backend="keras", reducer=None, attribute=a).explain(inputs, 2)
        maps = run()
        _close(maps, eager(run))
    _, grad_table = _two_input_gradients(named, image, table, np.full(5, 2))
    np.testing.assert_allclose(maps["table"], grad_table * table, rtol=1e-4, atol=1e-6)
    text = _text_model()
    ids, mask = _tokens(4)
    run = lambda: Saliency(text, backend="keras", layer=text.get_layer("embedding")  # noqa
                           ).explain([ids, mask], 1)
    maps = run()
    _close(maps, eager(run))
    _, grad = _embedding_gradient(text, ids, mask, 1)
    np.testing.assert_allclose(maps, np.linalg.norm(grad, axis=-1), rtol=1e-4, atol=1e-7)


class Subclassed(keras.Model):
    """Embedding -> masked mean -> Dense, called with ``[ids, mask]`` and a ``scale``
    keyword (a model_kwarg)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = keras.layers.Embedding(11, 4)
        self.head = keras.layers.Dense(3)

    def call(self, inputs: Any, scale: float = 1.0) -> Any:
        ids, mask = inputs
        weights = keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
        pooled = keras.ops.sum(self.embedding(ids) * weights, 1) / keras.ops.sum(weights, 1)
        return self.head(pooled * scale)


def _subclassed_expected(model: Subclassed, mask: np.ndarray, target: int,
                         scale: float) -> np.ndarray:
    """|d out_k / d embedding_l| = scale * mask_l / sum(mask) * ||W[:, k]||."""
    kernel = model.head.get_weights()[0]
    share = mask / mask.sum(axis=1, keepdims=True)
    return scale * share * np.linalg.norm(kernel[:, target])


def check_layer_of_a_subclassed_model_with_model_kwargs() -> None:
    """layer= inside a subclassed model, with a hashable model_kwarg (compiled) and an
    unhashable one (a NumPy scalar array: eager), equal to each other and the weights."""
    keras.utils.set_random_seed(12)
    model = Subclassed()
    ids, mask = _tokens(3)
    model([ids, mask])

    def run(scale: Any) -> Any:
        return Saliency(model, backend="keras", layer=model.embedding,
                        model_kwargs={"scale": scale}).explain([ids, mask], 2)

    maps = run(2.0)
    _close(maps, eager(lambda: run(2.0)))
    np.testing.assert_allclose(maps, _subclassed_expected(model, mask, 2, 2.0), rtol=1e-5)
    before = trace_count()
    unhashable = run(np.array([2.0], np.float32))
    assert trace_count() == before  # eager: model_kwargs cannot be hashed
    _close(unhashable, maps)
    assert "call" not in vars(model.embedding)


def check_traces_batch_sizes_and_weights() -> None:
    """Same signature: one trace; another batch size: no retrace on TensorFlow (the batch
    axis is unknown), one on JAX (as for one array); changed weights are used without
    retracing."""
    model = _text_model()
    layer = model.get_layer("embedding")
    explainer = Saliency(model, backend="keras", layer=layer)
    ids, mask = _tokens(4)
    before = trace_count()
    first = explainer.explain([ids, mask], 1)
    assert trace_count() - before == (1 if COMPILED else 0)
    explainer.explain([ids, mask], 1)
    explainer.explain([ids[:3], mask[:3]], np.array([1, 0, 2]))
    retraced = {"tensorflow": 1, "jax": 2}.get(FRAMEWORK, 0)
    assert trace_count() - before == retraced
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * -3.0, bias])
    changed = explainer.explain([ids, mask], 1)
    assert trace_count() - before == retraced
    _, grad = _embedding_gradient(model, ids, mask, 1)
    np.testing.assert_allclose(changed, np.linalg.norm(grad, axis=-1), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(changed, 3 * first, rtol=1e-4, atol=1e-7)
    image, table = _pair(3)
    listed = _two_input_model(named=False)
    run = lambda: Saliency(listed, backend="keras").explain([image, table], 0)  # noqa: E731
    run()
    hidden = listed.get_layer("hidden")
    hidden.set_weights([w + 0.5 for w in hidden.get_weights()])
    middle = trace_count()
    maps = run()
    assert trace_count() == middle
    _, grad_table = _two_input_gradients(listed, image, table, np.zeros(3, int))
    np.testing.assert_allclose(maps[1], np.abs(grad_table), rtol=1e-4, atol=1e-6)


class Branching(keras.Model):
    """Python ``if`` on a tensor value: runs eagerly, cannot be traced."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def build(self, input_shape: Any) -> None:
        self.dense.build(input_shape[0])

    def call(self, inputs: Any) -> Any:
        x, gate = inputs
        if keras.ops.sum(gate) > 0:
            return self.dense(x)
        return -self.dense(x)


def check_an_untraceable_model_falls_back_to_eager() -> None:
    """A model that branches on tensor values gets its maps eagerly, every call."""
    keras.utils.set_random_seed(13)
    model = Branching()
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    gate = np.ones((3, 1), np.float32)
    model([x, gate])
    kernel = model.dense.get_weights()[0]
    for _ in range(2):
        maps = Saliency(model, backend="keras", attribute=0).explain([x, gate], 1)
        np.testing.assert_allclose(maps[0], np.abs(kernel[:, 1])[None].repeat(3, 0),
                                   rtol=1e-6)


def check_bert_layer_equals_the_eager_path() -> None:
    """A keras_hub BertTextClassifier through backbone.token_embedding: compiled maps
    equal the eager path's; the model is unchanged and its layer's call restored."""
    from keras_process.keras_hub_checks import TARGETS, bert, bert_inputs

    classifier, backbone = bert()
    inputs = bert_inputs()
    layer = backbone.token_embedding
    run = lambda: Saliency(classifier, backend="keras", layer=layer,  # noqa: E731
                           reducer=None).explain(inputs, TARGETS)
    maps = run()
    _close(maps, eager(run))
    assert "call" not in vars(layer)


def check_a_shared_layer_is_refused_while_tracing() -> None:
    """The backend's gradient with given layer values (no eager read before it): the
    layer's exactly-once check raises its message from the traced pass, every call,
    and the layer's call is restored."""
    from agnostic_saliency_keras import KerasBackend

    from agnostic_saliency._structure import ModelInputs
    from agnostic_saliency.backend import CallOptions

    ids = keras.Input((4,), dtype="int32")
    shared = keras.layers.Embedding(9, 3, name="shared")
    joined = keras.layers.Concatenate(axis=1)([shared(ids), shared(ids)])
    twice = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(joined)))
    given = ModelInputs(kind="array", keys=(0,), values={0: np.zeros((2, 4), np.int32)},
                        attributed=(), layer=shared,
                        layer_values=np.zeros((2, 4, 3), np.float32))
    for _ in range(2):
        before = trace_count()
        try:
            KerasBackend().gradient(twice, given, np.array([0, 1]), None, CallOptions())
        except ValueError as error:
            assert "(a Embedding 'shared') ran 2 times" in str(error), error
        else:
            raise AssertionError("a layer that runs twice was not refused")
        assert trace_count() - before == (1 if COMPILED else 0)
        assert "call" not in vars(shared)


CHECKS: dict[str, Callable[[], None]] = {
    "shared_layer_refused": check_a_shared_layer_is_refused_while_tracing,
    "tuple_dict_side_inputs": check_tuple_dict_and_side_inputs_equal_the_eager_path,
    "subclassed_model_kwargs": check_layer_of_a_subclassed_model_with_model_kwargs,
    "traces_batch_weights": check_traces_batch_sizes_and_weights,
    "untraceable": check_an_untraceable_model_falls_back_to_eager,
    "bert_layer": check_bert_layer_equals_the_eager_path,
}
