"""``batch_size="auto"`` budgets and measures GPU memory (run with ``AGNOSTIC_SALIENCY_GPU=1``).

The oracles are the frameworks' own counters, read in the test: PyTorch's
``torch.cuda.mem_get_info`` / ``memory_allocated`` and JAX's ``memory_stats()``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from agnostic_saliency import Saliency, get_backend

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
DEVICE = os.environ.get("AGNOSTIC_SALIENCY_GPU_DEVICE", "cuda")
MIB = 1 << 20


def test_torch_reports_the_cuda_device_of_the_weights() -> None:
    model = torch.nn.Linear(256, 256).to(DEVICE)
    memory = get_backend("torch").device_memory(model)
    assert memory is not None
    free, total = torch.cuda.mem_get_info(DEVICE)
    assert memory.total == total
    assert free <= memory.free <= total
    assert memory.in_use == torch.cuda.memory_allocated(DEVICE) >= 256 * 257 * 4
    assert memory.peak is not None and memory.peak >= memory.in_use
    assert get_backend("torch").device_memory(model.cpu()) is None


def test_torch_auto_chunks_keep_the_device_peak_near_the_budget() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.Tanh(),
                                torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.Tanh(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(32, 10)).to(DEVICE).eval()
    x = np.random.default_rng(0).normal(size=(512, 3, 64, 64)).astype(np.float32)
    budget = 128 * MIB
    explainer = Saliency(model, memory_budget=budget)
    first = explainer.explain(x, 1)  # learns the chunk from the device's peak
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(DEVICE)
    torch.cuda.reset_peak_memory_stats(DEVICE)  # the test's own measure
    again = explainer.explain(x, 1)
    torch.cuda.synchronize()
    rise = torch.cuda.max_memory_allocated(DEVICE) - base
    # Activations of 32 channels at 64x64 and their gradients: over 1 MiB a sample, so
    # 512 samples at once would need far more than the budget.
    assert rise <= 1.5 * budget, (rise, budget)
    np.testing.assert_array_equal(first, again)


def test_jax_reports_the_gpu_of_its_default_device() -> None:
    jax = pytest.importorskip("jax")
    pytest.importorskip("agnostic_saliency_jax")
    memory = get_backend("jax").device_memory(jax.jit(lambda x: x * 2))
    stats = jax.devices()[0].memory_stats()
    assert memory is not None and stats is not None
    assert memory.total == stats["bytes_limit"]
    assert memory.free is not None and 0 < memory.free <= memory.total
    assert memory.peak is not None and memory.peak >= 0
