"""Integrated Gradients: per-sample baselines, leading-1 baselines and
``multiply_by_inputs=False``, against Captum and analytic values; refused arguments."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import IntegratedGradients
from agnostic_saliency.testing import NumpyModel, make_spec
from agnostic_saliency.testing.builders import build_torch

N, TARGETS = 4, np.array([0, 1, 2, 1])


def _setup(name: str = "cnn", n: int = N) -> tuple[NumpyModel, np.ndarray]:
    spec = make_spec(name, dtype=np.float64)
    return NumpyModel(spec), np.random.default_rng(0).normal(size=(n, *spec.input_shape))


def _blurred(x: np.ndarray) -> np.ndarray:
    """A 3x3 box blur of each channels-last image: a typical per-sample baseline."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    return sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9


# --- reference backend -------------------------------------------------------------------


def test_per_sample_baselines_give_completeness_per_sample() -> None:
    model, x = _setup()
    baselines = _blurred(x)
    maps = IntegratedGradients(model, steps=24, quadrature="gausslegendre", reducer=None,
                               baseline_value=baselines, batch_size=5).explain(x, TARGETS)
    rows = np.arange(N)
    expected = model(x)[rows, TARGETS] - model(baselines)[rows, TARGETS]
    np.testing.assert_allclose(maps.reshape(N, -1).sum(axis=1), expected, atol=1e-9)


def test_per_sample_baselines_of_a_linear_model() -> None:
    model, x = _setup("linear_vector")
    baselines = np.random.default_rng(1).normal(size=x.shape)
    maps = IntegratedGradients(model, steps=3, baseline_value=baselines).explain(x, 1)
    np.testing.assert_allclose(maps, (x - baselines) * model.spec.layers[0].weight[:, 1],
                               rtol=1e-10)


def test_a_leading_axis_of_one_is_one_baseline_for_all() -> None:
    model, x = _setup()
    baseline = np.random.default_rng(2).normal(size=x.shape[1:])
    one = IntegratedGradients(model, steps=5, baseline_value=baseline).explain(x, 0)
    lead = IntegratedGradients(model, steps=5, baseline_value=baseline[None]).explain(x, 0)
    np.testing.assert_array_equal(lead, one)
    channel = IntegratedGradients(model, steps=5, baseline_value=np.array([0.1, 0.2, 0.3]))
    full = np.broadcast_to(np.array([0.1, 0.2, 0.3]), x.shape[1:])
    np.testing.assert_array_equal(channel.explain(x, 0), IntegratedGradients(
        model, steps=5, baseline_value=full).explain(x, 0))


def test_without_multiplying_by_inputs_it_is_the_path_average_of_the_gradient() -> None:
    model, x = _setup("linear_vector")
    maps = IntegratedGradients(model, steps=4, baseline_value=0.3,
                               multiply_by_inputs=False).explain(x, 2)
    np.testing.assert_allclose(maps, np.broadcast_to(model.spec.layers[0].weight[:, 2],
                                                     x.shape), rtol=1e-12)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"baseline_value": "black"},
     r"baseline_value='black' \(str\) is not a number or an array of numbers; pass a number"),
    ({"baseline_value": None}, r"baseline_value=None \(NoneType\) is not a number"),
    ({"baseline_value": [[0.0, "x"]]}, r"is not a number or an array of numbers"),
    ({"steps": 1}, r"steps=1; pass an int of at least 2"),
    ({"steps": 0}, r"steps=0; pass an int of at least 2"),
])
def test_bad_arguments_get_our_messages(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IntegratedGradients(_setup()[0], **kwargs)


@pytest.mark.parametrize(("shape", "match"), [
    ((3, 7, 6, 3), r"baseline_value of shape \(3, 7, 6, 3\) gives 3 baselines for 4 inputs; "
                   r"pass one per input"),
    ((4, 5, 6, 3), r"baseline_value of shape \(4, 5, 6, 3\) does not broadcast to a sample "
                   r"of shape \(7, 6, 3\)"),
    ((2,), r"baseline_value of shape \(2,\) does not broadcast"),
    ((1, 1, 7, 6, 3), r"does not broadcast"),
])
def test_baselines_of_a_wrong_shape_are_refused(shape: tuple[int, ...], match: str) -> None:
    model, x = _setup()
    with pytest.raises(ValueError, match=match):
        IntegratedGradients(model, baseline_value=np.zeros(shape)).explain(x, 0)


# --- Captum -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_case() -> tuple[Any, Any, np.ndarray]:
    import torch

    model = build_torch(make_spec("cnn", layout="channels_first"))
    x = np.random.default_rng(0).normal(size=(N, 7, 6, 3)).astype(np.float32)
    return torch, model, x


def _captum_ig(torch: Any, model: Any, x: np.ndarray, baselines: np.ndarray, **kwargs: Any
               ) -> np.ndarray:
    from captum.attr import IntegratedGradients as CaptumIG

    multiply = kwargs.pop("multiply_by_inputs", True)
    inputs = torch.from_numpy(x.copy()).requires_grad_(True)
    result = CaptumIG(model, multiply_by_inputs=multiply).attribute(
        inputs, baselines=torch.from_numpy(baselines), target=torch.from_numpy(TARGETS),
        **kwargs)
    return result.detach().numpy()


@pytest.mark.parametrize("baseline_kind", ["per_sample", "leading_one"])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_matches_captum(torch_case: tuple[Any, Any, np.ndarray], baseline_kind: str,
                        multiply_by_inputs: bool, method: str) -> None:
    torch, model, x_last = torch_case
    blurred = _blurred(x_last).astype(np.float32)
    baselines = blurred if baseline_kind == "per_sample" else blurred[:1]
    x = np.ascontiguousarray(np.moveaxis(x_last, -1, 1))
    baselines = np.ascontiguousarray(np.moveaxis(baselines, -1, 1))
    expected = _captum_ig(torch, model, x, baselines, n_steps=12, method=method,
                          multiply_by_inputs=multiply_by_inputs)
    ours = IntegratedGradients(model, preset="captum", steps=12, quadrature=method,
                               baseline_value=baselines, multiply_by_inputs=multiply_by_inputs,
                               batch_size=7).explain(x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_torch_tensor_baselines_are_taken(torch_case: tuple[Any, Any, np.ndarray]) -> None:
    torch, model, x_last = torch_case
    x = np.ascontiguousarray(np.moveaxis(x_last, -1, 1))
    baselines = torch.full(x.shape, 0.25, requires_grad=True)
    tensor = IntegratedGradients(model, steps=4, baseline_value=baselines).explain(x, TARGETS)
    number = IntegratedGradients(model, steps=4, baseline_value=0.25).explain(x, TARGETS)
    np.testing.assert_array_equal(tensor, number)


def test_captum_refuses_one_step_too(torch_case: tuple[Any, Any, np.ndarray]) -> None:
    torch, model, x_last = torch_case
    x = np.ascontiguousarray(np.moveaxis(x_last, -1, 1))
    with pytest.raises(AssertionError):
        _captum_ig(torch, model, x, np.zeros_like(x), n_steps=1, method="riemann_trapezoid")
