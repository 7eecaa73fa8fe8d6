"""Checks that need a CUDA GPU; run by hand on a machine that has one.

    python scripts/gpu_check.py

The test suite runs on CPU (CI has no GPU), so what only a GPU exercises is checked
here against exact NumPy gradients: models on the GPU explained from NumPy inputs
and from GPU tensors, targets moved to the model's device, TF32 turned off by
``compare`` and restored, parameters on two devices refused, the cuDNN RNN error
rewritten, concurrent calls, memory bounded by ``batch_size``, and JAX on the GPU.
Each check prints one line; the script exits non-zero if any fails.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from agnostic_saliency import Saliency, SmoothGrad, compare
from agnostic_saliency.testing import NumpyModel, make_spec
from agnostic_saliency.testing.builders import build_jax_function, build_torch

CHECKS: list[Callable[[], str]] = []


def check(function: Callable[[], str]) -> Callable[[], str]:
    CHECKS.append(function)
    return function


def _cnn() -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    """A channels-first torch CNN, inputs, targets and the exact float64 map."""
    spec = make_spec("cnn", layout="channels_first")
    x = np.random.default_rng(0).normal(size=(64, 3, 9, 8)).astype(np.float32)
    targets = np.arange(64) % 3
    weights = np.eye(3)[targets]
    exact = NumpyModel(spec.cast(np.float64)).input_gradient(x.astype(np.float64), weights)
    return build_torch(spec), x, targets, np.abs(exact).max(axis=1)


@check
def torch_gpu_model_from_numpy_and_gpu_tensors() -> str:
    import torch

    model, x, targets, expected = _cnn()
    model = model.cuda()
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.backends.cudnn.flags(allow_tf32=False):
            from_numpy = Saliency(model, batch_size=16).explain(x, targets)
            from_tensors = Saliency(model).explain(torch.from_numpy(x).cuda(),
                                                   torch.from_numpy(targets).cuda())
    finally:
        torch.set_float32_matmul_precision(precision)
    for maps in (from_numpy, from_tensors):
        assert isinstance(maps, np.ndarray) and maps.shape == expected.shape
        np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    error = float(np.abs(from_numpy - expected).max())
    return f"max abs error vs exact {error:.1e} (NumPy and CUDA-tensor inputs)"


@check
def torch_gpu_predicted_targets_and_smoothgrad() -> str:
    model, x, _, _ = _cnn()
    cpu = SmoothGrad(model, nb_samples=8, noise=0.1, seed=3).explain(x)
    gpu = SmoothGrad(model.cuda(), nb_samples=8, noise=0.1, seed=3).explain(x)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-5)
    return f"SmoothGrad GPU vs CPU, same seed: max abs diff {np.abs(gpu - cpu).max():.1e}"


@check
def compare_turns_tf32_off_and_restores_it() -> str:
    import torch

    model, x, targets, _ = _cnn()
    gpu, cpu = Saliency(model.cuda()), Saliency(build_torch(make_spec(
        "cnn", layout="channels_first")))
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("high")  # TF32 allowed, as many users set it
    torch.backends.cudnn.allow_tf32 = True
    try:
        report = compare({"cuda": gpu, "cpu": cpu}, np.moveaxis(x, 1, -1), targets)
        restored = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
    assert restored == ("high", True), restored
    worst = max(row.max_abs_error for row in report.rows)
    assert worst < 1e-5, worst
    return f"GPU vs CPU under compare: max abs error {worst:.1e}; TF32 settings restored"


@check
def parameters_on_two_devices_are_refused() -> str:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2).cuda()).eval()
    try:
        Saliency(model).explain(np.ones((2, 4), np.float32), 0)
    except ValueError as error:
        assert "several devices" in str(error), error
        return f"ValueError: {str(error)[:70]}..."
    raise AssertionError("no error for parameters on cpu and cuda")


@check
def cudnn_rnn_backward_error_is_rewritten() -> str:
    import torch

    class Recurrent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(5, 7, batch_first=True)
            self.head = torch.nn.Linear(7, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.lstm(x)[0][:, -1])

    model = Recurrent().cuda().eval()
    x = np.random.default_rng(1).normal(size=(4, 6, 5)).astype(np.float32)
    try:
        maps = Saliency(model).explain(x, 0)
    except RuntimeError as error:
        assert "cudnn.flags(enabled=False)" in str(error), error
        with torch.backends.cudnn.flags(enabled=False):
            maps = Saliency(model).explain(x, 0)
        assert maps.shape == x.shape and np.all(np.isfinite(maps))
        return "RuntimeError names the fix; the fix then works"
    return f"no cuDNN error on this torch build; maps {maps.shape} computed"


@check
def concurrent_calls_on_one_gpu_model() -> str:
    model, x, targets, _ = _cnn()
    explainer = Saliency(model.cuda(), batch_size=8)
    sequential = [explainer.explain(x[i::4], targets[i::4]) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda i: explainer.explain(x[i::4], targets[i::4]),
                                 list(range(4)) * 3))
    for index, maps in enumerate(parallel):
        np.testing.assert_array_equal(maps, sequential[index % 4])
    return "12 threaded calls equal the sequential maps bit for bit"


@check
def gpu_memory_bounded_by_batch_size() -> str:
    import torch

    model, _, _, _ = _cnn()
    explainer = Saliency(model.cuda(), batch_size=32)
    rng = np.random.default_rng(2)
    peaks = []
    for n in (64, 640):
        x = rng.normal(size=(n, 3, 64, 64)).astype(np.float32)
        explainer.explain(x[:32], 0)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        explainer.explain(x, 0)
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] <= 1.1 * peaks[0], peaks
    return f"peak GPU memory above baseline: {peaks[0] / 2**20:.1f} MiB for 64, " \
           f"{peaks[1] / 2**20:.1f} MiB for 640 images"


@check
def jax_function_on_the_gpu() -> str:
    import jax

    assert jax.default_backend() == "gpu", jax.default_backend()
    spec = make_spec("mlp")
    model = build_jax_function(spec)
    x = np.random.default_rng(3).normal(size=(16, *spec.input_shape)).astype(np.float32)
    targets = np.arange(16) % spec.n_outputs
    expected = np.abs(NumpyModel(spec.cast(np.float64)).input_gradient(
        x.astype(np.float64), np.eye(spec.n_outputs)[targets]))
    with jax.default_matmul_precision("highest"):
        maps = Saliency(model, backend="jax").explain(x, targets)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    return f"max abs error vs exact {np.abs(maps - expected).max():.1e} on {jax.devices()[0]}"


def main() -> int:
    failed = 0
    for function in CHECKS:
        try:
            print(f"ok    {function.__name__}: {function()}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL  {function.__name__}:\n{traceback.format_exc()}", flush=True)
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} GPU checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
