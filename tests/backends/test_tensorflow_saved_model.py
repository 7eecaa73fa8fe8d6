"""SavedModels that ``tf.saved_model.load`` returns as non-callable objects (issue 25 item 9).

A Keras ``model.export(path)`` saves a ``serve`` endpoint and a ``serving_default``
signature; the loaded ``_UserObject`` is detected by the TensorFlow backend, called
through ``serve`` (or its only signature, whose one-entry dict output needs no
output selector), and its maps equal ``tf.GradientTape`` on the original model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import Saliency

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="model.export needs Keras on TensorFlow")


def _keras_model() -> Any:
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((7, 6, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.Activation("tanh"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) / 3 for w in model.weights])
    return model


def _tape_gradient(model: Any, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        scores = tf.gather(model(inputs, training=False), targets, batch_dims=1)
    return np.asarray(tape.gradient(scores, inputs))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    model, path = _keras_model(), tmp_path_factory.mktemp("exported")
    model.export(str(path), verbose=False)
    return model, path


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(1).normal(size=(5, 7, 6, 3)).astype(np.float32)
    return x, np.array([0, 1, 2, 1, 0])


def test_exported_keras_model_is_detected_and_equals_the_tape(exported: tuple[Any, Path]
                                                              ) -> None:
    model, path = exported
    loaded = tf.saved_model.load(str(path))
    assert not callable(loaded)  # reached through its endpoint
    x, targets = _inputs()
    explainer = Saliency(loaded, reducer=None, absolute=False)
    assert explainer.backend.name == "tensorflow"
    expected = _tape_gradient(model, x, targets)
    np.testing.assert_allclose(explainer.explain(x, targets), expected, rtol=1e-5, atol=1e-6)
    maps = Saliency(loaded, backend="tensorflow").explain(x, targets)
    np.testing.assert_allclose(maps, np.abs(expected).max(axis=-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(explainer.predict(x), model.predict(x, verbose=0), rtol=1e-5,
                               atol=1e-6)


def test_a_single_signature_with_a_dict_output_needs_no_selector(tmp_path: Path) -> None:
    model = _keras_model()

    class Served(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 7, 6, 3], tf.float32)])
        def logits(self, x: Any) -> Any:
            return {"logits": self.model(x, training=False)}

    served = Served()
    tf.saved_model.save(served, str(tmp_path), signatures={"only": served.logits})
    loaded = tf.saved_model.load(str(tmp_path))
    del loaded.logits  # no attribute endpoint left: the signature is what is called
    x, targets = _inputs()
    maps = Saliency(loaded, reducer=None, absolute=False).explain(x, targets)
    np.testing.assert_allclose(maps, _tape_gradient(model, x, targets), rtol=1e-5, atol=1e-6)


def test_several_signatures_without_serve_are_refused_with_the_next_step(tmp_path: Path
                                                                         ) -> None:
    model = _keras_model()

    class Served(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 7, 6, 3], tf.float32)])
        def first(self, x: Any) -> Any:
            return {"a": self.model(x, training=False)}

        @tf.function(input_signature=[tf.TensorSpec([None, 7, 6, 3], tf.float32)])
        def second(self, x: Any) -> Any:
            return {"b": self.model(x, training=False)}

    served = Served()
    tf.saved_model.save(served, str(tmp_path), signatures={"first": served.first,
                                                             "second": served.second})
    loaded = tf.saved_model.load(str(tmp_path))
    x, _ = _inputs()
    with pytest.raises(TypeError, match=r"'first', 'second'.*loaded\.signatures"):
        Saliency(loaded).explain(x, 0)
