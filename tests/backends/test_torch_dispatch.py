"""The PyTorch backend's ``start_gradient``: nothing runs on the CPU before the
frontend's checks, and never a model allowed to train on inputs not yet checked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import CallOptions, Saliency, get_backend

torch = pytest.importorskip("torch")


class _CountingMlp(torch.nn.Module):
    """A seeded two-layer MLP that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),
                                          torch.nn.Linear(8, 3))
        self.calls = 0

    def forward(self, x: Any) -> Any:
        self.calls += 1
        return self.layers(x)


def _inputs(n: int = 4) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 5)).astype(np.float32)


def _analytic_gradient(model: _CountingMlp, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """d logit[target] / d x of Linear-Tanh-Linear, by the chain rule in float64."""
    first, second = (layer for layer in model.layers if isinstance(layer, torch.nn.Linear))
    w1, b1 = first.weight.detach().double().numpy(), first.bias.detach().double().numpy()
    w2 = second.weight.detach().double().numpy()
    slope = 1 - np.tanh(x.astype(np.float64) @ w1.T + b1) ** 2
    return (w2[targets] * slope) @ w1


def test_the_backend_is_asynchronous_and_takes_class_indices() -> None:
    backend = get_backend("torch")
    assert backend.asynchronous and backend.class_index_targets


@pytest.mark.parametrize("form", ["weights", "indices"])
def test_on_the_cpu_nothing_runs_before_the_result_is_asked_for(form: str) -> None:
    model, x, targets = _CountingMlp().eval(), _inputs(), np.array([0, 2, 1, 2])
    backend = get_backend("torch")
    given = np.eye(3, dtype=np.float32)[targets] if form == "weights" else targets
    result = backend.start_gradient(model, x, given, None, CallOptions())
    assert model.calls == 0
    gradient = result()
    assert model.calls == 1
    np.testing.assert_allclose(gradient, _analytic_gradient(model, x, targets), rtol=1e-5,
                               atol=1e-7)
    for reducer in (None, "max", "mean", "sum"):
        magnitude = backend.start_gradient(model, x, given, None, CallOptions(),
                                           magnitude=(reducer, 1))()
        expected = np.abs(gradient) if reducer is None else getattr(np, reducer)(
            np.abs(gradient), axis=1)
        np.testing.assert_allclose(magnitude, expected, rtol=1e-6)


def test_class_indices_out_of_range_are_refused_by_the_backend_too() -> None:
    model = _CountingMlp().eval()
    with pytest.raises(ValueError, match="target 3 out of range for a model with 3 outputs"):
        get_backend("torch").gradient(model, _inputs(), np.array([0, 3, 1, 2]), None,
                                      CallOptions())


def test_on_the_cpu_non_finite_inputs_are_refused_before_the_gradient_runs() -> None:
    model, x = _CountingMlp().eval(), _inputs()
    explainer = Saliency(model)
    explainer.explain(x, [0, 2, 1, 2])  # the first call also learns the output's shape
    model.calls = 0
    x[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 non-finite values \(first at sample 2"):
        explainer.explain(x, [0, 2, 1, 2])
    assert model.calls == 0


class _Normalized(torch.nn.Module):
    """Batch norm, then a dense layer: training mode updates the running statistics."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = torch.nn.BatchNorm1d(5)
        self.dense = torch.nn.Linear(5, 3)

    def forward(self, x: Any) -> Any:
        return self.dense(self.norm(x))


@pytest.mark.parametrize("targets", [None, [0, 2, 1, 2]], ids=["predicted", "given"])
def test_a_model_allowed_to_train_never_sees_non_finite_inputs(targets: Any) -> None:
    """Running it would write NaN into its batch-norm statistics before the error."""
    model = _Normalized().train()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    x = _inputs()
    x[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"1 non-finite values \(first at sample 1"):
        Saliency(model, allow_training_mode=True).explain(x, targets)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    # Finite inputs still run in training mode, and move the statistics as PyTorch does.
    Saliency(model, allow_training_mode=True).explain(_inputs(), targets)
    assert torch.isfinite(model.norm.running_mean).all()
    assert not torch.equal(model.norm.running_mean, state["norm.running_mean"])
