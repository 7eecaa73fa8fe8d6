"""Messages about Keras models: what was given, what was expected, and the next step.

The framework-free messages (shapes, targets, dtypes) live in
:mod:`agnostic_saliency.messages`; these name Keras idioms.
"""

from __future__ import annotations

__all__ = ["keras_backend_unsupported"]


def keras_backend_unsupported(framework: str) -> str:
    return (
        f"Keras runs on its {framework!r} backend, which has no gradients; set "
        "KERAS_BACKEND to 'tensorflow', 'jax' or 'torch' before importing keras."
    )
