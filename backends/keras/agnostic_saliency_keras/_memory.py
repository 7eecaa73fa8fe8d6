"""What the framework under Keras reports about the memory of the device a model is on.

The device is that of the model's first weight, as the framework Keras runs on holds
it; each framework is read through its own public counters, never reset:

- PyTorch: a CUDA device's ``torch.cuda.mem_get_info`` (plus what PyTorch's cache
  holds unused) and ``torch.cuda.max_memory_allocated``;
- JAX: ``device.memory_stats()`` (``bytes_limit - bytes_in_use``, ``peak_bytes_in_use``);
- TensorFlow: ``tf.config.experimental.get_memory_info`` (``current``, ``peak``) against
  the ``memory_limit`` the user set for the GPU, if any.

A model without weights, or with its weights on a CPU, is reported as ``None`` (host).
"""

from __future__ import annotations

from typing import Any

from agnostic_saliency.backend import DeviceMemory

__all__ = ["device_memory"]


def device_memory(model: Any, framework: str) -> DeviceMemory | None:
    """The memory of the accelerator holding ``model``'s first weight under Keras'
    ``framework`` backend (``"torch"``, ``"jax"``, ``"tensorflow"``), else ``None``."""
    weights = getattr(model, "weights", None) or ()
    value = getattr(weights[0], "value", None) if weights else None
    if value is None:
        return None
    if framework == "torch":
        return _torch_memory(value.device)
    if framework == "jax":
        return _jax_memory(min(value.devices(), key=lambda device: device.id))
    if framework == "tensorflow":
        return _tf_memory(value.device)
    return None


def _torch_memory(device: Any) -> DeviceMemory | None:
    import torch

    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    cached = max(torch.cuda.memory_reserved(device) - allocated, 0)
    return DeviceMemory(free + cached, total, allocated, torch.cuda.max_memory_allocated(device))


def _jax_memory(device: Any) -> DeviceMemory | None:
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    limit, in_use, peak = (stats.get(key) for key in (
        "bytes_limit", "bytes_in_use", "peak_bytes_in_use"))
    free = None if limit is None or in_use is None else max(int(limit) - int(in_use), 0)
    return DeviceMemory(free, limit, in_use, peak)


def _tf_memory(device: str) -> DeviceMemory | None:
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(device or "")
    if spec.device_type != "GPU":
        return None
    index = spec.device_index or 0
    try:
        info = tf.config.experimental.get_memory_info(f"GPU:{index}")
    except ValueError:  # no allocator statistics for this device
        return DeviceMemory(None)
    logical: list[Any] = []
    for physical in tf.config.list_physical_devices("GPU"):
        logical.extend(tf.config.get_logical_device_configuration(physical) or [None])
    limit = getattr(logical[index] if index < len(logical) else None, "memory_limit", None)
    total = None if limit is None else int(limit) << 20  # given in MiB
    current = int(info["current"])
    free = None if total is None else max(total - current, 0)
    return DeviceMemory(free, total, current, int(info["peak"]))
