"""Full float32 precision for comparisons: ``highest`` matmul precision, then restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["full_precision"]


@contextmanager
def full_precision() -> Iterator[None]:
    """Run matmuls and convolutions at ``highest`` precision (no TF32/bfloat16 passes)."""
    import jax

    with jax.default_matmul_precision("highest"):
        yield
