"""A model whose forward changes its input in place changes only the backend's copy.

The backend differentiates with respect to a leaf of its own and feeds the model a
copy of it, on every call: the caller's array never changes, the map is the
gradient of what the model computed, and nothing is learnt about the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import CallOptions, Saliency, SaliencyWarning, get_backend

torch = pytest.importorskip("torch")


def _mlp() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(),
                               torch.nn.Linear(7, 3)).eval()


def _inputs() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)


def _exact_map(model: Any, x: np.ndarray, target: int) -> np.ndarray:
    """|d output[target] / d x|, by autograd on a private float64 copy."""
    tensor = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    model.double()
    try:
        (grad,) = torch.autograd.grad(model(tensor)[:, target].sum(), tensor)
    finally:
        model.float()
    return np.abs(grad.numpy())


@contextmanager
def warnings_as_errors() -> Iterator[None]:
    """A context in which any warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


class _Scaled(torch.nn.Module):
    """Scales its input by 2 in place: always, or only when ``armed`` is set."""

    def __init__(self, inner: Any, no_grad: bool, armed: bool = True) -> None:
        super().__init__()
        self.inner, self.no_grad, self.armed = inner, no_grad, armed
        self.seen: list[int] = []  # address of each input the forward got
        self.got_leaf: list[bool] = []  # per forward: whether it got the autograd leaf itself
        self.eval()

    def forward(self, x: Any) -> Any:
        self.seen.append(x.data_ptr())
        self.got_leaf.append(x.requires_grad and x.is_leaf)
        if self.armed:
            if self.no_grad:
                with torch.no_grad():
                    x.mul_(2.0)
            else:
                x = x.mul_(2.0)
        return self.inner(x)


@pytest.mark.parametrize("no_grad", [True, False], ids=["no_grad", "autograd"])
def test_a_model_that_changes_its_input_always_gets_a_copy(no_grad: bool) -> None:
    model = _Scaled(_mlp(), no_grad=no_grad)
    x = _inputs()
    original = x.copy()
    explainer = Saliency(model)
    with warnings_as_errors():
        maps = [explainer.explain(x, 1) for _ in range(3)]
    np.testing.assert_array_equal(x, original)
    assert x.ctypes.data not in model.seen and not any(model.got_leaf)
    inner = _exact_map(model.inner, 2 * x, 1)
    # With autograd the doubling is part of the graph; under no_grad it is not.
    expected = inner if no_grad else 2 * inner
    for found in maps:
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-7)


def test_a_change_that_starts_after_a_call_still_reaches_only_the_copy() -> None:
    model = _Scaled(_mlp(), no_grad=True, armed=False)
    explainer = Saliency(model, strict=True)  # no warning either
    x = _inputs()
    original = x.copy()
    np.testing.assert_allclose(explainer.explain(x, 0), _exact_map(model.inner, x, 0),
                               rtol=1e-5, atol=1e-7)
    model.armed = True
    maps = explainer.explain(x, 0)
    np.testing.assert_array_equal(x, original)
    np.testing.assert_allclose(maps, _exact_map(model.inner, 2 * x, 0), rtol=1e-5, atol=1e-7)


def test_under_inference_mode_the_private_copy_is_changed_without_a_warning() -> None:
    model = _Scaled(_mlp(), no_grad=False)
    x = _inputs()
    original = x.copy()
    with torch.inference_mode(), warnings_as_errors():
        maps = Saliency(model).explain(x, 0)
    np.testing.assert_array_equal(x, original)
    np.testing.assert_allclose(maps, 2 * _exact_map(model.inner, 2 * x, 0), rtol=1e-5,
                               atol=1e-7)


class _OwnLeaf(torch.nn.Module):
    """Changes a leaf of its own in place: autograd's error is the model's bug."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.eval()

    def forward(self, x: Any) -> Any:
        self.calls += 1
        weight = torch.ones(x.shape[1], requires_grad=True)
        weight.mul_(2.0)
        return x * weight


def test_an_in_place_error_of_the_model_itself_is_raised_without_a_retry() -> None:
    model = _OwnLeaf()
    with pytest.raises(ValueError, match="model failed.*leaf Variable that requires grad"):
        get_backend("torch").gradient(model, _inputs(), np.zeros(4, int), None, CallOptions())
    assert model.calls == 1


def test_inputs_the_backend_converts_reach_the_model_as_a_copy() -> None:
    model = _Scaled(_mlp(), no_grad=True)
    x = _inputs().astype(np.float64)  # cast to the model's float32
    original = x.copy()
    with pytest.warns(SaliencyWarning, match="cast to float32"):
        maps = Saliency(model).explain(x, 1)
    assert not any(model.got_leaf)
    np.testing.assert_array_equal(x, original)
    np.testing.assert_allclose(maps, _exact_map(model.inner, 2 * x.astype(np.float32), 1),
                               rtol=1e-5, atol=1e-7)
