"""The PyTorch backend hands the caller's memory to a model only once it is known safe.

A model whose forward changes its input in place gets a copy, so the caller's
array never changes; a model shown to leave its input alone gets the caller's
memory as the autograd leaf, without the copy.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import Saliency, SaliencyWarning

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


def test_a_model_that_leaves_its_input_alone_gets_the_callers_memory() -> None:
    model = _Scaled(_mlp(), no_grad=False, armed=False)
    x = _inputs()
    explainer = Saliency(model)
    first = explainer.explain(x, 2)
    second = explainer.explain(x, 2)
    assert model.seen[0] != x.ctypes.data  # the first call learns on a copy
    assert model.seen[-1] == x.ctypes.data  # then no copy is made
    expected = _exact_map(model.inner, x, 2)
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(second, first)


@pytest.mark.parametrize("no_grad", [True, False], ids=["no_grad", "autograd"])
def test_a_model_that_changes_its_input_always_gets_a_copy(no_grad: bool) -> None:
    model = _Scaled(_mlp(), no_grad=no_grad)
    x = _inputs()
    original = x.copy()
    explainer = Saliency(model)
    with warnings_as_errors():
        maps = [explainer.explain(x, 1) for _ in range(3)]
    np.testing.assert_array_equal(x, original)
    assert x.ctypes.data not in model.seen
    inner = _exact_map(model.inner, 2 * x, 1)
    # With autograd the doubling is part of the graph; under no_grad it is not.
    expected = inner if no_grad else 2 * inner
    for found in maps:
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-7)


def _armed_after_a_call(no_grad: bool, strict: bool = False) -> tuple[_Scaled, Any]:
    """A model whose in-place change starts after its explainer's first call (which
    showed that it leaves its input alone), and that explainer."""
    model = _Scaled(_mlp(), no_grad=no_grad, armed=False)
    explainer = Saliency(model, strict=strict)
    explainer.explain(_inputs(), 0)
    model.armed = True
    return model, explainer


def test_an_autograd_change_that_starts_later_is_retried_on_a_copy() -> None:
    model, explainer = _armed_after_a_call(no_grad=False)
    x = _inputs()
    original = x.copy()
    with warnings_as_errors():
        maps = explainer.explain(x, 0)  # autograd refuses the change: a retry on a copy
    np.testing.assert_array_equal(x, original)
    np.testing.assert_allclose(maps, 2 * _exact_map(model.inner, 2 * x, 0), rtol=1e-5,
                               atol=1e-7)
    model.seen.clear()
    explainer.explain(x, 0)
    assert model.seen and x.ctypes.data not in model.seen


def test_a_no_grad_change_that_starts_later_warns_once_then_gets_a_copy() -> None:
    model, explainer = _armed_after_a_call(no_grad=True)
    x = _inputs()
    original = x.copy()
    with pytest.warns(SaliencyWarning, match=r"changed its input in place outside autograd"
                                             r".*x = x.clone\(\)") as record:
        maps = explainer.explain(x, 0)
    assert {w.filename for w in record if w.category is SaliencyWarning} == {__file__}
    # Nothing can undo it: the warning says that the caller's array changed.
    np.testing.assert_array_equal(x, 2 * original)
    np.testing.assert_allclose(maps, _exact_map(model.inner, x, 0), rtol=1e-5, atol=1e-7)
    changed = x.copy()
    with warnings_as_errors():
        explainer.explain(x, 0)
    np.testing.assert_array_equal(x, changed)


def test_a_late_no_grad_change_is_an_error_with_strict() -> None:
    _, explainer = _armed_after_a_call(no_grad=True, strict=True)
    with pytest.raises(RuntimeError, match="changed its input in place.*strict=True"):
        explainer.explain(_inputs(), 0)


def test_under_inference_mode_the_private_copy_is_changed_without_a_warning() -> None:
    model, explainer = _armed_after_a_call(no_grad=True)
    x = _inputs()
    original = x.copy()
    with torch.inference_mode(), warnings_as_errors():
        maps = explainer.explain(x, 0)  # an inference tensor: the leaf is a copy of it
    np.testing.assert_array_equal(x, original)
    np.testing.assert_allclose(maps, _exact_map(model.inner, 2 * x, 0), rtol=1e-5, atol=1e-7)


class _OwnLeaf(torch.nn.Module):
    """Once ``armed``, changes a leaf of its own in place: autograd's error is the model's bug."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.calls = 0
        self.eval()

    def forward(self, x: Any) -> Any:
        self.calls += 1
        weight = torch.ones(x.shape[1], requires_grad=True)
        if self.armed:
            weight.mul_(2.0)
        return x * weight


def test_an_in_place_error_of_the_model_itself_is_raised_after_one_retry() -> None:
    model = _OwnLeaf()
    explainer = Saliency(model)
    explainer.explain(_inputs(), 0)  # it leaves its input alone: the next call gets the leaf
    model.armed, model.calls = True, 0
    with pytest.raises(ValueError, match="leaf Variable that requires grad"):
        explainer.explain(_inputs(), 0)
    assert model.calls == 2  # on the leaf, then once more on a copy


def test_inputs_the_backend_converts_are_never_copied_again() -> None:
    model = _Scaled(_mlp(), no_grad=True)  # changes its input: only a private tensor is safe
    x = _inputs().astype(np.float64)  # cast to the model's float32: a new tensor
    original = x.copy()
    with pytest.warns(SaliencyWarning, match="cast to float32"):
        maps = Saliency(model).explain(x, 1)
    assert model.got_leaf[-1]  # even on the first call: no copy of the cast tensor
    np.testing.assert_array_equal(x, original)
    np.testing.assert_allclose(maps, _exact_map(model.inner, 2 * x.astype(np.float32), 1),
                               rtol=1e-5, atol=1e-7)
