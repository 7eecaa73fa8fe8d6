"""Backends with ``magnitude_maps``: when the frontend asks for ``|gradient|`` reduced,
and how it checks what comes back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import IntegratedGradients, Saliency, SaliencyWarning, SmoothGrad
from agnostic_saliency.testing import NumpyModel, make_spec
from agnostic_saliency.testing.reference import ReferenceBackend


class Recording(ReferenceBackend):
    """The reference backend, recording the ``magnitude`` of each gradient call."""

    name = "recording"
    magnitude_maps = (None, "max", "mean", "sum")  # declared again beside its gradient

    def __init__(self) -> None:
        self.asked: list[Any] = []

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: Any, magnitude: Any = None) -> np.ndarray:
        self.asked.append(magnitude)
        return super().gradient(model, inputs, targets, operator, options, magnitude)


class Corrupting(Recording):
    """Returns ``corrupt(magnitude map)`` for magnitude requests."""

    magnitude_maps = (None, "max", "mean", "sum")

    def __init__(self, corrupt: Any) -> None:
        super().__init__()
        self.corrupt = corrupt

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: Any, magnitude: Any = None) -> np.ndarray:
        result = super().gradient(model, inputs, targets, operator, options, magnitude)
        return result if magnitude is None else self.corrupt(result)


class SignedOnly(ReferenceBackend):
    """Declares no magnitude maps: must never be asked for them."""

    magnitude_maps = ()

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: Any, magnitude: Any = None) -> np.ndarray:
        assert magnitude is None
        return super().gradient(model, inputs, targets, operator, options)


def _images(n: int = 5) -> tuple[NumpyModel, np.ndarray]:
    spec = make_spec("cnn")
    x = np.random.default_rng(0).normal(size=(n, *spec.input_shape)).astype(np.float32)
    return NumpyModel(spec), x


def _signed(model: NumpyModel, x: np.ndarray, targets: Any) -> np.ndarray:
    return Saliency(model, backend=SignedOnly(), reducer=None, absolute=False).explain(x,
                                                                                       targets)


@pytest.mark.parametrize(("kwargs", "asked"), [
    ({}, ("max", 3)),
    ({"reducer": "mean"}, ("mean", 3)),
    ({"reducer": "sum"}, ("sum", 3)),
    ({"reducer": None}, (None, 3)),
    ({"reducer": "min"}, None),  # a zero minimum says nothing of the gradient
    ({"absolute": False}, None),
    ({"preset": "pair"}, None),
])
def test_saliency_asks_for_what_its_map_needs_and_gets_the_same_map(
        kwargs: dict[str, Any], asked: Any) -> None:
    model, x = _images()
    backend = Recording()
    maps = Saliency(model, backend=backend, **kwargs).explain(x, 2)
    assert set(backend.asked) == {asked}
    expected = Saliency(model, backend=SignedOnly(), **kwargs).explain(x, 2)
    np.testing.assert_allclose(maps, expected, rtol=1e-6)


def test_vectors_are_asked_for_absolute_values_only() -> None:
    spec = make_spec("mlp")
    x = np.random.default_rng(1).normal(size=(4, *spec.input_shape)).astype(np.float32)
    backend = Recording()
    maps = Saliency(NumpyModel(spec), backend=backend).explain(x, 1)
    assert backend.asked == [(None, 1)]
    np.testing.assert_array_equal(maps, np.abs(_signed(NumpyModel(spec), x, 1)))


@pytest.mark.parametrize("method", [SmoothGrad, IntegratedGradients])
def test_methods_that_need_signed_gradients_never_ask(method: Any) -> None:
    model, x = _images(2)
    backend = Recording()
    method(model, backend=backend).explain(x, 0)
    assert set(backend.asked) == {None}


def test_chunks_are_reduced_by_the_backend_and_written_in_place() -> None:
    model, x = _images(7)
    backend = Recording()
    maps = Saliency(model, backend=backend, batch_size=3).explain(x, 1)
    assert backend.asked == [("max", 3)] * 3
    np.testing.assert_allclose(maps, np.abs(_signed(model, x, 1)).max(axis=-1), rtol=1e-6)


def test_a_backend_that_declares_none_is_never_asked() -> None:
    model, x = _images(2)
    maps = Saliency(model, backend=SignedOnly()).explain(x, 0)
    np.testing.assert_allclose(maps, np.abs(_signed(model, x, 0)).max(axis=-1), rtol=1e-6)


class ReducesOnly(Recording):
    """Declares the reductions but not ``|gradient|`` alone (the JAX backend's choice)."""

    magnitude_maps = ("max", "sum")


@pytest.mark.parametrize(("kwargs", "asked"), [
    ({}, ("max", 3)), ({"reducer": "sum"}, ("sum", 3)), ({"reducer": "mean"}, None),
    ({"reducer": None}, None),
])
def test_only_the_declared_reductions_are_asked_for(kwargs: dict[str, Any], asked: Any
                                                     ) -> None:
    model, x = _images()
    backend = ReducesOnly()
    maps = Saliency(model, backend=backend, **kwargs).explain(x, 2)
    assert backend.asked == [asked]
    expected = Saliency(model, backend=SignedOnly(), **kwargs).explain(x, 2)
    np.testing.assert_allclose(maps, expected, rtol=1e-6)


def test_non_finite_magnitude_maps_are_refused_naming_the_sample() -> None:
    def poison(result: np.ndarray) -> np.ndarray:
        result = result.copy()
        result[3, 0, 0] = np.nan
        return result

    model, x = _images()
    with pytest.raises(FloatingPointError, match=r"\[3\]"):
        Saliency(model, backend=Corrupting(poison)).explain(x, 0)


def test_a_magnitude_map_of_the_wrong_shape_is_refused() -> None:
    model, x = _images()
    with pytest.raises(RuntimeError, match=r"shape"):
        Saliency(model, backend=Corrupting(lambda result: result[..., None])).explain(x, 0)


def test_zero_magnitude_rows_are_reported_as_zero_maps() -> None:
    def silence(result: np.ndarray) -> np.ndarray:
        result = result.copy()
        result[1] = 0.0
        return result

    model, x = _images()
    with pytest.warns(SaliencyWarning, match=r"\[1\]"):
        Saliency(model, backend=Corrupting(silence)).explain(x, 0)
