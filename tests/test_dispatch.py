"""Backends that compute asynchronously (``dispatch_gradient``): the frontend checks the
inputs while the first gradient is computed, and nothing else changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import CallOptions, Saliency, SmoothGrad, get_backend
from agnostic_saliency.backend import gradient_dispatcher
from agnostic_saliency.testing import NumpyModel, ReferenceBackend, make_spec


class DispatchingBackend(ReferenceBackend):
    """The reference backend with a ``dispatch_gradient``; it logs what it is asked."""

    def __init__(self, dispatch_error: Exception | None = None) -> None:
        self.log: list[str] = []
        self.dispatch_error = dispatch_error

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: CallOptions) -> np.ndarray:
        self.log.append("gradient")
        return super().gradient(model, inputs, targets, operator, options)

    def dispatch_gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                          options: CallOptions) -> Callable[[], np.ndarray]:
        self.log.append("dispatch")
        if self.dispatch_error is not None:
            raise self.dispatch_error
        result = super().gradient(model, inputs, targets, operator, options)

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
    # The first gradient is dispatched, the next chunks are computed as usual.
    chunks = 1 if batch_size is None else 3
    assert backend.log == ["dispatch", "collect"] + ["gradient"] * (chunks - 1)


def test_methods_with_several_gradients_per_chunk_are_unchanged() -> None:
    model, x = _mlp_inputs()
    backend = DispatchingBackend()
    maps = SmoothGrad(model, backend=backend, nb_samples=4, seed=0).explain(x, 1)
    expected = SmoothGrad(model, backend="reference", nb_samples=4, seed=0).explain(x, 1)
    np.testing.assert_array_equal(maps, expected)
    assert backend.log[:2] == ["dispatch", "collect"] and set(backend.log[2:]) <= {"gradient"}


@pytest.mark.parametrize("targets", [None, 1])
def test_non_finite_inputs_are_refused_and_the_result_is_never_used(targets: Any) -> None:
    model, x = _mlp_inputs()
    x[3, 2] = np.nan
    backend = DispatchingBackend()
    with pytest.raises(ValueError, match=r"inputs contain 1 non-finite values \(first at sample 3"):
        Saliency(model, backend=backend).explain(x, targets)
    assert backend.log == ["dispatch"]


def test_a_model_allowed_to_train_is_never_dispatched() -> None:
    """Its forward pass may change its state: it only ever sees checked inputs."""
    model, x = _mlp_inputs()
    backend = DispatchingBackend()
    maps = Saliency(model, backend=backend, allow_training_mode=True).explain(x, 1)
    np.testing.assert_array_equal(maps, Saliency(model, backend="reference").explain(x, 1))
    assert backend.log == ["gradient"]
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        Saliency(model, backend=backend, allow_training_mode=True).explain(x, 1)
    assert backend.log == ["gradient"]


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
    """Overrides ``gradient`` alone: its gradients must be the ones used."""

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: CallOptions) -> np.ndarray:
        return 2 * super().gradient(model, inputs, targets, operator, options)


class _DelegatingWrapper:
    """Delegates everything but ``gradient`` to a dispatching backend."""

    def __init__(self) -> None:
        self.inner = DispatchingBackend()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def gradient(self, *args: Any) -> np.ndarray:
        return 2 * self.inner.gradient(*args)


def _patched_instance() -> DispatchingBackend:
    backend = DispatchingBackend()
    reference = get_backend("reference")
    backend.gradient = lambda *args: 2 * reference.gradient(*args)  # type: ignore[method-assign]
    return backend


@pytest.mark.parametrize("make", [_RecordingSubclass, _DelegatingWrapper, _patched_instance])
def test_a_gradient_overridden_without_dispatch_is_the_one_used(make: Callable[[], Any]) -> None:
    model, x = _mlp_inputs()
    backend = make()
    assert gradient_dispatcher(backend) is None
    maps = Saliency(model, backend=backend, absolute=False).explain(x, 1)
    expected = Saliency(model, backend="reference", absolute=False).explain(x, 1)
    np.testing.assert_allclose(maps, 2 * expected, rtol=1e-6)


def test_only_backends_that_define_both_methods_dispatch() -> None:
    backend = DispatchingBackend()
    assert gradient_dispatcher(backend) == backend.dispatch_gradient
    assert gradient_dispatcher(get_backend("reference")) is None


class _DispatchLogged(DispatchingBackend):
    """Defines ``dispatch_gradient`` below the class that defines ``gradient``."""

    def dispatch_gradient(self, *args: Any) -> Callable[[], np.ndarray]:
        self.log.append("subclass")
        return super().dispatch_gradient(*args)


def test_a_dispatch_defined_in_a_subclass_of_the_gradients_class_is_used() -> None:
    model, x = _mlp_inputs()
    backend = _DispatchLogged()
    assert gradient_dispatcher(backend) == backend.dispatch_gradient
    Saliency(model, backend=backend).explain(x, 1)
    assert backend.log[:2] == ["subclass", "dispatch"]
