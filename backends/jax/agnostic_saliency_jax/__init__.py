"""JAX backend for agnostic-saliency: JAX functions, Flax NNX and Equinox modules.

Gradients come from ``jax.jit(jax.grad(score))``, one compiled function per
model structure, operator and output selector, kept in a bounded LRU cache.
Parameters are arguments of the compiled function, never constants of its trace,
so updated weights are used without recompiling; a new input shape (batch size)
traces once more, equal shapes never do (see :attr:`JaxBackend.trace_count`).

- Flax NNX modules are flattened as pytrees (``(graphdef, state)`` from
  ``nnx.split`` for modules that are no pytrees) and rebuilt inside the trace.
  The rebuilt module is a copy: RNG counters of Dropout and batch
  statistics of BatchNorm are never written back to the user's module, and the
  same module state always gives the same map. A module whose Dropout or
  BatchNorm layers are in training mode is refused unless
  ``allow_training_mode=True``; call ``model.eval()`` first.
- Equinox modules are split with ``eqx.partition(model, eqx.is_array)``; a new
  module of the same structure (``eqx.tree_at``) reuses the compiled function.
- Functions (plain or jitted) must be passed with ``backend="jax"`` when they are
  plain Python functions; the arrays they close over are part of their trace.
  The cache holds them by weak reference only.
- Flax Linen modules hold no parameters: they are refused with a message that
  shows how to bind them (``partial(module.apply, params)``).

XLA runs compiled functions asynchronously, so the backend is ``asynchronous``:
:meth:`JaxBackend.start_gradient` returns once the work is queued, and the
frontend checks the inputs meanwhile.

The computation runs in the inputs' dtype as JAX sees it: without
``jax_enable_x64`` (the default) float64 inputs are computed in float32, with a
:class:`~agnostic_saliency.messages.SaliencyWarning`; the frontend still returns
float64 maps. Inside ``jax.enable_x64(True)`` they are computed in float64. The
global JAX configuration is never changed.

``predict`` is jitted and cached the same way (its own cache and trace count); a
model whose output is not a pytree of arrays is run eagerly instead. The shape of
its output comes from ``jax.eval_shape`` (:meth:`JaxBackend.output_shape`), so
explaining given classes compiles the gradient alone, not a forward pass too.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.backend import (
    BackendBase,
    CallOptions,
    DeviceMemory,
    Magnitude,
    Operator,
    OutputSelector,
    outputs_to_numpy,
    report_cast,
)
from agnostic_saliency.cache import BoundedCache, object_key
from agnostic_saliency_jax import _loading, _memory, _messages, _precision, _structured, _weights
from agnostic_saliency_jax._compile import (
    TraceCounter,
    abstract_output_shape,
    call_model,
    make_gradient_function,
    make_predict_function,
)
from agnostic_saliency_jax._models import (
    SplitModel,
    check_training_mode,
    is_linen_module,
    split_model,
)

__all__ = ["JaxBackend"]

_JAX_MODULES = ("jax", "jaxlib")


class JaxBackend(BackendBase):
    """Backend for JAX callables, Flax NNX modules and Equinox modules.

    Parameters
    ----------
    cache_size
        Most compiled gradient functions kept (least recently used evicted first).
    """

    name = "jax"
    modules = ("jax", "jaxlib", "flax", "equinox")
    layer_weights = staticmethod(_weights.layer_weights)
    with_layer_weights = staticmethod(_weights.with_layer_weights)
    class_index_targets = True
    asynchronous = True
    # Reduced in the compiled program. Not |g| alone: XLA's result is read-only, and
    # the frontend's copy of it costs what NumPy's absolute value does.
    magnitude_maps = ("max", "mean", "sum")
    # Several inputs as model(*args, **kwargs); layers: Flax NNX and Equinox submodules.
    structured_inputs = True
    layer_outputs = True

    def __init__(self, cache_size: int = 32) -> None:
        self._cache: BoundedCache[Any] = BoundedCache(cache_size)
        self._traces = TraceCounter()
        self._predict_cache: BoundedCache[Any] = BoundedCache(cache_size)
        self._predict_traces = TraceCounter()
        # Active training layers per NNX module structure (a treedef or graphdef).
        self._training_layers: BoundedCache[tuple[str, ...]] = BoundedCache(cache_size)
        # The last immutable model explained, with its split and compiled function:
        # (weak reference to the model, operator, selector, magnitude, split, function).
        self._last: tuple[Any, ...] | None = None

    def __repr__(self) -> str:
        return f"JaxBackend(cache_size={self._cache.maxsize})"

    @property
    def trace_count(self) -> int:
        """How many times a gradient function was traced (and so compiled) so far."""
        return self._traces.value

    @property
    def predict_trace_count(self) -> int:
        """How many times a forward pass was traced for :meth:`predict` so far."""
        return self._predict_traces.value

    @property
    def cache_len(self) -> int:
        """How many compiled gradient functions are cached now."""
        return len(self._cache)

    def clear_cache(self) -> None:
        """Drop every compiled function."""
        self._last = None
        self._cache.clear()
        self._predict_cache.clear()
        self._training_layers.clear()

    def can_handle(self, model: Any) -> bool:
        """Flax NNX and Equinox modules, JAX callables; Flax Linen modules too, which
        are then refused with the way to bind their parameters."""
        nnx = sys.modules.get("flax.nnx")
        if nnx is not None and isinstance(model, nnx.Module):
            return True
        eqx = sys.modules.get("equinox")
        if (eqx is not None and isinstance(model, eqx.Module)) or is_linen_module(model):
            return True
        # jax.jit / custom_jvp / tree_util.Partial objects; their types live in jax/jaxlib.
        return callable(model) and type(model).__module__.split(".")[0] in _JAX_MODULES

    def full_precision(self) -> AbstractContextManager[None]:
        """Turn off reduced-precision (TF32) float32 math while comparing; restored after."""
        return _precision.full_precision()

    def can_load(self, path: Path) -> bool:
        """Whether ``path`` is a serialized ``jax.export`` file (no import)."""
        return path.suffix.lower() in _loading.SUFFIXES

    def load_model(self, path: Path) -> Any:
        """Load a serialized ``jax.export`` function."""
        return _loading.load_model(path)

    def is_out_of_memory(self, error: BaseException) -> bool:
        """XLA's runtime errors with status ``RESOURCE_EXHAUSTED`` (a device or host
        allocation failed), and ``MemoryError``."""
        return isinstance(error, MemoryError) or (
            isinstance(error, RuntimeError) and "RESOURCE_EXHAUSTED" in str(error))

    def device_memory(self, model: Any) -> DeviceMemory | None:
        """``memory_stats()`` of the (non-CPU) device holding ``model``'s arrays, or of
        JAX's default device for a function; ``None`` on the CPU."""
        return _memory.device_memory(model)

    def to_numpy(self, array: Any) -> np.ndarray:
        return _to_numpy(array)

    def predict(self, model: Any, inputs: Any, options: CallOptions) -> Any:
        import jax

        if isinstance(inputs, ModelInputs):
            return self._predict_structured(model, inputs, options)
        split = split_model(model)
        check_training_mode(model, options, split, self._training_layers)
        selector = object_key(options.output_selector)

        def build() -> Any:
            return make_predict_function(split.rebuild, selector, self._predict_traces)

        function = self._predict_cache.get_or_create((*split.key, selector), build)
        x = _as_dtype(inputs, _compute_dtype(inputs.dtype))
        try:
            outputs = function(x, split.params)
        except TypeError:
            # Model failures are ValueErrors (call_model); a TypeError here means the
            # output is not a pytree of arrays, which only an eager call can return.
            outputs = call_model(split.rebuild(split.params), jax.device_put(x),
                                 options.output_selector)
        return _outputs_to_numpy(outputs)

    def output_shape(self, model: Any, inputs: Any, options: CallOptions
                     ) -> tuple[int, ...] | None:
        """The shape of :meth:`predict`'s output from ``jax.eval_shape``: the same forward
        pass traced on abstract inputs, never compiled, so the first map compiles the
        gradient alone. ``None`` when the trace fails or the output is not one array:
        the frontend then runs :meth:`predict`, whose call reports it."""
        import jax

        try:
            split = split_model(model)
            check_training_mode(model, options, split, self._training_layers)
            if not isinstance(inputs, ModelInputs):
                x = jax.ShapeDtypeStruct(inputs.shape, _compute_dtype(inputs.dtype))
                return abstract_output_shape(split.rebuild, split.params, x,
                                             options.output_selector)
            values = {key: jax.ShapeDtypeStruct(value.shape, _compute_dtype(value.dtype))
                      for key, value in inputs.values.items()}

            def forward(values: Any, params: Any) -> Any:
                return _structured.call_selected(split.rebuild(params), inputs, values,
                                                 options.output_selector)

            outputs = jax.eval_shape(forward, values, split.params)
        except Exception:  # predict runs the model and reports it
            return None
        return tuple(outputs.shape) if isinstance(outputs, jax.ShapeDtypeStruct) else None

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Operator | None,
                 options: CallOptions, magnitude: Magnitude | None = None) -> np.ndarray:
        """The input gradient (see :class:`agnostic_saliency.backend.Backend`); with
        ``magnitude``, its absolute values reduced in the compiled program."""
        return self.start_gradient(model, inputs, targets, operator, options, magnitude)()

    def start_gradient(self, model: Any, inputs: np.ndarray, targets: Any,
                       operator: Operator | None, options: CallOptions,
                       magnitude: Magnitude | None = None) -> Callable[[], np.ndarray]:
        """Start :meth:`gradient`; return the function that waits for it (as NumPy).

        JAX runs compiled functions asynchronously: meanwhile the frontend checks the
        inputs. The compiled function is pure, so running it on inputs that turn out
        to be non-finite changes nothing (nor does :meth:`predict`).
        """
        if isinstance(inputs, ModelInputs):
            return self._start_structured(model, inputs, targets, operator, options)
        split, function = self._gradient_function(model, operator, options.output_selector,
                                                  magnitude)
        if not split.immutable:  # an immutable split is no Flax NNX module: nothing trains
            check_training_mode(model, options, split, self._training_layers)
        dtype = inputs.dtype
        if dtype.kind != "f" or dtype.itemsize > 4:  # float16/32 are computed as they are
            dtype = _compute_dtype(dtype)
            if dtype != inputs.dtype and inputs.dtype.itemsize >= 4:
                report_cast(inputs.dtype, dtype)
        # NumPy arguments go to the compiled function as they are: its own transfer is
        # one copy, cheaper than an explicit jax.device_put first.
        if operator is None and isinstance(targets, np.ndarray) and targets.dtype.kind == "i":
            # Class indices (int64, below the number of outputs) go as they are: jit
            # narrows them to int32 without x64 in C++, and no dtype work runs here.
            weights: Any = targets
        else:
            weights = None if targets is None else _target_array(targets, dtype)
        gradient = function(_as_dtype(inputs, dtype), split.params, weights)
        # A jax.Array of the compute dtype: NumPy takes it as it is, but for bfloat16.
        return partial(np.asarray if dtype.kind == "f" else _to_numpy, gradient)

    def layer_output(self, model: Any, inputs: Any, options: CallOptions) -> np.ndarray:
        """The output of the NNX or Equinox submodule ``inputs.layer`` on ``inputs`` (a copy of
        the model runs; the model itself is never changed)."""
        split = split_model(model)
        check_training_mode(model, options, split, self._training_layers)
        path = _structured.layer_path(model, inputs.layer)
        return _to_numpy(_structured.read_layer(split, _device_inputs(inputs), path))

    def _predict_structured(self, model: Any, inputs: ModelInputs, options: CallOptions) -> Any:
        """The outputs on several inputs, run eagerly (a forward pass is cheap next to
        the compiled gradients)."""
        split = split_model(model)
        check_training_mode(model, options, split, self._training_layers)
        converted = _device_inputs(inputs)
        return _outputs_to_numpy(_structured.call_selected(
            split.rebuild(split.params), converted, dict(converted.values),
            options.output_selector))

    def _start_structured(self, model: Any, inputs: ModelInputs, targets: Any,
                          operator: Operator | None,
                          options: CallOptions) -> Callable[[], Any]:
        """Start the gradients for several inputs or a layer's values: a dict by
        attributed key, or the layer's gradient."""
        if operator is not None:
            raise TypeError(_messages.operator_with_structure())
        split = split_model(model)
        check_training_mode(model, options, split, self._training_layers)
        path = None if inputs.layer is None else _structured.layer_path(model, inputs.layer)
        selector = options.output_selector
        selector_key = object_key(selector)

        def build() -> Any:
            return _structured.make_structured_gradient(split, inputs, path, selector,
                                                        self._traces)

        key = (*split.key, selector_key, *_structured.structure_key(inputs, path))
        function = self._cache.get_or_create(key, build)
        converted = _device_inputs(inputs)
        if path is None:
            wrt: Any = {key: converted.values[key] for key in inputs.attributed}
            side = {key: value for key, value in converted.values.items()
                    if key not in inputs.attributed}
            dtype = np.result_type(*wrt.values())
        else:
            values = np.asarray(inputs.layer_values)
            dtype = _compute_dtype(values.dtype)
            wrt, side = _as_dtype(values, dtype), dict(converted.values)
        if isinstance(targets, np.ndarray) and targets.dtype.kind in "iu":
            weights: Any = _as_dtype(targets, _compute_dtype(targets.dtype))
        else:
            weights = _target_array(targets, dtype)
        gradient = function(wrt, side, split.params, weights)
        if path is None:
            return lambda: {key: _to_numpy(value) for key, value in gradient.items()}
        return partial(_to_numpy, gradient)

    def _gradient_function(self, model: Any, operator: Operator | None,
                           selector: OutputSelector | None, magnitude: Magnitude | None
                           ) -> tuple[SplitModel, Any]:
        """The split of ``model`` and its compiled gradient function (cached)."""
        last = self._last
        if last is not None and last[0]() is model and last[1] is operator \
                and last[2] is selector and last[3] == magnitude:
            return last[4], last[5]  # repeated calls skip the split and the lookup
        split = split_model(model)
        operator_key, selector_key = object_key(operator), object_key(selector)

        def build() -> Any:
            return make_gradient_function(split.rebuild, operator_key, selector_key,
                                          self._traces, magnitude)

        # One flat tuple: the cache drops entries whose ObjectKeys died.
        function = self._cache.get_or_create((*split.key, operator_key, selector_key, magnitude),
                                             build)
        if split.immutable:
            try:
                self._last = (weakref.ref(model), operator, selector, magnitude, split,
                              function)
            except TypeError:  # no weak references to this model: nothing remembered
                self._last = None
        return split, function


