"""Tensors in and out of PyTorch, the model's forward pass and the score to differentiate.

Shared by the gradient of one array (``__init__``) and of several inputs or a layer
(:mod:`agnostic_saliency_torch._structured`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import CallOptions, Magnitude, Operator, report_cast
from agnostic_saliency_torch import _messages, _model
from agnostic_saliency_torch._memory import is_cpu_allocation_failure

if TYPE_CHECKING:
    import torch

__all__ = ["differentiate", "finish", "format_of", "forward", "is_tensor", "model_input",
           "out_of_memory", "score", "targets_tensor", "to_numpy", "upcast", "weighted"]

_REDUCERS = {"max": "amax", "mean": "mean", "sum": "sum"}


def model_input(inputs: np.ndarray, place: _model.Placement) -> torch.Tensor:
    """The inputs on the model's device and in its dtype; the caller's memory on the
    CPU where nothing changes (the backend only reads it)."""
    import torch

    if inputs.dtype.kind == "V":  # ml_dtypes' bfloat16: NumPy cannot hand it to torch
        inputs = inputs.astype(np.float32)
    tensor = torch.from_numpy(inputs) if inputs.flags.writeable else torch.tensor(inputs)
    dtype = place.dtype or tensor.dtype  # a model without floating weights: as given
    if tensor.dtype != dtype and tensor.element_size() >= 4 and dtype.itemsize >= 4:
        report_cast(inputs.dtype, dtype)
    return tensor.to(device=place.device, dtype=dtype)


def format_of(place: _model.Placement, ndim: int) -> torch.memory_format:
    """Channels-last for 4-D inputs of a model whose convolution weights are."""
    import torch

    return torch.channels_last if place.channels_last and ndim == 4 else torch.contiguous_format


def is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def out_of_memory(error: BaseException) -> bool:
    """A failed allocation: ``torch.OutOfMemoryError`` (CUDA), the ``RuntimeError`` of the
    CPU allocator, or ``MemoryError``."""
    torch = sys.modules.get("torch")
    return isinstance(error, MemoryError) or is_cpu_allocation_failure(error) or (
        torch is not None and isinstance(error, torch.OutOfMemoryError))


def forward(runner: Any, x: torch.Tensor, options: CallOptions) -> Any:
    """The model's (selected) output for one input tensor."""
    try:
        outputs = runner(x)
    except Exception as error:
        if out_of_memory(error):
            raise  # the frontend retries with smaller chunks
        raise ValueError(messages.model_failed(tuple(x.shape), error)) from error
    return options.output_selector(outputs) if options.output_selector else outputs


def targets_tensor(targets: Any, device: torch.device) -> torch.Tensor | None:
    """The targets on ``device``, copied before the forward pass (a copy after it would
    wait for it), and a copy on the CPU too: autograd may hand grad_outputs back as the
    gradient."""
    import torch

    return None if targets is None else torch.tensor(np.asarray(targets), device=device)


def score(runner: Any, x: torch.Tensor, targets: Any, operator: Operator | None,
          options: CallOptions) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What to differentiate, and the ``grad_outputs`` of its vector-Jacobian product:
    the operator's summed scores and ``None``, or the outputs and the target weights
    (one-hot rows for class indices)."""
    import torch

    given = targets_tensor(targets, x.device)
    if operator is not None:
        if given is not None and given.is_floating_point():
            given = given.to(x.dtype)
        scores = operator(runner, x, given)
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(x),):
            raise ValueError(messages.operator_wrong_shape(tuple(np.shape(scores)), len(x)))
        return upcast(scores).sum(), None
    assert given is not None
    return weighted(forward(runner, x, options), given, targets, len(x))


def weighted(outputs: Any, given: torch.Tensor, targets: Any, n: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs for ``n`` samples and the weights of their scores: ``given``
    (the targets on the device), or one-hot rows for class indices; both checked."""
    import torch

    if not isinstance(outputs, torch.Tensor):
        raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
    if outputs.ndim == 0 or outputs.shape[0] != n:
        raise ValueError(messages.output_wrong_shape(tuple(outputs.shape), n))
    outputs, targets = upcast(outputs), np.asarray(targets)
    if not given.is_floating_point():  # class indices: checked here, before a GPU sees them
        if outputs.ndim != 2 or targets.shape != (n,):
            raise ValueError(messages.weights_wrong_shape(targets.shape, tuple(outputs.shape)))
        outside = targets[(targets < 0) | (targets >= outputs.shape[1])]
        if outside.size:
            raise ValueError(messages.targets_out_of_range(int(outside[0]), outputs.shape[1]))
        return outputs, torch.zeros_like(outputs).scatter_(1, given.long()[:, None], 1.0)
    if outputs.shape != given.shape:  # e.g. a model whose number of outputs changed
        raise ValueError(messages.weights_wrong_shape(targets.shape, tuple(outputs.shape)))
    return outputs, given.to(outputs.dtype)


def finish(grad: torch.Tensor, magnitude: Magnitude | None) -> torch.Tensor:
    """The gradient itself, or its absolute values reduced as ``magnitude`` asks."""
    import torch

    if magnitude is None:
        return grad
    reducer, axis = magnitude
    values = upcast(grad.abs())  # 16-bit gradients are reduced in float32
    if reducer is not None:
        values = getattr(torch, _REDUCERS[reducer])(values, dim=axis)
    return values


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 if it is 16-bit, else itself."""
    return tensor.float() if tensor.is_floating_point() and tensor.element_size() < 4 else tensor


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a C-contiguous NumPy array (16-bit floats as float32); a CPU tensor's
    memory is shared where it can be."""
    tensor = upcast(tensor.detach()).resolve_conj().resolve_neg()
    return tensor.contiguous().cpu().numpy()  # made contiguous where it is: on the device


def differentiate(scores: torch.Tensor, leaves: list[torch.Tensor],
                  weights: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad`` of ``scores`` (weighted by ``weights``) with respect to
    ``leaves``; ``None`` for a leaf the scores do not depend on."""
    import torch

    try:
        return torch.autograd.grad(scores, leaves, weights, allow_unused=True)
    except RuntimeError as error:
        if "cudnn RNN backward can only be called in training mode" in str(error):
            raise RuntimeError(_messages.cudnn_rnn_backward()) from error
        raise
