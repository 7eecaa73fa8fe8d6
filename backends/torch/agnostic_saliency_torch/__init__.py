"""PyTorch backend for agnostic-saliency.

Gradients are taken with ``torch.autograd.grad`` with respect to a fresh leaf made
from the inputs, so no parameter gradient is accumulated, ``.grad`` fields and
``requires_grad`` flags are left alone, and the caller's grad mode (``no_grad``,
``inference_mode``) does not matter. The computation runs in the dtype and on
the device of the model's parameters.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import CallOptions, Operator
from agnostic_saliency_torch import _model_info, _precision

if TYPE_CHECKING:
    import torch

__all__ = ["TorchBackend"]


class TorchBackend:
    """Backend for ``torch.nn.Module`` models (TorchScript modules included)."""

    name = "torch"
    modules = ("torch",)
    priority = 0
    channel_axis = 1

    def can_handle(self, model: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def full_precision(self) -> AbstractContextManager[None]:
        """Turn off reduced-precision (TF32) float32 math while comparing; restored after."""
        return _precision.full_precision()

    def to_numpy(self, array: Any) -> np.ndarray:
        return _to_numpy(array)

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        import torch

        _check_mode(model, options)
        device, dtype = _placement(model, inputs.dtype)
        with torch.inference_mode(False), torch.no_grad():
            # A copy: an in-place op in the forward must not reach the caller's array.
            x = _as_tensor(inputs, device, dtype).clone()
            outputs = _forward(model, x, options)
        return _outputs_to_numpy(outputs)

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Operator | None,
                 options: CallOptions) -> np.ndarray | None:
        _check_mode(model, options)
        device, dtype = _placement(model, inputs.dtype)
        tensor = _as_tensor(inputs, device, dtype)
        channels_last = _model_info.info(model).prefers_channels_last(tensor)
        try:
            grad = _input_gradient(model, tensor, targets, operator, options, channels_last)
        except ValueError:
            if not channels_last:
                raise
            # e.g. a forward that calls .view() on activations: retry in the plain layout.
            grad = _input_gradient(model, tensor, targets, operator, options, False)
            _model_info.refuse_channels_last(model)
        return None if grad is None else _to_numpy(grad)


def _input_gradient(model: Any, tensor: torch.Tensor, targets: Any, operator: Operator | None,
                    options: CallOptions, channels_last: bool) -> torch.Tensor | None:
    """Gradient of the score with respect to a fresh leaf holding ``tensor``."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        if channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        leaf = tensor.detach().requires_grad_(True)
        # The model gets a non-leaf copy, so in-place ops in its forward are allowed.
        score = _score(model, leaf.clone(), targets, operator, options)
        if not score.requires_grad:  # nothing in the graph depends on the input
            return None
        (grad,) = torch.autograd.grad(score, leaf, allow_unused=True)
    return grad


def _check_mode(model: Any, options: CallOptions) -> None:
    if options.allow_training_mode:
        return
    training = [name or type(model).__name__ for name, module in _model_info.info(model).modules
                if module.training]
    if training:
        raise ValueError(messages.training_mode(training))


def _placement(model: Any, input_dtype: np.dtype) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's parameters and buffers."""
    import torch

    tensors = _model_info.info(model).tensors
    devices = sorted({str(tensor.device) for tensor in tensors})
    if len(devices) > 1:
        raise ValueError(messages.several_devices(devices))
    device = torch.device(devices[0]) if devices else torch.device("cpu")
    floating = [tensor.dtype for tensor in tensors if tensor.is_floating_point()]
    dtype = floating[0] if floating else _torch_dtype(input_dtype)
    return device, dtype


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    import torch

    if dtype.name == "bfloat16":
        return torch.bfloat16
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def _as_tensor(inputs: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The inputs on the model's device and in its dtype, sharing memory where possible.

    Warns when the model's dtype differs from the inputs' (16-bit inputs are
    silently computed in the model's precision).
    """
    import torch

    if inputs.dtype.name == "bfloat16" or not inputs.flags.writeable:
        inputs = inputs.astype(np.float32 if inputs.dtype.name == "bfloat16" else inputs.dtype)
    tensor = torch.from_numpy(inputs)
    if tensor.dtype != dtype and inputs.dtype.itemsize >= 4 and dtype.itemsize >= 4:
        warnings.warn(messages.dtype_cast(str(inputs.dtype), str(dtype).replace("torch.", "")),
                      messages.SaliencyWarning, stacklevel=4)
    return tensor.to(device=device, dtype=dtype)


def _forward(model: Any, x: torch.Tensor, options: CallOptions) -> Any:
    try:
        outputs = model(x)
    except Exception as error:
        raise ValueError(messages.model_failed(tuple(x.shape), error)) from error
    return options.output_selector(outputs) if options.output_selector else outputs


def _score(model: Any, x: torch.Tensor, targets: Any, operator: Operator | None,
           options: CallOptions) -> torch.Tensor:
    """Sum over the batch of the per-sample scores, in at least float32."""
    import torch

    if operator is not None:
        scores = operator(model, x, None if targets is None else _target_tensor(targets, x))
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(x),):
            raise ValueError(messages.operator_wrong_shape(tuple(np.shape(scores)), len(x)))
        return _upcast(scores).sum()
    outputs = _forward(model, x, options)
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
    if outputs.ndim == 0 or len(outputs) != len(x):
        raise ValueError(messages.output_wrong_shape(tuple(outputs.shape), len(x)))
    weights = torch.from_numpy(np.asarray(targets)).to(outputs.device)
    return (_upcast(outputs) * weights.to(_upcast(outputs).dtype)).sum()


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    import torch

    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _target_tensor(targets: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(targets)).to(x.device)
    return tensor.to(x.dtype) if tensor.is_floating_point() else tensor


def _to_numpy(array: Any) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(array, torch.Tensor):
        tensor = array.detach()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        return tensor.cpu().resolve_conj().resolve_neg().numpy()
    return np.asarray(array)


def _outputs_to_numpy(outputs: Any) -> Any:
    torch = sys.modules["torch"]
    if isinstance(outputs, torch.Tensor):
        return _to_numpy(outputs)
    if isinstance(outputs, Mapping):
        return {key: _outputs_to_numpy(value) for key, value in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return tuple(_outputs_to_numpy(value) for value in outputs)
    return outputs
