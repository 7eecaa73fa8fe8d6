"""Full float32 precision for comparisons: TF32 matmuls and convolutions off, then restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["full_precision"]


@contextmanager
def full_precision() -> Iterator[None]:
    """Turn off TF32 in matmuls and cuDNN convolutions; restore the settings on exit."""
    import torch

    matmul = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn
