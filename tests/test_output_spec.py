"""The output spec from ``backend.output_shape`` (no forward pass), with the NumPy
reference backend: targets checked against it, and ``predict`` as the fallback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import CallOptions, Saliency, get_backend
from agnostic_saliency.testing import NumpyModel, make_spec


class ShapeKnown:
    """The reference backend (a plugin without :class:`BackendBase`), answering
    ``output_shape`` with ``answer(n)`` and counting its ``predict`` calls."""

    def __init__(self, answer: Any) -> None:
        self.reference = get_backend("reference")
        self.answer = answer
        self.predict_calls = 0
        self.asked: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reference, name)

    def output_shape(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        self.asked.append(len(inputs))
        return self.answer(len(inputs))

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        self.predict_calls += 1
        return self.reference.predict(model, inputs, options)


def _linear() -> tuple[NumpyModel, np.ndarray, np.ndarray]:
    """The zoo's linear model (7 features, 4 classes), its weights and 5 inputs."""
    spec = make_spec("linear_vector")
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    return NumpyModel(spec), spec.dense(0).weight, x


def test_a_known_shape_replaces_the_forward_pass() -> None:
    model, weight, x = _linear()
    backend = ShapeKnown(lambda n: (n, 4))
    targets = np.array([0, 3, 1, 2, 3])
    maps = Saliency(model, backend=backend, batch_size=2).explain(x, targets)
    assert backend.predict_calls == 0 and backend.asked == [2]  # the user's first chunk
    np.testing.assert_allclose(maps, np.abs(weight[:, targets].T), rtol=1e-6)


def test_class_indices_are_checked_against_the_known_shape() -> None:
    model, _, x = _linear()
    backend = ShapeKnown(lambda n: (n, 4))
    with pytest.raises(ValueError, match=r"target 4 out of range for a model with 4 outputs"):
        Saliency(model, backend=backend).explain(x, [0, 1, 4, 2, 0])
    single = ShapeKnown(lambda n: (n,))
    with pytest.raises(ValueError, match="one output"):
        Saliency(model, backend=single).explain(x, 1)
    assert backend.predict_calls == single.predict_calls == 0


@pytest.mark.parametrize("answer", [lambda n: None, lambda n: (n + 1, 4),
                                    lambda n: (n, 4, 1), lambda n: ()])
def test_an_unknown_or_impossible_shape_runs_the_model(answer: Any) -> None:
    model, weight, x = _linear()
    backend = ShapeKnown(answer)
    maps = Saliency(model, backend=backend).explain(x, 2)
    assert backend.predict_calls == 1
    np.testing.assert_allclose(maps, np.abs(np.tile(weight[:, 2], (5, 1))), rtol=1e-6)
    with pytest.raises(ValueError, match=r"target 4 out of range for a model with 4 outputs"):
        Saliency(model, backend=ShapeKnown(answer)).explain(x, 4)


def test_predicted_targets_still_run_the_model() -> None:
    model, weight, x = _linear()
    backend = ShapeKnown(lambda n: (n, 4))
    maps = Saliency(model, backend=backend).explain(x)
    assert backend.predict_calls == 1 and backend.asked == []
    best = np.argmax(x @ weight + make_spec("linear_vector").dense(0).bias, axis=1)
    np.testing.assert_allclose(maps, np.abs(weight[:, best].T), rtol=1e-6)
