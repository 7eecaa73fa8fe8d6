"""What TensorFlow reports about the memory of the GPU a model computes on.

``tf.config.experimental.get_memory_info`` gives the bytes TensorFlow's allocator holds
on a device now (``current``) and the most it ever held (``peak``, read here, never
reset). Free memory is known only against a limit: the ``memory_limit`` of a
``tf.config.LogicalDeviceConfiguration`` the user set; TensorFlow has no public way to
read the size of a device otherwise, and the frontend then budgets its floor.
"""

from __future__ import annotations

from typing import Any

from agnostic_saliency.backend import DeviceMemory

__all__ = ["device_memory", "tf_memory"]


def device_memory(model: Any) -> DeviceMemory | None:
    """The memory of the GPU holding ``model``'s variables (for a model without any, the
    first GPU, where TensorFlow places its ops), or ``None`` on the CPU."""
    import tensorflow as tf

    variables = getattr(model, "variables", None) or ()
    for variable in variables:
        return tf_memory(getattr(variable, "device", "") or "")
    return tf_memory("/device:GPU:0" if tf.config.list_logical_devices("GPU") else "")


def tf_memory(device: str) -> DeviceMemory | None:
    """The memory of the TensorFlow device named ``device`` (as in ``variable.device``);
    ``None`` for the CPU or an unnamed device."""
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(device)
    if spec.device_type != "GPU":
        return None
    index = spec.device_index or 0
    try:
        info = tf.config.experimental.get_memory_info(f"GPU:{index}")
    except ValueError:  # no allocator statistics for this device
        return DeviceMemory(None)
    limit = _memory_limit(index)
    current, peak = int(info["current"]), int(info["peak"])
    free = None if limit is None else max(limit - current, 0)
    return DeviceMemory(free, limit, current, peak)


def _memory_limit(index: int) -> int | None:
    """The ``memory_limit`` (bytes) the user gave logical GPU ``index``, else ``None``."""
    import tensorflow as tf

    logical: list[Any] = []
    for physical in tf.config.list_physical_devices("GPU"):
        logical.extend(tf.config.get_logical_device_configuration(physical) or [None])
    config = logical[index] if index < len(logical) else None
    limit = getattr(config, "memory_limit", None)
    return None if limit is None else int(limit) << 20  # given in MiB
