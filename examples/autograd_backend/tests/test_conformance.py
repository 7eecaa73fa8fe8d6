"""agnostic-saliency's conformance suite, run against the autograd backend."""

from __future__ import annotations

from typing import Any, ClassVar

import autograd.numpy as anp
from agnostic_saliency_autograd import AutogradModel

from agnostic_saliency.testing import BackendConformanceTests, ModelSpec
from agnostic_saliency.testing.models import Conv2D, Dense, Flatten, GlobalAveragePool, Tanh


def zoo_forward(layers: tuple[Any, ...], x: Any) -> Any:
    """The zoo's layers in ``autograd.numpy``, for channels-last inputs."""
    for layer in layers:
        if isinstance(layer, Dense):
            x = x @ layer.weight + layer.bias
        elif isinstance(layer, Conv2D):  # "valid" cross-correlation, kernel (kh, kw, in, out)
            kh, kw = layer.kernel.shape[:2]
            height, width = x.shape[1] - kh + 1, x.shape[2] - kw + 1
            x = sum(x[:, a:a + height, b:b + width, :] @ layer.kernel[a, b]
                    for a in range(kh) for b in range(kw)) + layer.bias
        elif isinstance(layer, Tanh):
            x = anp.tanh(x)
        elif isinstance(layer, Flatten):
            x = anp.reshape(x, (x.shape[0], -1))
        elif isinstance(layer, GlobalAveragePool):
            x = anp.mean(x, axis=(1, 2))
    return x


class TestAutogradBackend(BackendConformanceTests):
    layout = "channels_last"
    expected_failures: ClassVar[dict[str, str]] = {}  # {"test_name": "why"}: strict xfail

    def backend(self) -> str:
        return "autograd"

    def build_model(self, spec: ModelSpec) -> Any:
        return AutogradModel(zoo_forward, spec.layers)
