"""Keras on PyTorch: ``torch.autograd.grad`` with respect to a fresh leaf.

The model gets a non-leaf copy of the leaf, so in-place operations in its forward
are allowed; ``.backward()`` is never called, so parameters' ``.grad`` fields and
``requires_grad`` flags are left alone, and the caller's grad mode does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency.backend import CallOptions, Operator
from agnostic_saliency_keras._common import (
    OperatorShapeError,
    call_model,
    gradient_to_numpy,
    require_tensor,
    score_dtype,
)

if TYPE_CHECKING:
    import torch

__all__ = ["gradient", "is_out_of_memory", "is_tensor", "predict", "to_numpy"]


def is_out_of_memory(error: BaseException) -> bool:
    """PyTorch's ``OutOfMemoryError`` (a GPU allocation failed), or the ``RuntimeError``
    of its CPU allocator."""
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "DefaultCPUAllocator: can't allocate" in str(error))


def is_tensor(value: Any) -> bool:
    import torch

    return torch.is_tensor(value)


def predict(model: Any, x: np.ndarray, dtype: str, options: CallOptions) -> Any:
    """``model(x, training=False)`` without building an autograd graph."""
    import torch

    with torch.inference_mode(False), torch.no_grad():
        # A copy: an in-place op in the forward must not reach the caller's array.
        return call_model(model, _tensor(model, x, dtype).clone(), options.output_selector)


def gradient(model: Any, x: np.ndarray, dtype: str, targets: Any, operator: Operator | None,
             options: CallOptions) -> np.ndarray | None:
    """Gradient of the summed scores with respect to ``x`` (``None`` if disconnected)."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        leaf = _tensor(model, x, dtype).requires_grad_(True)
        if operator is None:
            total = _weighted_total(model, leaf.clone(), targets, options.output_selector)
        else:
            total = _operator_total(model, operator, leaf.clone(), targets)
        if not total.requires_grad:  # nothing in the score depends on the input
            return None
        (grad,) = torch.autograd.grad(total, leaf, allow_unused=True)
    return None if grad is None else gradient_to_numpy(to_numpy(grad))


def _device(model: Any) -> torch.device:
    """Device of the model's variables, else the one Keras puts new tensors on."""
    import keras

    tensor = model.variables[0].value if model.variables else \
        keras.ops.convert_to_tensor(np.zeros(0, np.float32))
    device: torch.device = tensor.device
    return device


def _tensor(model: Any, x: np.ndarray, dtype: str) -> torch.Tensor:
    """``x`` in ``dtype`` on the model's device (may share memory with ``x``: read only)."""
    import torch

    tensor = torch.from_numpy(x if x.flags.writeable else x.copy())
    return tensor.to(device=_device(model), dtype=getattr(torch, dtype))


def _weighted_total(model: Any, x: torch.Tensor, weights: Any,
                    selector: Callable[[Any], Any] | None) -> torch.Tensor:
    """``sum(output * weights)`` (or of the outputs at class indices) in at least float32."""
    import torch

    outputs: torch.Tensor = require_tensor(call_model(model, x, selector), torch.is_tensor)
    outputs = outputs.to(getattr(torch, score_dtype(str(outputs.dtype).split(".")[-1])))
    weights = np.asarray(weights)
    if weights.dtype.kind in "iu":
        index = torch.from_numpy(weights).to(outputs.device)
        return outputs.gather(1, index[:, None]).sum()
    return (outputs * torch.from_numpy(weights).to(outputs)).sum()


def _operator_total(model: Any, operator: Operator, x: torch.Tensor,
                    targets: Any) -> torch.Tensor:
    import torch

    target_tensor = None
    if targets is not None:
        target_tensor = torch.from_numpy(np.array(targets)).to(x.device)
        if target_tensor.is_floating_point():
            target_tensor = target_tensor.to(x.dtype)
    scores = operator(model, x, target_tensor)
    if not torch.is_tensor(scores) or tuple(scores.shape) != (len(x),):
        raise OperatorShapeError(tuple(np.shape(scores)))
    dtype = getattr(torch, score_dtype(str(scores.dtype).split(".")[-1]))
    return scores.to(dtype).sum()


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.cpu().numpy()


@contextmanager
def full_precision() -> Iterator[None]:
    """TF32 off in matmuls and cuDNN convolutions; restored on exit."""
    import torch

    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn
