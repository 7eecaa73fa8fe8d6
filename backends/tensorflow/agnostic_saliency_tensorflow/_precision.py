"""Full float32 precision for comparisons: TF32 execution off, then restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["full_precision"]


@contextmanager
def full_precision() -> Iterator[None]:
    """Turn off TensorFloat-32 execution; restore the setting on exit."""
    import tensorflow as tf

    enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(enabled)
