"""The PyTorch backend's direct call of the autograd engine, and when it falls back
to ``torch.autograd.grad``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from torch_cnn import TARGETS as _TARGETS
from torch_cnn import small_cnn as _cnn

from agnostic_saliency import Saliency

torch = pytest.importorskip("torch")
_autograd = pytest.importorskip("agnostic_saliency_torch._autograd")

@pytest.fixture
def public_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the calls of ``torch.autograd.grad``, with a fresh probe of the engine."""
    calls: list[int] = []
    public = torch.autograd.grad

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return public(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    _autograd.reset()
    yield calls
    _autograd.reset()


def _public_maps(explain: Callable[[], np.ndarray]) -> np.ndarray:
    """``explain()`` with the engine refused, so that ``torch.autograd.grad`` runs."""
    saved = _autograd._engine
    _autograd._engine = False
    try:
        return explain()
    finally:
        _autograd._engine = saved


def _sum_of_logits(model: Any, x: Any, targets: Any) -> Any:
    return model(x).gather(1, targets[:, None])[:, 0]


@pytest.mark.parametrize("operator", [None, _sum_of_logits], ids=["one-hot", "operator"])
def test_on_the_cpu_the_engine_runs_and_gives_the_public_functions_maps(
        public_calls: list[int], operator: Any) -> None:
    model, x, expected = _cnn()
    explainer = Saliency(model, operator=operator)
    maps = explainer.explain(x, _TARGETS)
    assert public_calls == []  # the engine, not torch.autograd.grad
    assert _autograd._engine is torch.autograd.Variable._execution_engine
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    public = _public_maps(lambda: explainer.explain(x, _TARGETS))
    assert len(public_calls) == 1
    np.testing.assert_array_equal(maps, public)


class _WrongEngine:
    """An engine whose ``run_backward`` has another signature, or answers wrongly."""

    def __init__(self, failure: str) -> None:
        self.failure = failure

    def run_backward(self, *args: Any) -> Any:
        if self.failure == "signature":
            raise TypeError("run_backward(): incompatible function arguments")
        (leaf,) = args[4]
        return (torch.zeros_like(leaf),)


@pytest.mark.parametrize("failure", ["signature", "wrong gradient"])
def test_an_engine_that_fails_the_probe_is_never_used(
        public_calls: list[int], monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    model, x, expected = _cnn()
    monkeypatch.setattr(_autograd, "_find_engine", lambda: _WrongEngine(failure))
    maps = Saliency(model).explain(x, _TARGETS)
    assert _autograd._engine is False and len(public_calls) == 1
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


class _CountingMode(torch.overrides.TorchFunctionMode):
    """A ``__torch_function__`` mode that counts what it sees, ``torch.autograd.grad`` too."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


def test_under_a_torch_function_mode_the_public_function_runs(public_calls: list[int]) -> None:
    """The mode must see the gradient call, as it would in the user's own code."""
    model, x, expected = _cnn()
    mode = _CountingMode()
    with mode:
        maps = Saliency(model).explain(x, _TARGETS)
    assert public_calls and torch.autograd.grad in mode.seen
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


def test_with_autograd_debug_logging_the_public_function_runs(
        public_calls: list[int], caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG, ``torch.autograd.grad`` logs each backward node; that must not be lost."""
    model, x, expected = _cnn()
    with caplog.at_level(logging.DEBUG, logger="torch.autograd.graph"):
        maps = Saliency(model).explain(x, _TARGETS)
    assert len(public_calls) == 1
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


def test_weights_of_another_shape_or_dtype_go_to_the_public_function(
        public_calls: list[int]) -> None:
    """Only weights that match the outputs exactly reach the engine: PyTorch's own
    checks and casts handle the rest."""
    leaf = torch.tensor([[1.0, 2.0]], requires_grad=True)
    scale = torch.tensor([3.0, 4.0])
    grad = _autograd.input_gradient(leaf * scale, leaf, torch.ones(1, 2, dtype=torch.float64))
    assert len(public_calls) == 1 and torch.equal(grad, torch.tensor([[3.0, 4.0]]))
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        _autograd.input_gradient(leaf * scale, leaf, torch.ones(1, 2, 1))
    assert len(public_calls) == 2
    grad = _autograd.input_gradient(leaf * scale, leaf, torch.tensor([[1.0, -1.0]]))
    assert len(public_calls) == 2 and torch.equal(grad, torch.tensor([[3.0, -4.0]]))