def _device_inputs(inputs: ModelInputs) -> ModelInputs:
    """``inputs`` with every entry in a dtype JAX computes in (float64 and int64 narrowed
    without ``jax_enable_x64``), as NumPy."""
    from dataclasses import replace

    values = {key: _as_dtype(value, _compute_dtype(value.dtype))
              for key, value in inputs.values.items()}
    return replace(inputs, values=values)


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype JAX computes ``dtype`` inputs in (float64 -> float32 without x64)."""
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return dtype  # jax_enable_x64 changes only 64-bit types
    if dtype.kind == "V" and dtype.name == "bfloat16":
        return dtype
    import jax

    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _as_dtype(inputs: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return inputs if inputs.dtype == dtype else inputs.astype(dtype)


def _target_array(targets: Any, dtype: np.dtype) -> np.ndarray:
    """Targets as NumPy in a dtype JAX accepts: floats in the compute dtype."""
    array = np.asarray(targets)
    if array.dtype.kind == "f":
        return _as_dtype(array, dtype)
    return _as_dtype(array, _compute_dtype(array.dtype))


def _to_numpy(array: Any) -> np.ndarray:
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(array, jax.Array):
        if array.dtype.kind == "V" and array.dtype.name == "bfloat16":
            array = array.astype(np.float32)
        return np.asarray(array)
    return np.asarray(array)


def _outputs_to_numpy(outputs: Any) -> Any:
    tensor = sys.modules["jax"].Array
    return outputs_to_numpy(outputs, lambda value: isinstance(value, tensor), _to_numpy)
