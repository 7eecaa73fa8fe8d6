"""The same weights in PyTorch (on CUDA) and JAX (on its GPU) give the same maps.

``compare`` turns TF32 off in both frameworks while it explains, so their float32
maps agree to rounding although their default precisions differ.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from agnostic_saliency import Saliency, compare
from agnostic_saliency.testing import make_spec
from agnostic_saliency.testing.builders import build_jax_function, build_torch

torch = pytest.importorskip("torch")
pytest.importorskip("agnostic_saliency_jax")
pytestmark = pytest.mark.gpu
DEVICE = os.environ.get("AGNOSTIC_SALIENCY_GPU_DEVICE", "cuda")


@pytest.mark.parametrize("name", ["cnn", "cnn_flatten", "mlp"])
def test_torch_on_cuda_and_jax_on_gpu_agree_under_compare(name: str) -> None:
    spec = make_spec(name)
    x = np.random.default_rng(4).normal(size=(6, *spec.input_shape)).astype(np.float32)
    torch_model = build_torch(make_spec(name, layout="channels_first")).to(DEVICE)
    explainers = {"torch": Saliency(torch_model),
                  "jax": Saliency(build_jax_function(spec), backend="jax")}
    report = compare(explainers, x, np.array([0, 1, 2, 2, 1, 0]))
    row = report.row("torch", "jax")
    assert row.relative_error < 1e-5 and row.spearman > 0.9999, report.table()
