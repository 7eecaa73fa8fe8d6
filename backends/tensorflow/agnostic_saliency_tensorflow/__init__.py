"""TensorFlow backend for agnostic-saliency.

Handles ``tf.Module`` instances and TensorFlow callables (``tf.function`` objects,
loaded SavedModels), and plain Python functions of TensorFlow ops passed with
``backend="tensorflow"``. A SavedModel loaded with ``tf.saved_model.load`` that is
not callable itself (a Keras ``model.export``) is called through its ``serve``
endpoint, or its only signature; a one-entry dict output needs no output selector.

Gradients are taken with ``tf.GradientTape`` inside one cached ``tf.function`` per
model, operator, output selector, input dtype and rank (see :mod:`._traced`), so
repeated calls cost what a hand-written ``tf.function`` costs: new batch sizes do
not retrace, and targets travel as tensors. The cache is thread-safe, bounded and
holds models weakly. No global TensorFlow setting is changed.

The model computes in the dtype of its floating variables (inputs are cast to it,
with a warning between float32 and float64); a model without variables computes
in the inputs' dtype. Scores are summed in at least float32.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Hashable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.backend import (
    BackendBase,
    CallOptions,
    DeviceMemory,
    Operator,
    outputs_to_numpy,
    report_cast,
)
from agnostic_saliency.cache import BoundedCache, ObjectKey, object_key
from agnostic_saliency_tensorflow import _loading, _memory, _precision, _structured
from agnostic_saliency_tensorflow._traced import (
    Compiled,
    gradient_body,
    is_out_of_memory,
    predict_body,
    trace_count,
)

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["TensorFlowBackend", "trace_count"]


class TensorFlowBackend(BackendBase):
    """Backend for ``tf.Module`` models and TensorFlow callables.

    Parameters
    ----------
    cache_size
        Most traced computations kept (least recently used ones are dropped).
    jit_compile
        Compile gradients with XLA (``True``), never (``False``), or, with ``None``,
        for models whose variables include no convolution kernel (none of rank 3 or
        more): on CPU XLA speeds up dense networks and slows convolutional ones down
        (see ``benchmarks/``). XLA compiles once per batch size; a graph that XLA
        cannot compile runs without it.
    """

    name = "tensorflow"
    modules = ("tensorflow",)
    class_index_targets = True
    # Several inputs as model(*args, **kwargs), run eagerly; no layer= (see _structured).
    structured_inputs = True

    def __init__(self, cache_size: int = 32, jit_compile: bool | None = None) -> None:
        self._cache: BoundedCache[Compiled] = BoundedCache(cache_size)
        self.jit_compile = jit_compile

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(cache_size={self._cache.maxsize}, "
                f"jit_compile={self.jit_compile!r})")

    def can_handle(self, model: Any) -> bool:
        tf = sys.modules.get("tensorflow")
        if tf is None:
            return False
        if isinstance(model, tf.Module) or _loading.is_loaded_saved_model(model):
            return True
        return callable(model) and type(model).__module__.split(".")[0] == "tensorflow"

    def full_precision(self) -> AbstractContextManager[None]:
        """Turn off reduced-precision (TF32) float32 math while comparing; restored after."""
        return _precision.full_precision()

    def can_load(self, path: Path) -> bool:
        """Whether ``path`` is a SavedModel folder (no import)."""
        return _loading.is_saved_model(path)

    def load_model(self, path: Path) -> Any:
        """Load a SavedModel folder."""
        return _loading.load_model(path)

    def device_memory(self, model: Any) -> DeviceMemory | None:
        """The memory of the GPU holding ``model``'s variables, from
        ``tf.config.experimental.get_memory_info``; ``None`` on the CPU."""
        return _memory.device_memory(model)

    def is_out_of_memory(self, error: BaseException) -> bool:
        """``tf.errors.ResourceExhaustedError`` (device or host memory) and ``MemoryError``."""
        return is_out_of_memory(error)

    def to_numpy(self, array: Any) -> np.ndarray:
        return _to_numpy(array)

    def predict(self, model: Any, inputs: Any, options: CallOptions) -> Any:
        """Run the model on ``inputs``; return its (selected) output with NumPy leaves.

        Raises
        ------
        ValueError
            If the model fails on the inputs.
        """
        import tensorflow as tf

        if isinstance(inputs, ModelInputs):
            return _outputs_to_numpy(_structured.predict(
                model, inputs, options, lambda dtype: _compute_dtype(model, dtype)))

        x = tf.convert_to_tensor(inputs)
        model_key, selector_key = ObjectKey(model), object_key(options.output_selector)
        key = ("predict", model_key, selector_key, x.dtype.name, x.shape.rank)

        def build() -> Compiled:
            compute = _compute_dtype(model, x.dtype)
            return Compiled(predict_body(model_key, selector_key, compute), x.dtype, (), compute)

        compiled = self._cache.get_or_create(key, build)
        _warn_cast(x.dtype, compiled.compute_dtype)
        return _outputs_to_numpy(compiled(x))

    def gradient(self, model: Any, inputs: Any, targets: Any, operator: Operator | None,
                 options: CallOptions) -> Any:
        """Signed gradient of the summed scores with respect to ``inputs`` (for a
        :class:`~agnostic_saliency._structure.ModelInputs`, a dict by attributed key,
        computed eagerly, see :mod:`._structured`).

        Returns
        -------
        numpy.ndarray or None
            Same shape as ``inputs``; float32 for 16-bit inputs, else the inputs'
            dtype. ``None`` when TensorFlow finds no path from the inputs to the
            scores (the frontend reports it).

        Raises
        ------
        ValueError
            If the model fails, or the operator does not return scores of shape ``(N,)``.
        TypeError
            If the model's (selected) output is not a single tensor.
        """
        import tensorflow as tf

        if isinstance(inputs, ModelInputs):
            if operator is not None or inputs.layer is not None:
                raise TypeError(messages.structured_not_supported(
                    self.name, "an operator or layer= with several inputs"))
            return _structured.gradient(model, inputs, targets, options,
                                        lambda dtype: _compute_dtype(model, dtype))
        x = tf.convert_to_tensor(inputs)
        targets = None if targets is None else np.asarray(targets)
        model_key, operator_key = ObjectKey(model), object_key(operator)
        selector_key = object_key(options.output_selector)
        key = ("gradient", model_key, operator_key, selector_key, x.dtype.name, x.shape.rank,
               _targets_signature(targets, operator))

        def build() -> Compiled:
            compute = _compute_dtype(model, x.dtype)
            body = gradient_body(model_key, operator_key, selector_key, compute)
            jit = _use_xla(model) if self.jit_compile is None else self.jit_compile
            return Compiled(body, x.dtype, _target_specs(targets, operator, compute), compute,
                            jit_compile=jit)

        compiled = self._cache.get_or_create(key, build)
        _warn_cast(x.dtype, compiled.compute_dtype)
        args = [tf.convert_to_tensor(np.asarray(targets, dtype=dtype.as_numpy_dtype))
                for dtype in compiled.arg_dtypes]
        gradient, score_shape = compiled(x, *args)
        if score_shape is not None:
            shape = tuple(int(size) for size in score_shape.numpy())
            if shape != (len(inputs),):
                raise ValueError(messages.operator_wrong_shape(shape, len(inputs)))
        return None if gradient is None else _to_numpy(gradient)

    def clear_cache(self) -> None:
        """Drop every traced computation (they are rebuilt on the next call)."""
        self._cache.clear()


# --- dtypes -----------------------------------------------------------------------------


def _compute_dtype(model: Any, input_dtype: tf.DType) -> tf.DType:
    """The dtype the model computes in: its floating variables' (most common) dtype.

    Inputs already in one of the variables' dtypes, and models without floating
    variables, compute in the inputs' dtype.
    """
    import tensorflow as tf

    floating = []
    for variable in _variables(model):
        try:
            dtype = tf.as_dtype(variable.dtype)
        except (AttributeError, TypeError):
            continue
        if dtype.is_floating:
            floating.append(dtype.base_dtype)
    if not floating or input_dtype in floating:
        return input_dtype
    return Counter(floating).most_common(1)[0][0]


def _use_xla(model: Any) -> bool:
    """XLA for models with variables but no convolution kernels (none of rank 3 or more)."""
    ranks = [len(variable.shape) for variable in _variables(model)]
    return bool(ranks) and max(ranks) < 3


def _variables(model: Any, depth: int = 0) -> Any:
    """Variables of a ``tf.Module``, a Keras model, another trackable (a loaded
    SavedModel) or of the object a ``tf.function`` or bound method wraps."""
    tf = sys.modules["tensorflow"]
    try:
        if isinstance(model, tf.Module):
            return model.variables
        variables = getattr(model, "variables", None)
        if isinstance(variables, (list, tuple)):
            return variables
        inner = getattr(model, "python_function", None) or getattr(model, "__self__", None)
        if inner is not None and depth < 2:
            return _variables(inner, depth + 1)
        if isinstance(model, tf.__internal__.tracking.Trackable):
            return [obj for obj in tf.train.TrackableView(model).descendants()
                    if isinstance(obj, tf.Variable)]
    except Exception:  # an odd property must not stop the explanation
        return ()
    return ()


def _warn_cast(given: tf.DType, used: tf.DType) -> None:
    if given != used and given.size >= 4 and used.size >= 4:
        report_cast(given.name, used.name)


# --- targets ----------------------------------------------------------------------------


def _targets_signature(targets: np.ndarray | None, operator: Operator | None) -> Hashable:
    """What of the targets the traced function depends on: presence, rank, dtype kind."""
    if targets is None:
        return None
    if operator is None and targets.dtype.kind in "iu":
        return ("index", targets.ndim)
    if operator is None or targets.dtype.kind == "f":
        return ("float", targets.ndim)
    return (targets.dtype.str, targets.ndim)


def _target_specs(targets: np.ndarray | None, operator: Operator | None,
                  compute: tf.DType) -> list[tuple[int, Any]]:
    """``(rank, dtype)`` of the targets tensor passed to the traced function, if any.

    Output weights travel in float64 for float64 models, else in float32, class
    indices in int64; an operator's floating targets in the compute dtype, its other
    targets as they are.
    """
    import tensorflow as tf

    if targets is None:
        return []
    if operator is None and targets.dtype.kind in "iu":
        return [(targets.ndim, tf.int64)]
    if operator is None:
        return [(targets.ndim, tf.float64 if compute == tf.float64 else tf.float32)]
    if targets.dtype.kind == "f":
        return [(targets.ndim, compute)]
    return [(targets.ndim, tf.as_dtype(targets.dtype))]


# --- conversions ------------------------------------------------------------------------


def _to_numpy(array: Any) -> np.ndarray:
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(array, (tf.Tensor, tf.Variable)):
        if array.dtype in (tf.float16, tf.bfloat16):
            array = tf.cast(array, tf.float32)
        return np.asarray(array.numpy())
    return np.asarray(array)


def _is_tf_tensor(value: Any) -> bool:
    tf = sys.modules["tensorflow"]
    return isinstance(value, (tf.Tensor, tf.Variable))


def _outputs_to_numpy(outputs: Any) -> Any:
    return outputs_to_numpy(outputs, _is_tf_tensor, _to_numpy)
