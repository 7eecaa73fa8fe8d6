"""Backends that compute asynchronously (``asynchronous = True``, ``start_gradient``):
the frontend checks the inputs while the first gradient is computed, and nothing else
changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import CallOptions, Saliency, SmoothGrad
from agnostic_saliency.testing import NumpyModel, ReferenceBackend, make_spec


class DispatchingBackend(ReferenceBackend):
    """The reference backend, asynchronous; it logs what it is asked."""

    asynchronous = True
    magnitude_maps = ()

    def __init__(self, dispatch_error: Exception | None = None) -> None:
        self.log: list[str] = []
        self.dispatch_error = dispatch_error

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: CallOptions, magnitude: Any = None) -> np.ndarray:
        self.log.append("gradient")
        return super().gradient(model, inputs, targets, operator, options)

    def start_gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                       options: CallOptions, magnitude: Any = None
                       ) -> Callable[[], np.ndarray]:
        self.log.append("dispatch")
        if self.dispatch_error is not None:
            raise self.dispatch_error
        result = ReferenceBackend.gradient(self, model, inputs, targets, operator, options)

        def collect() -> np.ndarray:
            self.log.append("collect")
            return result

        return collect


def _mlp_inputs(n: int = 5) -> tuple[NumpyModel, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)
    return NumpyModel(make_spec("mlp")), x


@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("targets", [None, 1, np.array([0, 2, 1, 1, 0])])
def test_maps_equal_the_synchronous_backend(batch_size: int | None, targets: Any) -> None:
    model, x = _mlp_inputs()
    backend = DispatchingBackend()
    maps = Saliency(model, backend=backend, batch_size=batch_size).explain(x, targets)
    expected = Saliency(model, backend="reference", batch_size=batch_size).explain(x, targets)
    np.testing.assert_array_equal(maps, expected)
    # Every chunk is started, then collected.
    chunks = 1 if batch_size is None else 3
    assert backend.log == ["dispatch", "collect"] * chunks


def test_methods_with_several_gradients_per_chunk_are_unchanged() -> None:
    model, x = _mlp_inputs()
    backend = DispatchingBackend()
    maps = SmoothGrad(model, backend=backend, nb_samples=4, seed=0).explain(x, 1)
    expected = SmoothGrad(model, backend="reference", nb_samples=4, seed=0).explain(x, 1)
    np.testing.assert_array_equal(maps, expected)
    assert backend.log[:2] == ["dispatch", "collect"] and "gradient" not in backend.log


@pytest.mark.parametrize("targets", [None, 1])
def test_non_finite_inputs_are_refused_and_the_result_is_never_used(targets: Any) -> None:
    model, x = _mlp_inputs()
    x[3, 2] = np.nan
    backend = DispatchingBackend()
    with pytest.raises(ValueError, match=r"inputs contain 1 non-finite values \(first at sample 3"):
        Saliency(model, backend=backend).explain(x, targets)
    assert backend.log == ["dispatch"]


def test_a_model_allowed_to_train_only_sees_checked_inputs() -> None:
    """Its forward pass may change its state: it only ever sees checked inputs."""
    model, x = _mlp_inputs()
    backend = DispatchingBackend()
    maps = Saliency(model, backend=backend, allow_training_mode=True).explain(x, 1)
    np.testing.assert_array_equal(maps, Saliency(model, backend="reference").explain(x, 1))
    assert backend.log == ["dispatch", "collect"]
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        Saliency(model, backend=backend, allow_training_mode=True).explain(x, 1)
    assert backend.log == ["dispatch", "collect"]  # refused before any model call


def test_an_input_error_comes_before_the_backend_error_it_may_have_caused() -> None:
    model, x = _mlp_inputs()
    failure = RuntimeError("the model failed")
    explainer = Saliency(model, backend=DispatchingBackend(dispatch_error=failure))
    with pytest.raises(RuntimeError, match="the model failed"):
        explainer.explain(x, 1)
    x[0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite") as raised:
        explainer.explain(x, 1)
    assert raised.value.__context__ is failure


@pytest.mark.parametrize("bad", [3, -1, 2**40], ids=["above", "negative", "huge"])
def test_class_indices_out_of_range_are_refused_and_the_result_is_never_used(bad: int) -> None:
    model, x = _mlp_inputs()
    targets = np.array([0, 2, bad, 1, 0])
    backend = DispatchingBackend()
    with pytest.raises(ValueError, match=rf"target {bad} out of range for a model with 3 "):
        Saliency(model, backend=backend).explain(x, targets)
    assert backend.log == ["dispatch"]  # started unchecked, checked before it is used
    with pytest.raises(ValueError, match=rf"target {bad} out of range"):
        Saliency(model, backend="reference").explain(x, targets)  # checked before the backend


def test_an_input_error_comes_before_a_target_error() -> None:
    model, x = _mlp_inputs()
    x[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        Saliency(model, backend=DispatchingBackend()).explain(x, np.array([0, 2, 5, 1, 0]))


def test_empty_inputs_need_no_gradient() -> None:
    model, x = _mlp_inputs()
    backend = DispatchingBackend()
    maps = Saliency(model, backend=backend).explain(x[:0], 1)
    assert maps.shape == (0, 6) and backend.log == []


class _RecordingSubclass(DispatchingBackend):
    """Overrides ``gradient`` alone: the frontend calls ``start_gradient``, so a plugin
    that records gradients overrides that (the documented member of every call)."""

    def start_gradient(self, *args: Any, **kwargs: Any) -> Callable[[], np.ndarray]:
        self.log.append("subclass")
        pending = super().start_gradient(*args, **kwargs)
        return lambda: 2 * pending()


def test_the_frontend_calls_start_gradient_of_every_backend() -> None:
    model, x = _mlp_inputs()
    backend = _RecordingSubclass()
    maps = Saliency(model, backend=backend, absolute=False).explain(x, 1)
    expected = Saliency(model, backend="reference", absolute=False).explain(x, 1)
    np.testing.assert_allclose(maps, 2 * expected, rtol=1e-6)
    assert backend.log[:3] == ["subclass", "dispatch", "collect"]


def test_a_synchronous_backend_computes_in_start_gradient_by_default() -> None:
    model, x = _mlp_inputs()
    backend = ReferenceBackend()
    assert not backend.asynchronous
    pending = backend.start_gradient(model, x, np.ones((5, 3), np.float32), None, CallOptions())
    expected = backend.gradient(model, x, np.ones((5, 3), np.float32), None, CallOptions())
    np.testing.assert_array_equal(pending(), expected)
