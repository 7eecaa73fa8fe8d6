"""What the three Keras backends share: dtypes, output handling and the function cache.

Nothing here imports a framework at module level; Keras itself is imported only
inside functions that run when a Keras model is being explained.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import outputs_to_numpy as _tree
from agnostic_saliency.backend import report_cast
from agnostic_saliency.cache import BoundedCache, ObjectKey

__all__ = [
    "MODULES",
    "ModelCallError",
    "OperatorShapeError",
    "cached_function",
    "call_model",
    "gradient_to_numpy",
    "input_dtype",
    "is_out_of_memory",
    "note_trace",
    "outputs_to_numpy",
    "prepare_inputs",
    "require_tensor",
    "score_dtype",
    "trace_count",
]

#: Keras' own backend -> the module of this package that computes on it.
MODULES = {"tensorflow": "_tf", "jax": "_jax", "torch": "_torch"}

#: Keras dtype names that NumPy holds natively (bfloat16 needs a framework cast).
_NUMPY_FLOATS = ("float16", "float32", "float64")

_trace_lock = threading.Lock()
_traces = 0


def note_trace() -> None:
    """Count one trace or compilation; called as a Python side effect of traced code."""
    global _traces
    with _trace_lock:
        _traces += 1


def trace_count() -> int:
    """Number of gradient functions traced or compiled so far, all Keras backends together."""
    return _traces


class ModelCallError(Exception):
    """The model raised; carries the original error so the caller can name the input shape."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class OperatorShapeError(Exception):
    """The operator's scores have the wrong shape (``None`` batch size when not yet known)."""

    def __init__(self, shape: tuple[Any, ...]) -> None:
        super().__init__(str(shape))
        self.shape = shape


def call_model(model: Any, x: Any, selector: Callable[[Any], Any] | None) -> Any:
    """``model(x, training=False)`` with the selector applied; model errors wrapped
    (allocation failures are raised as they are, for the frontend to retry)."""
    try:
        outputs = model(x, training=False)
    except Exception as error:
        if is_out_of_memory(error):
            raise
        raise ModelCallError(error) from error
    return selector(outputs) if selector is not None else outputs


def require_tensor(outputs: Any, is_tensor: Callable[[Any], bool]) -> Any:
    """Return ``outputs`` if it is one tensor, else raise the frontend's ``TypeError``."""
    if not is_tensor(outputs):
        raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
    return outputs


# --- dtypes -----------------------------------------------------------------------------


def input_dtype(model: Any) -> str:
    """The floating dtype (Keras name) the model converts its input to.

    A functional or sequential model converts its input to the dtype of its
    ``keras.Input``; any other layer to the compute dtype of its dtype policy.
    """
    try:
        inputs = getattr(model, "inputs", None)
    except Exception:  # subclassed models may refuse to describe their inputs
        inputs = None
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
        dtype = str(getattr(inputs[0], "dtype", ""))
        if dtype.startswith(("float", "bfloat")):
            return dtype
    dtype = str(getattr(model, "input_dtype", None) or getattr(model, "compute_dtype", ""))
    return dtype if dtype.startswith(("float", "bfloat")) else "float32"


def prepare_inputs(inputs: np.ndarray, dtype: str) -> np.ndarray:
    """``inputs`` as a NumPy array in ``dtype`` (float32 when ``dtype`` is bfloat16).

    Warns (:class:`~agnostic_saliency.messages.SaliencyWarning`) when 32- or 64-bit
    inputs are cast to another 32- or 64-bit dtype; 16-bit inputs and 16-bit models
    are cast silently. The result may share memory with ``inputs``; backends only
    read it.
    """
    given = inputs.dtype.name
    target = np.dtype(dtype) if dtype in _NUMPY_FLOATS else np.dtype(np.float32)
    if given != dtype and inputs.dtype.itemsize >= 4 and target.itemsize >= 4 \
            and dtype != "bfloat16":
        report_cast(given, dtype)
    return inputs.astype(target, copy=False)


def score_dtype(dtype: str) -> str:
    """Dtype of the summed score: the output's dtype, at least float32."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def gradient_to_numpy(gradient: np.ndarray) -> np.ndarray:
    """The gradient as a writeable NumPy array, 16-bit floats widened to float32."""
    array = np.asarray(gradient)
    if array.dtype.itemsize < 4:
        return array.astype(np.float32)
    return array if array.flags.writeable else array.copy()


def outputs_to_numpy(outputs: Any, convert: Callable[[Any], np.ndarray],
                     is_tensor: Callable[[Any], bool]) -> Any:
    """Model outputs with NumPy leaves (16-bit floats as float32), structure kept."""

    def leaf(value: Any) -> np.ndarray:
        array = convert(value)
        return array.astype(np.float32) if array.dtype.kind in "fV" \
            and array.dtype.itemsize < 4 else array

    return _tree(outputs, lambda value: is_tensor(value) or isinstance(value, np.ndarray), leaf)


# --- compiled functions -----------------------------------------------------------------


def cached_function(cache: BoundedCache[Any], model: Any, key: tuple[Any, ...],
                    build: Callable[[Callable[[], Any]], Any]) -> Any:
    """The compiled function of ``model`` for ``key``, built once by ``build(get_model)``.

    The cache holds the model weakly (:class:`~agnostic_saliency.cache.ObjectKey`);
    ``build`` receives ``get_model`` and the compiled function must call it instead
    of capturing the model, so that it never keeps the model alive.
    """
    model_key = ObjectKey(model)
    return cache.get_or_create((model_key, *key), lambda: build(model_key.get))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure of the framework Keras runs on."""
    if isinstance(error, MemoryError):
        return True
    keras = sys.modules.get("keras")
    if keras is None:
        return False
    module = MODULES.get(keras.backend.backend())
    if module is None:
        return False
    found: bool = importlib.import_module(f"agnostic_saliency_keras.{module}").is_out_of_memory(
        error)
    return found
