"""PyTorch backend for agnostic-saliency.

Gradients are taken with the public ``torch.autograd.grad`` with respect to a leaf
of the backend's own, which the model never sees: the model gets a copy of it, so
a forward that changes its input in place changes only that copy. No ``.grad``
field, ``requires_grad`` flag, parameter or ``training`` flag is touched, and the
caller's grad mode (``no_grad``, ``inference_mode``) does not matter. The
computation runs in the dtype and on the device of the model's weights.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import (
    BackendBase,
    CallOptions,
    Magnitude,
    Operator,
    outputs_to_numpy,
    warn,
)
from agnostic_saliency.cache import BoundedCache, ObjectKey
from agnostic_saliency_torch import _messages, _model, _weights

if TYPE_CHECKING:
    import torch

__all__ = ["TorchBackend"]

_SUFFIXES = (".pt", ".pth", ".ts", ".pt2")
_REDUCERS = {"max": "amax", "mean": "mean", "sum": "sum"}


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
        return _out_of_memory(error)

    def to_numpy(self, array: Any) -> np.ndarray:
        return _to_numpy(array) if _is_tensor(array) else np.asarray(array)

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        import torch

        module, runner = self._module(model)
        place = _model.inspect(module, options)
        with torch.inference_mode(False), torch.no_grad():
            x = _input(inputs, place)
            outputs = _forward(runner, x.clone(memory_format=_format(place, x.ndim)), options)
        return outputs_to_numpy(outputs, _is_tensor, _to_numpy)

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Operator | None,
                 options: CallOptions, magnitude: Magnitude | None = None) -> Any:
        """The input gradient (see :class:`agnostic_saliency.backend.Backend`); with
        ``magnitude``, its absolute values reduced on the model's device."""
        return self.start_gradient(model, inputs, targets, operator, options, magnitude)()

    def start_gradient(self, model: Any, inputs: np.ndarray, targets: Any,
                       operator: Operator | None, options: CallOptions,
                       magnitude: Magnitude | None = None) -> Callable[[], Any]:
        """Check the model; on a GPU queue the gradient and return the function that
        copies it back, on the CPU return the function that computes it.

        On the CPU nothing runs before the function is called, so the model never
        sees inputs that the frontend has not checked yet.
        """
        module, runner = self._module(model)
        place = _model.inspect(module, options)
        start = partial(_start, runner, place, inputs, targets, operator, options, magnitude)
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


def _start(runner: Any, place: _model.Placement, inputs: np.ndarray, targets: Any,
           operator: Operator | None, options: CallOptions, magnitude: Magnitude | None
           ) -> Callable[[], np.ndarray | None]:
    """Queue the gradient where the model is; return the function that gives it as NumPy
    (``None`` where the score does not depend on the inputs)."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        leaf = _input(inputs, place).requires_grad_(True)
        # The model gets a copy, never the leaf: in-place changes in its forward are
        # then allowed and reach neither the leaf nor the caller's memory.
        x = leaf.clone(memory_format=_format(place, leaf.ndim))
        score, weights = _score(runner, x, targets, operator, options)
        if not score.requires_grad:
            return lambda: None
        try:
            (grad,) = torch.autograd.grad(score, leaf, weights, allow_unused=True)
        except RuntimeError as error:
            if "cudnn RNN backward can only be called in training mode" in str(error):
                raise RuntimeError(_messages.cudnn_rnn_backward()) from error
            raise
    if grad is None:
        return lambda: None
    if magnitude is None:
        return partial(_to_numpy, grad)
    reducer, axis = magnitude
    values = _upcast(grad.abs())  # 16-bit gradients are reduced in float32
    if reducer is not None:
        values = getattr(torch, _REDUCERS[reducer])(values, dim=axis)
    return partial(_to_numpy, values)


def _input(inputs: np.ndarray, place: _model.Placement) -> torch.Tensor:
    """The inputs on the model's device and in its dtype; the caller's memory on the
    CPU where nothing changes (the backend only reads it)."""
    import torch

    if inputs.dtype.kind == "V":  # ml_dtypes' bfloat16: NumPy cannot hand it to torch
        inputs = inputs.astype(np.float32)
    tensor = torch.from_numpy(inputs) if inputs.flags.writeable else torch.tensor(inputs)
    dtype = place.dtype or tensor.dtype  # a model without floating weights: as given
    if tensor.dtype != dtype and tensor.element_size() >= 4 and dtype.itemsize >= 4:
        warn(messages.dtype_cast(str(inputs.dtype), str(dtype).replace("torch.", "")))
    return tensor.to(device=place.device, dtype=dtype)


def _format(place: _model.Placement, ndim: int) -> torch.memory_format:
    """Channels-last for 4-D inputs of a model whose convolution weights are."""
    import torch

    return torch.channels_last if place.channels_last and ndim == 4 else torch.contiguous_format


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _out_of_memory(error: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return isinstance(error, MemoryError) or (
        torch is not None and isinstance(error, torch.OutOfMemoryError))


def _forward(runner: Any, x: torch.Tensor, options: CallOptions) -> Any:
    try:
        outputs = runner(x)
    except Exception as error:
        if _out_of_memory(error):
            raise  # the frontend retries with smaller chunks
        raise ValueError(messages.model_failed(tuple(x.shape), error)) from error
    return options.output_selector(outputs) if options.output_selector else outputs


def _score(runner: Any, x: torch.Tensor, targets: Any, operator: Operator | None,
           options: CallOptions) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What to differentiate, and the ``grad_outputs`` of its vector-Jacobian product:
    the operator's summed scores and ``None``, or the outputs and the target weights
    (one-hot rows for class indices)."""
    import torch

    # Copied to the device before the forward pass (a copy after it would wait for it),
    # and a copy on the CPU too: autograd may hand grad_outputs back as the gradient.
    given = None if targets is None else torch.tensor(np.asarray(targets), device=x.device)
    if operator is not None:
        if given is not None and given.is_floating_point():
            given = given.to(x.dtype)
        scores = operator(runner, x, given)
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(x),):
            raise ValueError(messages.operator_wrong_shape(tuple(np.shape(scores)), len(x)))
        return _upcast(scores).sum(), None
    assert given is not None
    outputs = _forward(runner, x, options)
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
    if outputs.ndim == 0 or outputs.shape[0] != x.shape[0]:
        raise ValueError(messages.output_wrong_shape(tuple(outputs.shape), len(x)))
    outputs, targets = _upcast(outputs), np.asarray(targets)
    if not given.is_floating_point():  # class indices: checked here, before a GPU sees them
        if outputs.ndim != 2 or targets.shape != (len(x),):
            raise ValueError(messages.weights_wrong_shape(targets.shape, tuple(outputs.shape)))
        outside = targets[(targets < 0) | (targets >= outputs.shape[1])]
        if outside.size:
            raise ValueError(messages.targets_out_of_range(int(outside[0]), outputs.shape[1]))
        return outputs, torch.zeros_like(outputs).scatter_(1, given.long()[:, None], 1.0)
    if outputs.shape != given.shape:  # e.g. a model whose number of outputs changed
        raise ValueError(messages.weights_wrong_shape(targets.shape, tuple(outputs.shape)))
    return outputs, given.to(outputs.dtype)


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 if it is 16-bit, else itself."""
    return tensor.float() if tensor.is_floating_point() and tensor.element_size() < 4 else tensor


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a C-contiguous NumPy array (16-bit floats as float32); a CPU tensor's
    memory is shared where it can be."""
    tensor = _upcast(tensor.detach()).resolve_conj().resolve_neg()
    return tensor.contiguous().cpu().numpy()  # made contiguous where it is: on the device
