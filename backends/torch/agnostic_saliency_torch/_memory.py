"""What PyTorch reports about the memory of the device a model computes on.

CUDA devices report free memory and a peak, :func:`torch.cuda.max_memory_allocated`,
read and never reset (:func:`torch.cuda.reset_peak_memory_stats` would reset it for the
whole process). Apple's MPS reports free memory against Metal's recommended working
set, but keeps no peak, so chunks there keep their first guess. PyTorch has no public
counters for its CPU allocator: CPU models are budgeted by host memory.
"""

from __future__ import annotations

import sys
from itertools import chain
from typing import TYPE_CHECKING, Any

from agnostic_saliency.backend import DeviceMemory

if TYPE_CHECKING:
    import torch

__all__ = ["cuda_memory", "device_memory", "is_cpu_allocation_failure", "mps_memory",
           "weights_device"]

#: The phrase of PyTorch's CPU allocator when it cannot allocate (c10/core/impl/alloc_cpu.cpp).
_CPU_ALLOCATOR = "DefaultCPUAllocator: can't allocate memory"


def device_memory(model: Any) -> DeviceMemory | None:
    """The memory of the CUDA device that holds ``model``'s weights, else ``None``."""
    device = weights_device(model)
    if device is None:
        return None
    if device.type == "cuda":
        return cuda_memory(device)
    if device.type == "mps":
        return mps_memory()
    return None


def cuda_memory(device: torch.device) -> DeviceMemory:
    """Free memory of ``device`` for PyTorch: the driver's free bytes plus what PyTorch's
    caching allocator holds unused; peak and current bytes allocated for tensors."""
    import torch

    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    cached = max(torch.cuda.memory_reserved(device) - allocated, 0)
    return DeviceMemory(free + cached, total, allocated, torch.cuda.max_memory_allocated(device))


def mps_memory() -> DeviceMemory:
    """Free memory of Apple's GPU for PyTorch: Metal's recommended working set less what
    its driver holds for the process; tensors' bytes now; no peak counter."""
    import torch

    limit = torch.mps.recommended_max_memory()
    free = max(limit - torch.mps.driver_allocated_memory(), 0)
    return DeviceMemory(free, limit, torch.mps.current_allocated_memory(), None)


def weights_device(model: Any) -> torch.device | None:
    """The device of ``model``'s first parameter or buffer; ``None`` without any."""
    parameters, buffers = getattr(model, "parameters", None), getattr(model, "buffers", None)
    if not callable(parameters) or not callable(buffers):
        return None
    for tensor in chain(parameters(), buffers()):
        device: torch.device = tensor.device
        return device
    return None


def is_cpu_allocation_failure(error: BaseException) -> bool:
    """Whether ``error`` is the ``RuntimeError`` of PyTorch's CPU allocator (PyTorch raises
    ``torch.OutOfMemoryError`` for CUDA only)."""
    torch = sys.modules.get("torch")
    return (torch is not None and isinstance(error, RuntimeError)
            and _CPU_ALLOCATOR in str(error))
