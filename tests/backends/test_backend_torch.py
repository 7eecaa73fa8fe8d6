"""The conformance suite against the PyTorch backend (channels-first models)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency.testing import BackendConformanceTests, ModelSpec
from agnostic_saliency.testing.models import Conv2D, Dense, Flatten, GlobalAveragePool, Tanh

torch = pytest.importorskip("torch")


def build_torch_model(spec: ModelSpec) -> Any:
    """``spec`` as an ``nn.Sequential`` in eval mode, in the weights' dtype."""
    layers = []
    for layer in spec.layers:
        if isinstance(layer, Dense):
            linear = torch.nn.Linear(*layer.weight.shape)
            linear.weight.data = torch.from_numpy(layer.weight.T.copy())
            linear.bias.data = torch.from_numpy(layer.bias.copy())
            layers.append(linear)
        elif isinstance(layer, Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            conv = torch.nn.Conv2d(cin, cout, (kh, kw))
            conv.weight.data = torch.from_numpy(layer.kernel.transpose(3, 2, 0, 1).copy())
            conv.bias.data = torch.from_numpy(layer.bias.copy())
            layers.append(conv)
        elif isinstance(layer, Tanh):
            layers.append(torch.nn.Tanh())
        elif isinstance(layer, Flatten):
            layers.append(torch.nn.Flatten())
        elif isinstance(layer, GlobalAveragePool):
            layers.append(torch.nn.AdaptiveAvgPool2d(1))
            layers.append(torch.nn.Flatten())
    return torch.nn.Sequential(*layers).eval()


class TestTorchBackend(BackendConformanceTests):
    layout = "channels_first"

    def backend(self) -> str:
        return "torch"

    def build_model(self, spec: ModelSpec) -> Any:
        return build_torch_model(spec)

    def to_framework(self, array: np.ndarray) -> Any:
        return torch.from_numpy(array.copy())
