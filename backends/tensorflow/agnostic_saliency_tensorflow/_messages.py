"""Messages about TensorFlow models: what was given, what was expected, and the next step.

The framework-free messages (shapes, targets, dtypes) live in
:mod:`agnostic_saliency.messages`; these name TensorFlow idioms.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["no_serving_endpoint", "runs_eagerly", "structured_model_failed"]


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def runs_eagerly(error: BaseException) -> str:
    return (
        f"the model could not be traced into a TensorFlow graph ({type(error).__name__}: "
        f"{_last_line(error)}); it runs eagerly, which is slower. "
        "Avoid .numpy() and Python control flow on tensors in the forward pass."
    )


def no_serving_endpoint(model_type: str, signatures: Sequence[str]) -> str:
    listed = ", ".join(repr(name) for name in signatures) or "none"
    return (
        f"the loaded SavedModel ({model_type}) is not callable, has no 'serve' endpoint and "
        f"not exactly one signature (it has {listed}); pass the one to explain, e.g. "
        "Saliency(loaded.signatures['serving_default'], output_selector=lambda out: "
        "out['output_0']), keeping `loaded` referenced."
    )


def structured_model_failed(shapes: dict[str, tuple[int, ...]], error: BaseException) -> str:
    return (
        f"model failed on inputs of shapes {shapes}: {type(error).__name__}: "
        f"{_last_line(error)}. A tuple or list of inputs is passed as positional arguments, "
        "a dict as keyword arguments; check that the model takes them so, batch axis first."
    )
