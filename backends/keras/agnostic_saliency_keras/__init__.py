"""Keras 3 backend for agnostic-saliency, on all three of Keras' own backends.

Keras has no backend-agnostic gradient, so this backend dispatches on
``keras.backend.backend()`` to one small module per framework:

- TensorFlow (:mod:`._tf`): a ``GradientTape`` inside one cached ``tf.function``
  per signature, with an unknown batch axis (no retracing for new batch sizes).
- JAX (:mod:`._jax`): ``jax.jit(jax.grad(...))`` of a function built on
  ``model.stateless_call``, with the variables' values passed as arguments.
- PyTorch (:mod:`._torch`): ``torch.autograd.grad`` with respect to a fresh leaf.

Several inputs, side inputs and ``layer=`` (:mod:`._structured`) are compiled the
same way on TensorFlow and JAX (:mod:`._structured_compiled`), eagerly on PyTorch.

Models are always called with ``training=False`` (Keras has no persistent training
mode, so ``allow_training_mode`` changes nothing). Inputs are converted to the
dtype the model converts them to itself (its ``keras.Input`` dtype, else its
dtype policy), with a warning when 32/64-bit precision changes.

The channel axis of image inputs is the model's own: its convolution and pooling
layers' ``data_format`` (see :mod:`._layout`), so a channels-first Keras model
gets channels-first maps without a ``channel_axis`` argument.
"""

from __future__ import annotations

import importlib
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.backend import BackendBase, CallOptions, DeviceMemory, Operator
from agnostic_saliency_keras import _layout, _memory, _messages, _structured, _weights
from agnostic_saliency_keras._common import (
    MODULES,
    ModelCallError,
    OperatorShapeError,
    input_dtype,
    is_out_of_memory,
    outputs_to_numpy,
    prepare_inputs,
    score_dtype,
    trace_count,
)

__all__ = ["KerasBackend", "trace_count"]


class KerasBackend(BackendBase):
    """Backend for Keras 3 layers and models (``keras.Layer`` instances).

    Under Keras' torch backend a Keras model is also a ``torch.nn.Module``; the
    higher priority makes detection ask this backend before the torch one.

    Parameters
    ----------
    jit_compile
        On Keras' TensorFlow backend: compile gradients with XLA (``True``), never
        (``False``), or, with ``None``, for models without convolution kernels only
        (on CPU XLA speeds up dense networks and slows convolutional ones down). XLA
        compiles once per batch size. Ignored on the JAX (always compiled) and
        PyTorch (eager) backends.
    """

    name = "keras"
    modules = ("keras",)
    priority = 10
    layer_weights = staticmethod(_weights.layer_weights)
    with_layer_weights = staticmethod(_weights.with_layer_weights)
    class_index_targets = True
    # Several inputs as the model's own list or dict; layers of any Keras model.
    structured_inputs = True
    layer_outputs = True

    def __init__(self, jit_compile: bool | None = None) -> None:
        self.jit_compile = jit_compile

    def __repr__(self) -> str:
        return f"{type(self).__name__}(jit_compile={self.jit_compile!r})"

    def can_handle(self, model: Any) -> bool:
        layer = getattr(sys.modules.get("keras"), "Layer", None)  # None before Keras 3
        return layer is not None and isinstance(model, layer)

    def full_precision(self) -> AbstractContextManager[None]:
        """Turn off reduced-precision (TF32) float32 math of Keras' current backend."""
        import keras

        return _framework_module(keras.backend.backend()).full_precision()

    def can_load(self, path: Path) -> bool:
        """Whether ``path`` is a ``.keras`` file (no import)."""
        return path.suffix.lower() == ".keras"

    def load_model(self, path: Path) -> Any:
        """Load a ``.keras`` file on Keras' current backend."""
        import keras

        return keras.saving.load_model(path)

    def model_channel_axis(self, model: Any, ndim: int) -> int | None:
        """The channel axis ``model``'s layers declare (``data_format``), else ``None``."""
        return _layout.model_channel_axis(model, ndim)

    def is_out_of_memory(self, error: BaseException) -> bool:
        """The allocation failure of the framework Keras runs on, or ``MemoryError``."""
        return is_out_of_memory(error)

    def device_memory(self, model: Any) -> DeviceMemory | None:
        """The memory of the accelerator holding ``model``'s weights, read through the
        framework Keras runs on; ``None`` on the CPU."""
        import keras

        return _memory.device_memory(model, keras.backend.backend())

    def to_numpy(self, array: Any) -> np.ndarray:
        keras = sys.modules.get("keras")
        if keras is not None and keras.ops.is_tensor(array):
            return np.asarray(_framework_module(keras.backend.backend()).to_numpy(array))
        return np.asarray(array)

    def layer_output(self, model: Any, inputs: Any, options: CallOptions) -> np.ndarray:
        """The output of ``inputs.layer``, a layer anywhere inside ``model``."""
        _setup(model)
        return _structured.layer_output(model, inputs)

    def predict(self, model: Any, inputs: Any, options: CallOptions) -> Any:
        module, dtype = _setup(model)
        if isinstance(inputs, ModelInputs):
            return outputs_to_numpy(_structured.predict(model, inputs, options),
                                    module.to_numpy, module.is_tensor)
        x = prepare_inputs(inputs, dtype)
        try:
            outputs = module.predict(model, x, dtype, options)
        except ModelCallError as error:
            raise ValueError(messages.model_failed(inputs.shape, error.error)) from error.error
        return outputs_to_numpy(outputs, module.to_numpy, module.is_tensor)

    def gradient(self, model: Any, inputs: Any, targets: Any, operator: Operator | None,
                 options: CallOptions) -> Any:
        if isinstance(inputs, ModelInputs):
            if operator is not None:
                raise TypeError(_messages.operator_with_structure())
            _setup(model)
            return _structured.gradient(model, inputs, targets, options, self.jit_compile)
        module, dtype = _setup(model)
        x = prepare_inputs(inputs, dtype)
        if operator is None:
            targets = np.asarray(targets)
            if targets.dtype.kind not in "iu":  # output weights, not class indices
                weights_dtype = np.float64 if score_dtype(dtype) == "float64" else np.float32
                targets = targets.astype(weights_dtype, copy=False)
        try:
            if not getattr(model, "built", True):  # create the variables eagerly, not traced
                module.predict(model, x[:1], dtype, CallOptions())
            extra = {"jit_compile": self.jit_compile} if module.__name__.endswith("._tf") else {}
            gradient: np.ndarray | None = module.gradient(model, x, dtype, targets, operator,
                                                          options, **extra)
        except ModelCallError as error:
            raise ValueError(messages.model_failed(inputs.shape, error.error)) from error.error
        except OperatorShapeError as error:
            # A traced shape leaves the batch axis unknown (None): it is this batch.
            shape = tuple(len(inputs) if size is None else size for size in error.shape)
            raise ValueError(messages.operator_wrong_shape(shape, len(inputs))) from None
        return gradient


def _setup(model: Any) -> tuple[ModuleType, str]:
    """The gradient module of Keras' current backend and the dtype to feed ``model``."""
    import keras

    framework = keras.backend.backend()
    module = _framework_module(framework)
    dtype = input_dtype(model)
    if framework == "jax":
        dtype = module.effective_dtype(dtype)
    return module, dtype


def _framework_module(framework: str) -> ModuleType:
    if framework not in MODULES:
        raise ValueError(_messages.keras_backend_unsupported(framework))
    return importlib.import_module(f"agnostic_saliency_keras.{MODULES[framework]}")
