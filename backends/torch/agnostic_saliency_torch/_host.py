"""The PyTorch backend's tensors brought back to the host as NumPy arrays."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency.backend import Magnitude, outputs_to_numpy

if TYPE_CHECKING:
    import torch

__all__ = ["magnitude_map", "no_gradient", "outputs_as_numpy", "to_numpy", "upcast"]


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 if it is 16-bit, else itself."""
    import torch

    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def to_numpy(array: Any) -> np.ndarray:
    """A tensor of any device and dtype as NumPy (sharing a float CPU tensor's memory)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(array, torch.Tensor):
        if array.is_cpu and array.dtype in (torch.float32, torch.float64):
            try:  # shares memory: a gradient is a fresh tensor
                return array.numpy()
            except RuntimeError:  # it requires grad, or has its conjugate or negative bit set
                pass
        tensor = array.detach()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        return tensor.cpu().resolve_conj().resolve_neg().numpy()
    return np.asarray(array)


def no_gradient() -> None:
    """What a gradient that does not depend on the inputs is given as: ``None``."""
    return None


def magnitude_map(grad: torch.Tensor, magnitude: Magnitude, in_place: bool = False
                  ) -> Callable[[], np.ndarray]:
    """Queue ``reducer(|grad|, axis)`` where ``grad`` is; return the function that
    gives it as a new NumPy array.

    From a GPU only the reduced map is copied back; that copy waits for the device.
    ``in_place=True`` says that nothing else refers to ``grad`` (see
    :mod:`agnostic_saliency_torch._ownership`): the absolute values of a float CPU
    gradient (no reducer) are then taken into its own memory.
    """
    import torch

    reducer, axis = magnitude
    if grad.is_cpu and grad.dtype in (torch.float32, torch.float64):
        return partial(_cpu_magnitude, grad, magnitude, in_place)
    values = upcast(grad.abs())  # 16-bit gradients are summed in float32
    if reducer is not None:
        values = getattr(torch, _REDUCERS[reducer])(values, dim=axis)
    return partial(_copy_to_numpy, values)


def _cpu_magnitude(grad: torch.Tensor, magnitude: Magnitude, in_place: bool) -> np.ndarray:
    """``reducer(|grad|, axis)`` of a float32 or float64 CPU gradient, as a new NumPy
    array (with ``reducer=None`` and ``in_place``: the gradient's own memory)."""
    import torch

    reducer, axis = magnitude
    if reducer is None:
        return _absolute(grad, in_place)
    # The caller never asks for this in place: for the benchmark CNN at batch 32, the
    # in-place absolute value before the reduction was 18-290 µs slower per call.
    magnitudes = grad.abs()
    dtype = np.float64 if grad.dtype == torch.float64 else np.float32
    result = np.empty(grad.shape[:axis] + grad.shape[axis + 1:], dtype=dtype)
    getattr(torch, _REDUCERS[reducer])(magnitudes, dim=axis, out=torch.from_numpy(result))
    return result


def _absolute(grad: torch.Tensor, in_place: bool) -> np.ndarray:
    """``|grad|`` of a float32 or float64 CPU gradient: in its own memory with
    ``in_place``, else in a new NumPy array.

    In place, NumPy takes it on this thread, so that the frontend's check of the map
    that follows reads it from this core's cache: for the benchmark MLP at batch
    256, 35-45 µs less per call than PyTorch's absolute value in place on both
    cores (three runs of 60 rounds of 0.05 s against native code).
    """
    import torch

    if in_place:
        values = to_numpy(grad)
        return np.abs(values, out=values)
    if grad.numel() < _PARALLEL_ABS:
        return np.abs(to_numpy(grad))  # NumPy's new array: fewest calls at batch 1
    result = np.empty(grad.shape, dtype=np.float64 if grad.dtype == torch.float64 else np.float32)
    torch.abs(grad, out=torch.from_numpy(result))  # on all of PyTorch's threads
    return result


def _copy_to_numpy(values: torch.Tensor) -> np.ndarray:
    """A float32 or float64 tensor of any device copied into a new NumPy array."""
    import torch

    result = np.empty(tuple(values.shape),
                      dtype=np.float64 if values.dtype == torch.float64 else np.float32)
    torch.from_numpy(result).copy_(values)
    return result


#: From this many values on (PyTorch's grain size for splitting an elementwise op
#: across threads), PyTorch takes the absolute value of a gradient that is not the
#: backend's own into a new NumPy array: on the 2-core benchmark machine 36 µs
#: faster per MLP call at batch 256 (mean of six A/B runs), while NumPy's single
#: call wins for small maps.
_PARALLEL_ABS = 32768

#: The torch function of each reducer of ``Magnitude``.
_REDUCERS = {"max": "amax", "mean": "mean", "sum": "sum"}


def outputs_as_numpy(outputs: Any) -> Any:
    """A model's outputs (tensors in tuples, dicts, objects) with every tensor as NumPy."""
    tensor = sys.modules["torch"].Tensor
    return outputs_to_numpy(outputs, lambda value: isinstance(value, tensor), to_numpy)
