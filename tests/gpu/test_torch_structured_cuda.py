"""Several inputs, side inputs and layers with PyTorch models on a CUDA device (run with
``AGNOSTIC_SALIENCY_GPU=1``).

The same model on the CPU is the oracle: under ``full_precision()`` (TF32 off) the
GPU's maps equal the CPU's to float32 rounding.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from agnostic_saliency import IntegratedGradients, Saliency, SmoothGrad, get_backend

pytestmark = pytest.mark.gpu
DEVICE = os.environ.get("AGNOSTIC_SALIENCY_GPU_DEVICE", "cuda")


def _bert_and_tokens() -> tuple[Any, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=16, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    rng = np.random.default_rng(0)
    mask = np.ones((6, 16), np.int64)
    mask[2, 9:] = 0
    mask[4, 3:] = 0
    return model, np.where(mask == 1, rng.integers(1, 100, size=(6, 16)), 0), mask


def _on_both(explain: Any, model: Any) -> tuple[Any, Any]:
    """``explain(model)`` on the CPU and on the device, TF32 off."""
    with get_backend("torch").full_precision():
        on_cpu = explain(model)
        on_device = explain(copy.deepcopy(model).to(DEVICE))
    return on_cpu, on_device


@pytest.mark.parametrize("batch_size", [2, None])
def test_token_maps_on_the_device_equal_the_cpus(batch_size: Any) -> None:
    model, ids, mask = _bert_and_tokens()
    targets = np.array([0, 1, 2, 0, 1, 2])

    def saliency(model: Any) -> np.ndarray:
        return Saliency(model, layer=model.get_input_embeddings(), output="logits",
                        batch_size=batch_size).explain(
            {"input_ids": ids, "attention_mask": mask}, targets)

    def ig(model: Any) -> np.ndarray:
        embeddings = model.get_input_embeddings()
        return IntegratedGradients(model, layer=embeddings, output="logits", steps=8,
                                   reducer="sum", batch_size=batch_size,
                                   baseline_value=embeddings.weight[3].detach().cpu()).explain(
            (torch.from_numpy(ids).to(model.device), torch.from_numpy(mask)), targets)

    for method in (saliency, ig):
        on_cpu, on_device = _on_both(method, model)
        np.testing.assert_allclose(on_device, on_cpu, rtol=1e-4, atol=1e-6)
    on_cpu, on_device = _on_both(saliency, model)
    assert np.all(on_device[mask == 0] == 0)


def test_several_inputs_on_the_device_equal_the_cpus() -> None:
    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.table = torch.nn.Linear(5, 4)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, image: torch.Tensor, table: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
            a = torch.tanh(self.conv(image)).mean(dim=(2, 3))
            b = torch.tanh(self.table(table * mask))
            return self.head(torch.cat([a, b], dim=1))

    torch.manual_seed(0)
    model = TwoInputs().eval()
    rng = np.random.default_rng(1)
    inputs = (rng.normal(size=(4, 3, 8, 8)).astype(np.float32),
              rng.normal(size=(4, 5)).astype(np.float32),
              (rng.random(size=(4, 5)) > 0.5).astype(np.int64))

    def smooth(model: Any) -> Any:
        return SmoothGrad(model, nb_samples=4, seed=0, batch_size=6).explain(inputs, 1)

    on_cpu, on_device = _on_both(smooth, model)
    assert on_device[2] is None
    for cpu_map, device_map in zip(on_cpu[:2], on_device[:2], strict=True):
        np.testing.assert_allclose(device_map, cpu_map, rtol=1e-4, atol=1e-6)
    assert np.all(on_device[1][inputs[2] == 0] == 0)
