"""PyTorch: a ResNet-18 and a small ViT as ``nn.Module``s, native code and ours.

Written here because torchvision is not installed everywhere the benchmark runs.
Native code feeds the model the same memory format as agnostic-saliency's PyTorch
backend does: the model's own (NCHW for these models, whose weights are contiguous).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from _real_common import Config

__all__ = ["build", "channels_first", "native", "ours", "versions"]

#: PyTorch's images are NCHW.
channels_first = True


def versions() -> dict[str, str]:
    """PyTorch's version and its number of threads."""
    import torch

    return {"torch": torch.__version__, "torch_threads": str(torch.get_num_threads())}


def build(model: str, config: Config) -> Any:
    """``"resnet18"`` or ``"vit"`` of ``config``'s sizes, seeded, in eval mode."""
    import torch

    torch.manual_seed(0)
    network = _resnet(config) if model == "resnet18" else _vit(config)
    return network.eval()


def _resnet(config: Config) -> Any:
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            shortcut = x if self.down is None else self.down(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + shortcut)

    width = config.resnet_width
    layers: list[Any] = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = width
    for stage, (cout, count) in enumerate(zip(config.stage_widths, config.blocks, strict=True)):
        for index in range(count):
            layers.append(Basic(cin, cout, 2 if stage and not index else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, config.classes)]
    return nn.Sequential(*layers)


def _vit(config: Config) -> Any:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(config.vit_width, eps=1e-6)
            self.attention = nn.MultiheadAttention(config.vit_width, config.heads,
                                                   batch_first=True)
            self.norm2 = nn.LayerNorm(config.vit_width, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(config.vit_width, config.mlp), nn.GELU(),
                                     nn.Linear(config.mlp, config.vit_width))

        def forward(self, x: Any) -> Any:
            h = self.norm1(x)
            x = x + self.attention(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.norm2(x))

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            width = config.vit_width
            self.patches = nn.Conv2d(3, width, config.patch, config.patch)
            self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
            self.position = nn.Parameter(torch.randn(1, config.tokens + 1, width) * 0.02)
            self.blocks = nn.Sequential(*(Block() for _ in range(config.vit_depth)))
            self.norm = nn.LayerNorm(width, eps=1e-6)
            self.head = nn.Linear(width, config.classes)

        def forward(self, x: Any) -> Any:
            tokens = self.patches(x).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
            tokens = self.blocks(tokens + self.position)
            return self.head(self.norm(tokens[:, 0]))

    return ViT()


def native(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """What an expert writes: an NCHW leaf, ``autograd.grad`` from one-hot rows.

    Parameters
    ----------
    model : torch.nn.Module
        The model, in eval mode.
    x : numpy.ndarray
        NCHW images.
    y : numpy.ndarray
        Class indices.

    Returns
    -------
    callable
        ``run() -> (N, H, W)`` maps: ``|gradient|``, maximum over channels.
    """
    import torch

    rows = torch.from_numpy(y)[:, None]

    def run() -> np.ndarray:
        leaf = torch.from_numpy(x).requires_grad_(True)
        outputs = model(leaf)
        one_hot = torch.zeros_like(outputs).scatter_(1, rows, 1.0)
        (grad,) = torch.autograd.grad(outputs, leaf, grad_outputs=one_hot)
        return grad.abs().amax(dim=1).numpy()

    return run


def ours(model: Any, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """``Saliency(model).explain(x, y)`` with its defaults."""
    from agnostic_saliency import Saliency

    explainer = Saliency(model)
    return lambda: explainer.explain(x, y)
