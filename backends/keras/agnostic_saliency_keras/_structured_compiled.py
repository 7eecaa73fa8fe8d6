"""Compiled gradients of structured calls (several inputs, side inputs, ``layer=``).

One compiled function per signature, cached like the one-array functions of
:mod:`._tf` and :mod:`._jax`:

- TensorFlow: a ``GradientTape`` inside a ``tf.function`` whose input signature
  leaves the batch axis unknown (a new batch size does not retrace), traced once into
  a concrete function; XLA, and its fallback to a plain graph, are
  :class:`._tf._Traced`'s. Variables are captured by reference, so changed weights
  are used.
- JAX: ``jax.jit(jax.grad(...))`` with the variables' current values as arguments,
  mapped onto the model's variables with a ``StatelessScope`` (as
  ``Layer.stateless_call`` does), so changed weights are seen without retracing.

The signature is the structure kind, keys, each entry's dtype and per-sample shape,
the attributed keys, the layer, the targets' kind, the output selector and
``model_kwargs`` (their values hashed). The forward pass and score are the eager
path's own (``total`` of :mod:`._structured`); with ``layer=`` the layer is
intercepted while tracing, and its exactly-once checks raise then. ``None`` (use the
eager path) on PyTorch, for ``model_kwargs`` that cannot be hashed, and for a model
whose Python code cannot be traced (it branches on tensor values).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np

from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.backend import CallOptions
from agnostic_saliency.cache import BoundedCache, ObjectKey, object_key
from agnostic_saliency_keras._common import cached_function, note_trace

__all__ = ["gradients", "untraceable"]

_functions: BoundedCache[Any] = BoundedCache(32)

Total = Callable[[Any, ModelInputs, Mapping[Any, Any], Any, Any, CallOptions], Any]


def gradients(model: Any, inputs: ModelInputs, converted: Mapping[Any, Any], targets: Any,
              options: CallOptions, total: Total, jit_compile: bool | None
              ) -> dict[Any, Any] | None:
    """Gradients by attributed key, or ``{0: gradient of inputs.layer_values}``
    (tensors, ``None`` where disconnected); ``None`` where no compiled function applies."""
    import keras

    framework = keras.backend.backend()
    kwargs_key = _hashable(inputs.model_kwargs)
    if framework not in _BUILDERS or kwargs_key is None:
        return None
    target_array = np.asarray(targets)
    layer_values = None if inputs.layer is None else np.asarray(inputs.layer_values)
    key = (framework, inputs.kind, inputs.keys, inputs.attributed, kwargs_key,
           object_key(inputs.layer), object_key(options.output_selector), jit_compile,
           tuple((str(value.dtype), tuple(value.shape[1:])) for value in converted.values()),
           _array_kind(layer_values), _array_kind(target_array))
    skeleton = dataclasses.replace(inputs, values={}, layer=None, layer_values=None)
    entry: _Entry = cached_function(_functions, model, key, lambda get_model: _Entry(
        _BUILDERS[framework](get_model, skeleton, object_key(inputs.layer), converted,
                             layer_values, target_array, options, total, jit_compile,
                             model)))
    if entry.eager:
        return None
    try:
        result: dict[Any, Any] = entry.function(model, converted, layer_values, target_array)
    except Exception as error:
        if not untraceable(error):
            raise
        entry.eager = True  # Python control flow on tensor values: eager from now on
        return None
    return result


class _Entry:
    """A compiled function of one signature, or the note that the model cannot be traced."""

    def __init__(self, function: Callable[..., dict[Any, Any]]) -> None:
        self.function = function
        self.eager = False


def _tf_builder(get_model: Callable[[], Any], skeleton: ModelInputs,
                layer_key: ObjectKey | None, converted: Mapping[Any, Any],
                layer_values: np.ndarray | None, targets: np.ndarray, options: CallOptions,
                total: Total, jit_compile: bool | None, model: Any
                ) -> Callable[..., dict[Any, Any]]:
    import tensorflow as tf

    from agnostic_saliency_keras._tf import _Traced, _use_xla

    keys = list(converted)
    signature = [tf.TensorSpec((None, *value.shape[1:]), value.dtype)
                 for value in converted.values()]
    if layer_values is not None:
        signature.append(tf.TensorSpec((None, *layer_values.shape[1:]), layer_values.dtype))
    batch: tuple[int | None, ...] = (None,) if targets.ndim else ()
    signature.append(tf.TensorSpec((*batch, *targets.shape[1:]), targets.dtype))

    def compute(*args: Any) -> list[Any]:
        note_trace()
        entries = dict(zip(keys, args[:len(keys)], strict=True))
        given = args[len(keys)] if layer_values is not None else None
        with tf.GradientTape() as tape:
            wrt = [given] if given is not None else [entries[key]
                                                   for key in skeleton.attributed]
            for value in wrt:
                tape.watch(value)
            score = total(get_model(), _with_layer(skeleton, layer_key), entries, given,
                          args[-1], options)
        return list(tape.gradient(score, wrt))

    def make(jit: bool) -> Any:
        return tf.function(compute, input_signature=signature, autograph=False,
                           jit_compile=jit)

    traced = _Traced(make, _use_xla(model) if jit_compile is None else jit_compile)

    def run(model: Any, converted: Mapping[Any, Any], layer_values: np.ndarray | None,
            targets: np.ndarray) -> dict[Any, Any]:
        args = list(converted.values())
        if layer_values is not None:
            args.append(tf.convert_to_tensor(layer_values))
        grads = traced(*args, tf.convert_to_tensor(targets))
        return _by_key(skeleton, grads)

    return run


def _jax_builder(get_model: Callable[[], Any], skeleton: ModelInputs,
                 layer_key: ObjectKey | None, converted: Mapping[Any, Any],
                 layer_values: np.ndarray | None, targets: np.ndarray, options: CallOptions,
                 total: Total, jit_compile: bool | None, model: Any
                 ) -> Callable[..., dict[Any, Any]]:
    import jax
    import keras

    keys = list(converted)

    def score(wrt: list[Any], entries: list[Any], trainable: list[Any],
              non_trainable: list[Any], targets: Any) -> Any:
        note_trace()
        model = get_model()
        by_key = dict(zip(keys, entries, strict=True))
        if layer_values is None:
            by_key.update(zip(skeleton.attributed, wrt, strict=True))
        mapping = [*zip(model.trainable_variables, trainable, strict=True),
                   *zip(model.non_trainable_variables, non_trainable, strict=True)]
        with keras.StatelessScope(state_mapping=mapping):
            return total(model, _with_layer(skeleton, layer_key), by_key,
                         wrt[0] if layer_values is not None else None, targets, options)

    function = jax.jit(jax.grad(score))

    def run(model: Any, converted: Mapping[Any, Any], layer_values: np.ndarray | None,
            targets: np.ndarray) -> dict[Any, Any]:
        wrt = [layer_values] if layer_values is not None else [
            converted[key] for key in skeleton.attributed]
        grads = function(wrt, list(converted.values()),
                         [variable.value for variable in model.trainable_variables],
                         [variable.value for variable in model.non_trainable_variables],
                         targets)
        return _by_key(skeleton, grads)

    return run


_BUILDERS = {"tensorflow": _tf_builder, "jax": _jax_builder}


def _by_key(skeleton: ModelInputs, grads: list[Any]) -> dict[Any, Any]:
    if skeleton.attributed:
        return dict(zip(skeleton.attributed, grads, strict=True))
    return {0: grads[0]}


def _with_layer(skeleton: ModelInputs, layer_key: ObjectKey | None) -> ModelInputs:
    """The signature's inputs with the layer, held weakly by the cache, put back."""
    if layer_key is None:
        return skeleton
    return dataclasses.replace(skeleton, layer=layer_key.get())


def _array_kind(array: np.ndarray | None) -> Hashable:
    return None if array is None else (array.dtype.str, array.ndim, array.shape[1:])


def _hashable(kwargs: Mapping[str, Any]) -> Hashable | None:
    """``model_kwargs`` as a key (names, types and values), or ``None`` if a value
    cannot be hashed (an array, a tensor, a list)."""
    key = tuple(sorted((name, type(value), value) for name, value in kwargs.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def untraceable(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says Python code branched on a traced value."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        kinds: tuple[type[BaseException], ...] = (tf.errors.OperatorNotAllowedInGraphError,)
    else:
        import jax

        kinds = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                 jax.errors.TracerIntegerConversionError)
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kinds):
            return True
        # ModelCallError wraps the model's error as its cause; Keras may raise another
        # error while re-raising a JAX tracer error (then its context).
        seen = seen.__cause__ or seen.__context__
    return False

