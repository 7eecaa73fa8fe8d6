"""The PyTorch backend with models on a CUDA device (run with ``AGNOSTIC_SALIENCY_GPU=1``).

The same weights on the CPU are the oracle: under ``full_precision()`` (TF32 off)
a GPU's float32 gradient equals the CPU's to float32 rounding.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import (
    CallOptions,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    compare,
    get_backend,
)
from agnostic_saliency.testing import BackendConformanceTests, ModelSpec, make_spec
from agnostic_saliency.testing.builders import build_torch
from agnostic_saliency.testing.composite_builders import (
    torch_embedding_model,
    torch_masked_model,
    torch_product_model,
    torch_static_batch_model,
)
from agnostic_saliency.testing.reference import NumpyModel

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
DEVICE = os.environ.get("AGNOSTIC_SALIENCY_GPU_DEVICE", "cuda")


class TestTorchCudaBackend(BackendConformanceTests):
    layout = "channels_first"

    def backend(self) -> str:
        return "torch"

    def build_model(self, spec: ModelSpec) -> Any:
        return build_torch(spec).to(DEVICE)

    def to_framework(self, array: np.ndarray) -> Any:
        return torch.from_numpy(array.copy()).to(DEVICE)

    def build_static_batch_model(self, spec: ModelSpec, batch: int) -> Any:
        return torch_static_batch_model(spec, batch).to(DEVICE)

    def build_product_model(self, first: ModelSpec, second: ModelSpec,
                            names: tuple[str, str] | None = None) -> Any:
        return torch_product_model(first, second, names).to(DEVICE)

    def build_masked_model(self, spec: ModelSpec) -> Any:
        return torch_masked_model(spec).to(DEVICE)

    def build_embedding_model(self, spec: ModelSpec, table: np.ndarray) -> tuple[Any, Any]:
        model, layer = torch_embedding_model(spec, table)
        return model.to(DEVICE), layer  # .to moves the layer in place


@pytest.fixture
def full_precision() -> Any:
    with get_backend("torch").full_precision():
        yield


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 7, 6)).astype(np.float32)


def _on_both(model: Any) -> tuple[Any, Any]:
    """``model`` on the CPU and a copy on the device."""
    return model, copy.deepcopy(model).to(DEVICE)


@pytest.mark.parametrize(("method", "kwargs"), [
    (Saliency, {}),
    (Saliency, {"reducer": None, "absolute": False}),
    (SmoothGrad, {"nb_samples": 5, "noise": 0.2, "seed": 3, "batch_size": 4}),
    (IntegratedGradients, {"steps": 8, "batch_size": 7}),
])
def test_device_maps_equal_cpu_maps(method: Any, kwargs: dict[str, Any],
                                    full_precision: None) -> None:
    cpu, device = _on_both(build_torch(make_spec("cnn", layout="channels_first")))
    x, targets = _images(), np.array([0, 1, 2, 1, 0, 2])
    expected = method(cpu, **kwargs).explain(x, targets)
    maps = method(device, **kwargs).explain(x, targets)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_device_map_is_close_to_exact_at_torch_default_precision() -> None:
    """Outside ``full_precision`` cuDNN may use TF32 (10-bit mantissa) for convolutions."""
    spec = make_spec("cnn", layout="channels_first")
    x, targets = _images(), np.array([0, 1, 2, 1, 0, 2])
    maps = Saliency(build_torch(spec).to(DEVICE)).explain(x, targets)
    exact = NumpyModel(spec.cast(np.float64)).input_gradient(x.astype(np.float64),
                                                             np.eye(3)[targets])
    expected = np.abs(exact).max(axis=1)
    np.testing.assert_allclose(maps, expected, rtol=1e-2, atol=1e-3 * expected.max())


def test_explaining_leaves_model_and_inputs_as_they_were() -> None:
    model = build_torch(make_spec("mlp")).to(DEVICE)
    model[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {name: t.clone() for name, t in model.state_dict().items()}
    x = np.random.default_rng(1).normal(size=(5, *make_spec("mlp").input_shape))
    x = x.astype(np.float32)
    kept = x.copy()
    Saliency(model).explain(x, 1)
    np.testing.assert_array_equal(x, kept)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_model_gives_float32_maps_close_to_float32_model(dtype: str) -> None:
    cpu, device = _on_both(build_torch(make_spec("cnn", layout="channels_first")))
    x, targets = _images(), np.array([0, 1, 2, 1, 0, 2])
    expected = Saliency(cpu).explain(x, targets)
    maps = Saliency(device.to(getattr(torch, dtype))).explain(x, targets)
    assert maps.dtype == np.float32
    np.testing.assert_allclose(maps, expected, rtol=5e-2, atol=2e-2 * expected.max())


class _ViewHead(torch.nn.Module):
    """A convolution, then ``.view``: fails on channels-last activations, so it must be
    fed the NCHW layout it was written for."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4 * 5 * 4, 3)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)

    def forward(self, x: Any) -> Any:
        hidden = torch.tanh(self.conv(x))
        return self.head(hidden.view(len(hidden), -1))


def test_a_plain_layout_model_gets_plain_inputs_on_the_device(full_precision: None) -> None:
    cpu, device = _on_both(_ViewHead().eval())
    x, targets = _images(), np.array([0, 1, 2, 1, 0, 2])
    expected = Saliency(cpu).explain(x, targets)
    np.testing.assert_allclose(Saliency(device).explain(x, targets), expected, rtol=1e-5,
                               atol=1e-6 * expected.max())


