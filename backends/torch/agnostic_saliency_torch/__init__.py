"""PyTorch backend for agnostic-saliency.

Gradients are taken with the public ``torch.autograd.grad`` with respect to a leaf
of the backend's own, which the model never sees: the model gets a copy of it, so
a forward that changes its input in place changes only that copy. No ``.grad``
field, ``requires_grad`` flag, parameter or ``training`` flag is touched, and the
caller's grad mode (``no_grad``, ``inference_mode``) does not matter. The
computation runs in the dtype and on the device of the model's weights. Several
inputs, side inputs and layer outputs (``layer=``): see
:mod:`agnostic_saliency_torch._structured`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
    outputs_to_numpy,
)
from agnostic_saliency.cache import BoundedCache, ObjectKey
from agnostic_saliency_torch import _memory, _messages, _model, _structured, _weights
from agnostic_saliency_torch._tensors import (
    differentiate,
    finish,
    format_of,
    forward,
    is_tensor,
    model_input,
    out_of_memory,
    score,
    to_numpy,
)

__all__ = ["TorchBackend"]

_SUFFIXES = (".pt", ".pth", ".ts", ".pt2")


class TorchBackend(BackendBase):
    """Backend for ``torch.nn.Module`` models, TorchScript modules and ``torch.export``
    programs (``ExportedProgram`` or its ``.module()``).

    Parameters
    ----------
    compile
        Run gradients through ``torch.compile(model)``: ``True``, or a mapping of
        keyword arguments for ``torch.compile`` (``{"mode": "max-autotune"}``). The
        user's model is not changed; each model is compiled once (up to 8 are kept,
        and kept alive). Off by default: compiling takes long and eager PyTorch is
        often as fast (see docs/benchmarks.md).
    """

    name = "torch"
    modules = ("torch",)
    channel_axis = 1
    class_index_targets = True
    layer_weights = staticmethod(_weights.layer_weights)
    with_layer_weights = staticmethod(_weights.with_layer_weights)
    magnitude_maps = (None, "max", "mean", "sum")
    #: On a GPU, :meth:`start_gradient` returns once the work is queued.
    asynchronous = True
    #: Several inputs (positional or keyword), side inputs and ``model_kwargs``.
    structured_inputs = True
    #: ``layer=``: a module's output, replaced through a forward hook on that module.
    layer_outputs = True

    def __init__(self, compile: bool | Mapping[str, Any] = False) -> None:
        if not isinstance(compile, (bool, Mapping)):
            raise TypeError(_messages.bad_compile_option(compile))
        self.compile = compile
        self._runners: BoundedCache[Any] = BoundedCache(8)

    def __repr__(self) -> str:
        return f"TorchBackend(compile={self.compile!r})"

    def can_handle(self, model: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, (torch.nn.Module,
                                                        torch.export.ExportedProgram))

    @contextmanager
    def full_precision(self) -> Iterator[None]:
        """TF32 off in matmuls and cuDNN convolutions; the settings restored on exit."""
        import torch

        matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(matmul)
            torch.backends.cudnn.allow_tf32 = cudnn

    def can_load(self, path: Path) -> bool:
        return path.suffix.lower() in _SUFFIXES

    def load_model(self, path: Path) -> Any:
        """A ``torch.export`` program (``.pt2``) or a TorchScript module (other suffixes)."""
        import torch

        if path.suffix.lower() == ".pt2":
            return torch.export.load(str(path))
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
        except RuntimeError as error:
            raise ValueError(_messages.not_torchscript(str(path), error)) from None

    def is_out_of_memory(self, error: BaseException) -> bool:
        return out_of_memory(error)

    def device_memory(self, model: Any) -> DeviceMemory | None:
        """Free and peak memory of the CUDA device (free memory of the MPS device) holding
        ``model``'s weights; ``None`` on the CPU (host memory is budgeted there)."""
        return _memory.device_memory(model)

    def to_numpy(self, array: Any) -> np.ndarray:
        return to_numpy(array) if is_tensor(array) else np.asarray(array)

    def predict(self, model: Any, inputs: np.ndarray | ModelInputs, options: CallOptions) -> Any:
        """The model's output for one array or for a ``ModelInputs`` (several inputs,
        side inputs, constants), with NumPy leaves."""
        import torch

        module, runner = self._module(model)
        place = _model.inspect(module, options)
        with torch.inference_mode(False), torch.no_grad():
            if isinstance(inputs, ModelInputs):
                outputs = _structured.forward(_hookable(module, runner, inputs), place,
                                              inputs, options)
            else:
                x = model_input(inputs, place)
                outputs = forward(runner, x.clone(memory_format=format_of(place, x.ndim)),
                                  options)
        return outputs_to_numpy(outputs, is_tensor, to_numpy)

    def layer_output(self, model: Any, inputs: ModelInputs, options: CallOptions) -> np.ndarray:
        """The output of ``inputs.layer`` (a module of the model) when the model runs on
        ``inputs``; the first tensor of a layer that returns a tuple."""
        module, _ = self._module(model)
        place = _model.inspect(module, options)
        return _structured.layer_output(module, place, inputs, options)

    def gradient(self, model: Any, inputs: np.ndarray | ModelInputs, targets: Any,
                 operator: Operator | None, options: CallOptions,
                 magnitude: Magnitude | None = None) -> Any:
        """The input gradient (see :class:`agnostic_saliency.backend.Backend`); with
        ``magnitude``, its absolute values reduced on the model's device. For a
        ``ModelInputs``: a dict of gradients by attributed key, or, with a layer, the
        gradient with respect to the layer's output values."""
        return self.start_gradient(model, inputs, targets, operator, options, magnitude)()

    def start_gradient(self, model: Any, inputs: np.ndarray | ModelInputs, targets: Any,
                       operator: Operator | None, options: CallOptions,
                       magnitude: Magnitude | None = None) -> Callable[[], Any]:
        """Check the model; on a GPU queue the gradient and return the function that
        copies it back, on the CPU return the function that computes it.

        On the CPU nothing runs before the function is called, so the model never
        sees inputs that the frontend has not checked yet.
        """
        module, runner = self._module(model)
        place = _model.inspect(module, options)
        if isinstance(inputs, ModelInputs):
            if operator is not None:
                raise TypeError(_messages.operator_with_structure())
            start = partial(_structured.start_gradient, _hookable(module, runner, inputs),
                            place, inputs, targets, options, magnitude)
        else:
            start = partial(_start, runner, place, inputs, targets, operator, options,
                            magnitude)
        if place.device.type == "cpu":
            return lambda: start()()
        return start()

    def _module(self, model: Any) -> tuple[Any, Any]:
        """The module to inspect (an exported program's ``.module()``), and what to run:
        the module itself, or its ``torch.compile`` wrapper."""
        import torch

        if isinstance(model, torch.export.ExportedProgram):
            model = self._runners.get_or_create((ObjectKey(model), "module"), model.module)
        if self.compile is False:
            return model, model
        options = self.compile if isinstance(self.compile, Mapping) else {}
        compiled = self._runners.get_or_create((ObjectKey(model), "compiled"),
                                               lambda: torch.compile(model, **options))
        return model, compiled


def _hookable(module: Any, runner: Any, inputs: ModelInputs) -> Any:
    """What runs ``inputs``: the module itself where a layer is hooked (a forward hook
    added to a compiled module would recompile it), else the runner."""
    return module if inputs.layer is not None else runner


def _start(runner: Any, place: _model.Placement, inputs: np.ndarray, targets: Any,
           operator: Operator | None, options: CallOptions, magnitude: Magnitude | None
           ) -> Callable[[], np.ndarray | None]:
    """Queue the gradient where the model is; return the function that gives it as NumPy
    (``None`` where the score does not depend on the inputs)."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        leaf = model_input(inputs, place).requires_grad_(True)
        # The model gets a copy, never the leaf: in-place changes in its forward are
        # then allowed and reach neither the leaf nor the caller's memory.
        x = leaf.clone(memory_format=format_of(place, leaf.ndim))
        scores, weights = score(runner, x, targets, operator, options)
        if not scores.requires_grad:
            return lambda: None
        (grad,) = differentiate(scores, [leaf], weights)
    if grad is None:
        return lambda: None
    return partial(to_numpy, finish(grad, magnitude))
