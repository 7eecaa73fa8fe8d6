"""What the three Keras backends share: dtypes, output handling and the function cache.

Nothing here imports a framework at module level; Keras itself is imported only
inside functions that run when a Keras model is being explained.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import outputs_to_numpy as _tree
from agnostic_saliency.backend import warn

__all__ = [
    "FunctionCache",
    "ModelCallError",
    "OperatorShapeError",
    "call_model",
    "gradient_to_numpy",
    "input_dtype",
    "note_trace",
    "outputs_to_numpy",
    "prepare_inputs",
    "require_tensor",
    "score_dtype",
    "trace_count",
]

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
    """``model(x, training=False)`` with the selector applied; model errors wrapped."""
    try:
        outputs = model(x, training=False)
    except Exception as error:
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
        warn(messages.dtype_cast(given, dtype))
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


class FunctionCache:
    """A thread-safe LRU of compiled functions keyed by model and call signature.

    Models are held through weak references where they allow it, so a cached
    function never keeps a model alive: entries of a collected model are dropped.
    The builder receives a zero-argument callable returning the model, which the
    compiled function must use instead of capturing the model itself.

    Parameters
    ----------
    size
        Most functions kept; the least recently used one is dropped first.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, Hashable], tuple[Callable[[], Any], Any]] = \
            OrderedDict()
        self._dead: list[int] = []  # ids of collected models, appended by weakref callbacks

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model: Any, key: Hashable,
            build: Callable[[Callable[[], Any]], Any]) -> Any:
        """Return the function for ``(model, key)``, building it with ``build`` once."""
        cache_key = (id(model), key)
        with self._lock:
            self._purge()
            entry = self._entries.get(cache_key)
            if entry is not None and entry[0]() is model:
                self._entries.move_to_end(cache_key)
                return entry[1]
            getter = self._getter(model)
            function = build(getter)
            self._entries[cache_key] = (getter, function)
            self._entries.move_to_end(cache_key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return function

    def clear(self) -> None:
        """Drop every cached function."""
        with self._lock:
            self._entries.clear()

    def _getter(self, model: Any) -> Callable[[], Any]:
        dead, ident = self._dead, id(model)
        try:
            # The callback only appends (atomic), so it is safe whenever GC runs it.
            return weakref.ref(model, lambda _ref: dead.append(ident))
        except TypeError:  # no weak references: hold the model while it is cached
            return lambda: model

    def _purge(self) -> None:
        while self._dead:
            ident = self._dead.pop()
            for cache_key in [key for key in self._entries if key[0] == ident]:
                if self._entries[cache_key][0]() is None:
                    del self._entries[cache_key]