def test_a_channels_last_model_on_the_device_equals_the_cpu(full_precision: None) -> None:
    spec = make_spec("cnn", layout="channels_first")
    cpu, device = _on_both(build_torch(spec))
    device = device.to(memory_format=torch.channels_last)
    x, targets = _images(), np.array([0, 1, 2, 1, 0, 2])
    expected = Saliency(cpu, reducer=None, absolute=False).explain(x, targets)
    maps = Saliency(device, reducer=None, absolute=False).explain(x, targets)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


class _LastStep(torch.nn.Module):
    """An LSTM over the sequence, then a linear head on the last step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lstm = torch.nn.LSTM(4, 8, batch_first=True)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: Any) -> Any:
        steps, _ = self.lstm(x)
        return self.head(steps[:, -1])


def test_cudnn_rnn_in_eval_mode_is_refused_with_advice_that_works(full_precision: None
                                                                  ) -> None:
    cpu, device = _on_both(_LastStep().eval())
    x = np.random.default_rng(2).normal(size=(5, 6, 4)).astype(np.float32)
    expected = Saliency(cpu).explain(x, 1)
    try:
        maps = Saliency(device).explain(x, 1)  # a PyTorch that can differentiate it
    except RuntimeError as error:
        assert "torch.backends.cudnn.flags(enabled=False)" in str(error)
        with torch.backends.cudnn.flags(enabled=False):
            maps = Saliency(device).explain(x, 1)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6 * expected.max())
    assert not device.training


def test_compare_turns_tf32_off_and_restores_the_callers_settings() -> None:
    spec = make_spec("cnn", layout="channels_first")
    cpu, device = _on_both(build_torch(spec))
    x = np.moveaxis(_images(), 1, -1)
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("high")  # TF32 allowed, as many users set it
    torch.backends.cudnn.allow_tf32 = True
    try:
        report = compare({"device": Saliency(device), "cpu": Saliency(cpu)}, x, 1)
        after = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
    assert after == ("high", True)
    assert report.row("device", "cpu").relative_error < 1e-5, report.table()


def test_parameters_on_the_cpu_and_the_device_are_refused() -> None:
    if DEVICE == "cpu":
        pytest.skip("needs a second device")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2).to(DEVICE))
    with pytest.raises(ValueError, match=r"several devices \[cpu, cuda:0\]"):
        Saliency(model.eval()).explain(np.ones((2, 4), np.float32), 0)


def test_concurrent_calls_on_one_device_model_equal_sequential_calls() -> None:
    explainer = Saliency(build_torch(make_spec("cnn", layout="channels_first")).to(DEVICE),
                         batch_size=4)
    x, targets = _images(24), np.arange(24) % 3
    sequential = [explainer.explain(x[i::4], targets[i::4]) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda i: explainer.explain(x[i::4], targets[i::4]),
                                 list(range(4)) * 3))
    for index, maps in enumerate(parallel):
        np.testing.assert_array_equal(maps, sequential[index % 4])


class _Counting(torch.nn.Module):
    """The test CNN, counting its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = build_torch(make_spec("cnn", layout="channels_first"))
        self.calls = 0

    def forward(self, x: Any) -> Any:
        self.calls += 1
        return self.inner(x)


def test_start_gradient_queues_the_gradient_before_the_inputs_are_checked(
        full_precision: None) -> None:
    """On a GPU the model runs while the frontend checks the inputs; on the CPU after."""
    cpu, device = _on_both(_Counting().eval())
    x, targets = _images(), np.array([0, 1, 2, 1, 0, 2])
    weights = np.eye(3, dtype=np.float32)[targets]
    backend = get_backend("torch")
    result = backend.start_gradient(device, x, weights, None, CallOptions(),
                                    magnitude=("max", 1))
    assert device.calls == (0 if DEVICE == "cpu" else 1)
    maps = result()
    expected = Saliency(cpu).explain(x, targets)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    signed = backend.start_gradient(device, x, weights, None, CallOptions())()
    np.testing.assert_allclose(np.abs(signed).max(axis=1), maps, rtol=1e-6)
    indices = backend.start_gradient(device, x, targets, None, CallOptions())()
    np.testing.assert_array_equal(indices, signed)


def test_non_finite_inputs_of_a_device_model_are_refused_with_the_sample() -> None:
    model = _Counting().to(DEVICE).eval()
    x = _images()
    x[4, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 non-finite values \(first at sample 4"):
        Saliency(model).explain(x, np.array([0, 1, 2, 1, 0, 2]))


def _peak_bytes(n: int, batch_size: int) -> int:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.Tanh(),
                                torch.nn.Conv2d(32, 32, 3), torch.nn.Tanh(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(32, 10)).to(DEVICE).eval()
    x = np.random.default_rng(0).normal(size=(n, 3, 64, 64)).astype(np.float32)
    explainer = Saliency(model, batch_size=batch_size)
    explainer.explain(x[:batch_size], 1)  # cuDNN's workspaces and autotuning
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    explainer.explain(x, 1)
    return int(torch.cuda.max_memory_allocated())


def test_device_memory_grows_with_batch_size_not_with_the_number_of_inputs() -> None:
    small, ten_times = _peak_bytes(32, 16), _peak_bytes(320, 16)
    assert ten_times <= 1.1 * small, (small, ten_times)
    # The measure sees the batch: 240 more samples hold over 200 MB more activations
    # (a base of cuDNN workspaces made small peaks 240 MB on an H100).
    assert _peak_bytes(256, 256) > small + 100 * 2**20
