"""The PyTorch backend takes the absolute value of a gradient in place only when
nothing else refers to its memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from torch_cnn import TARGETS, small_cnn

from agnostic_saliency import Saliency

torch = pytest.importorskip("torch")
_ownership = pytest.importorskip("agnostic_saliency_torch._ownership")

#: A large map, as at batch 256: above the 32768 values from which a gradient that is
#: not the backend's own gets PyTorch's absolute value into a new array.
_ROWS, _FEATURES = 64, 784


@pytest.fixture(autouse=True)
def fresh_probe() -> Iterator[None]:
    _ownership.reset()
    yield
    _ownership.reset()


def test_a_new_tensor_is_owned_and_any_other_holder_is_seen() -> None:
    tensor = torch.ones(6)
    owned = _ownership.sole_owner(tensor)
    assert owned
    kept = [tensor]
    in_list = _ownership.sole_owner(tensor)
    del kept
    view = tensor.view(2, 3)
    with_view = _ownership.sole_owner(tensor)
    of_view = _ownership.sole_owner(view)
    del view
    array = tensor.numpy()
    with_array = _ownership.sole_owner(tensor)
    del array
    assert not (in_list or with_view or of_view or with_array)
    storage = torch.ones(6).untyped_storage()
    held_storage = torch.tensor([], dtype=torch.float32).set_(storage)
    with_storage = _ownership.sole_owner(held_storage)
    numpy_memory = torch.from_numpy(np.ones(6, np.float32))
    from_numpy = _ownership.sole_owner(numpy_memory)
    parameter = torch.nn.Parameter(torch.ones(6), requires_grad=False)
    of_parameter = _ownership.sole_owner(parameter)
    assert not (with_storage or from_numpy or of_parameter)


def test_an_argument_evaluated_before_the_call_is_a_second_holder() -> None:
    tensor = torch.ones(6)
    pair = (tensor, _ownership.sole_owner(tensor))
    assert pair[1] is False


def test_without_the_counters_nothing_is_owned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    tensor = torch.ones(6)
    owned = _ownership.sole_owner(tensor)
    assert owned is False


class _PassThrough(torch.nn.Module):
    """``x + 0``: autograd hands the weights of the backward pass on as the gradient."""

    def forward(self, x: Any) -> Any:
        return x + 0.0


def test_weights_passed_through_as_the_gradient_are_left_alone() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(_ROWS, _FEATURES)).astype(np.float32)
    weights = rng.normal(size=(_ROWS, _FEATURES)).astype(np.float32)
    given = weights.copy()
    maps = Saliency(_PassThrough().eval()).explain(x, weights)
    np.testing.assert_array_equal(weights, given)  # the caller's targets unchanged
    np.testing.assert_array_equal(maps, np.abs(given))


class _HookedLinear(torch.nn.Module):
    """A linear layer after ``x + 0``, whose tensor hook keeps the gradient of ``x + 0``
    (``keep`` of it): autograd passes that very tensor on as the input's gradient."""

    def __init__(self, keep: Any = lambda grad: grad) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dense = torch.nn.Linear(_FEATURES, 10)
        self.keep = keep
        self.kept: list[Any] = []

    def forward(self, x: Any) -> Any:
        shifted = x + 0.0
        if shifted.requires_grad:
            shifted.register_hook(lambda grad: self.kept.append(self.keep(grad)))
        return self.dense(shifted)


@pytest.mark.parametrize("keep", [lambda grad: grad, lambda grad: grad.numpy(),
                                  lambda grad: grad.view(-1)],
                         ids=["tensor", "numpy", "view"])
def test_a_gradient_kept_by_a_hook_keeps_its_signs(keep: Any) -> None:
    model = _HookedLinear(keep).eval()
    x = np.random.default_rng(1).normal(size=(_ROWS, _FEATURES)).astype(np.float32)
    targets = np.arange(_ROWS) % 10
    maps = Saliency(model).explain(x, targets)
    signed = model.dense.weight.detach().numpy()[targets]  # d (W x + b)[t] / dx = W[t]
    (kept,) = model.kept
    np.testing.assert_array_equal(np.asarray(kept).reshape(signed.shape), signed)
    np.testing.assert_array_equal(maps, np.abs(signed))


class _ReturnsBuffer(torch.autograd.Function):
    """A backward pass that returns a tensor the model keeps, as it is."""

    @staticmethod
    def forward(ctx: Any, x: Any, gradient: Any) -> Any:
        if len(gradient) != len(x):  # the frontend's first look at the outputs
            gradient = gradient[:len(x)]
        ctx.gradient = gradient
        return (x * gradient).sum(dim=1, keepdim=True)

    @staticmethod
    def backward(ctx: Any, grad_output: Any) -> Any:
        return ctx.gradient, None


class _BufferModel(torch.nn.Module):
    def __init__(self, gradient: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("gradient", torch.from_numpy(gradient.copy()))

    def forward(self, x: Any) -> Any:
        return _ReturnsBuffer.apply(x, self.gradient)


def test_a_tensor_returned_by_a_custom_backward_is_left_alone() -> None:
    rng = np.random.default_rng(2)
    signed = rng.normal(size=(_ROWS, _FEATURES)).astype(np.float32)
    model = _BufferModel(signed).eval()
    x = rng.normal(size=(_ROWS, _FEATURES)).astype(np.float32)
    maps = Saliency(model).explain(x, 0)  # one output: weights of ones
    np.testing.assert_array_equal(model.gradient.numpy(), signed)
    np.testing.assert_array_equal(maps, np.abs(signed))


@pytest.fixture
def in_place(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each map of the backend was taken in the gradient's memory."""
    host = pytest.importorskip("agnostic_saliency_torch._host")
    answers: list[bool] = []
    magnitude_map = host.magnitude_map

    def spy(grad: Any, magnitude: Any, in_place: bool = False) -> Any:
        answers.append(in_place)
        return magnitude_map(grad, magnitude, in_place)

    monkeypatch.setattr(host, "magnitude_map", spy)
    return answers


@pytest.mark.parametrize("rows", [1, _ROWS])
def test_maps_in_the_gradients_memory_are_exact_and_independent(
        rows: int, in_place: list[bool]) -> None:
    torch.manual_seed(0)
    dense = torch.nn.Linear(_FEATURES, 10).eval()
    x = np.random.default_rng(3).normal(size=(rows, _FEATURES)).astype(np.float32)
    targets = np.arange(rows) % 10
    explainer = Saliency(dense)
    first, second = explainer.explain(x, targets), explainer.explain(x, targets)
    assert in_place == [True, True]
    expected = np.abs(dense.weight.detach().numpy()[targets])
    np.testing.assert_array_equal(first, expected)
    assert first.flags.writeable and not np.shares_memory(first, second)
    first[:] = -1  # the caller's array: writing to it changes nothing else
    np.testing.assert_array_equal(second, expected)
    np.testing.assert_array_equal(explainer.explain(x, targets), expected)


def test_image_maps_are_reduced_from_a_new_array_to_the_exact_maps(
        in_place: list[bool]) -> None:
    model, x, expected = small_cnn()
    maps = Saliency(model).explain(x, TARGETS)
    assert in_place == [False]  # measured slower in place before the reduction
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


def test_shared_gradients_are_not_taken_in_place(in_place: list[bool]) -> None:
    x = np.random.default_rng(4).normal(size=(2, _FEATURES)).astype(np.float32)
    Saliency(_HookedLinear().eval()).explain(x, [0, 1])
    Saliency(_PassThrough().eval()).explain(x, np.ones_like(x))
    assert in_place == [False, False]
