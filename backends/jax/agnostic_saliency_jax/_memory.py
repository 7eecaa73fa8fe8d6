"""What JAX reports about the memory of the device a model computes on.

A device other than the CPU is reported from ``device.memory_stats()``: free is
``bytes_limit - bytes_in_use`` (XLA's allocator preallocates a share of a GPU, and
that share is its limit), the peak ``peak_bytes_in_use``, which is read, never reset.
"""

from __future__ import annotations

from typing import Any

from agnostic_saliency.backend import DeviceMemory

__all__ = ["device_memory", "jax_memory", "model_device"]


def device_memory(model: Any) -> DeviceMemory | None:
    """The memory of the device ``model`` computes on, or ``None`` on the CPU."""
    device = model_device(model)
    return None if device.platform == "cpu" else jax_memory(device)


def jax_memory(device: Any) -> DeviceMemory:
    """``device``'s memory as XLA's allocator reports it (all ``None`` without statistics)."""
    stats = device.memory_stats()
    if not stats:
        return DeviceMemory(None)
    limit, in_use = stats.get("bytes_limit"), stats.get("bytes_in_use")
    free = None if limit is None or in_use is None else max(int(limit) - int(in_use), 0)
    peak = stats.get("peak_bytes_in_use")
    return DeviceMemory(free, None if limit is None else int(limit),
                        None if in_use is None else int(in_use),
                        None if peak is None else int(peak))


def model_device(model: Any) -> Any:
    """The device of the model's first array (Flax NNX and Equinox modules); for
    functions and modules without arrays, JAX's default device, where inputs go."""
    import jax

    for leaf in jax.tree.leaves(model):
        if isinstance(leaf, jax.Array):
            return min(leaf.devices(), key=lambda device: device.id)
    default = getattr(jax.config, "jax_default_device", None)  # a Device, a name or None
    return default if isinstance(default, jax.Device) else jax.devices()[0]
