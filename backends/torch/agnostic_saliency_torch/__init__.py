"""PyTorch backend for agnostic-saliency.

Gradients are taken with ``torch.autograd.grad`` with respect to a fresh leaf made
from the inputs, so no parameter gradient is accumulated, ``.grad`` fields and
``requires_grad`` flags are left alone, and the caller's grad mode (``no_grad``,
``inference_mode``) does not matter. The computation runs in the dtype and on
the device of the model's parameters.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency.backend import CallOptions, Magnitude, Operator, warn
from agnostic_saliency_torch import (
    _autograd,
    _compiled,
    _host,
    _loading,
    _model_info,
    _ownership,
    _precision,
    _weights,
)

if TYPE_CHECKING:
    import torch

__all__ = ["TorchBackend"]


class TorchBackend:
    """Backend for ``torch.nn.Module`` models (TorchScript modules included).

    Parameters
    ----------
    compile
        Run gradients through ``torch.compile(model)``: ``True``, or a mapping of
        keyword arguments for ``torch.compile`` (``{"mode": "max-autotune"}``). The
        user's model is not changed; each model is compiled once (up to 8 are kept).
        Off by default: on the benchmark CPU machine it was slower than eager
        PyTorch in every case (1.2-2.6x) and its first call took up to 24 s.
    """

    name = "torch"
    modules = ("torch",)
    priority = 0
    channel_axis = 1
    layer_weights = staticmethod(_weights.layer_weights)
    with_layer_weights = staticmethod(_weights.with_layer_weights)
    magnitude_maps = (None, "max", "mean", "sum")

    def __init__(self, compile: bool | Mapping[str, Any] = False) -> None:
        if not isinstance(compile, (bool, Mapping)):
            raise TypeError(messages.bad_compile_option(compile))
        self.compile = compile
        options = compile if isinstance(compile, Mapping) else {}
        self._compiled = _compiled.CompiledModels(options) if compile is not False else None

    def __repr__(self) -> str:
        return f"TorchBackend(compile={self.compile!r})"

    def can_handle(self, model: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def full_precision(self) -> AbstractContextManager[None]:
        """Turn off reduced-precision (TF32) float32 math while comparing; restored after."""
        return _precision.full_precision()

    def can_load(self, path: Path) -> bool:
        """Whether ``path`` is a saved-model file this backend loads (no import)."""
        return path.suffix.lower() in _loading.SUFFIXES

    def load_model(self, path: Path) -> Any:
        """Load a TorchScript file or a ``torch.export`` program."""
        return _loading.load_model(path)

    def to_numpy(self, array: Any) -> np.ndarray:
        return _host.to_numpy(array)

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        import torch

        _check_mode(model, options)
        device, dtype = _placement(model, inputs.dtype)
        with torch.inference_mode(False), torch.no_grad():
            # A copy: an in-place op in the forward must not reach the caller's array.
            x = _as_tensor(inputs, device, dtype).clone()
            outputs = _forward(model, x, options)
        return _host.outputs_as_numpy(outputs)

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Operator | None,
                 options: CallOptions, magnitude: Magnitude | None = None) -> np.ndarray | None:
        """The input gradient (see :class:`agnostic_saliency.backend.Backend`); with
        ``magnitude``, its absolute values reduced on the model's device."""
        return self._start(model, inputs, targets, operator, options, magnitude)()

    def dispatch_gradient(self, model: Any, inputs: np.ndarray, targets: Any,
                          operator: Operator | None, options: CallOptions,
                          magnitude: Magnitude | None = None) -> Callable[[], np.ndarray | None]:
        """Start :meth:`gradient`; return the function that waits for it (as NumPy).

        On a GPU, PyTorch queues the forward and backward passes (and the reduction of
        ``magnitude``) and returns at once: the frontend checks the inputs while they
        run, and the copy to the host waits for them. The frontend never dispatches
        a call with ``allow_training_mode``, and a model in eval mode keeps its state
        on a forward pass, whatever the inputs. (One exception: a model that turns
        non-finite inputs into out-of-range indices can trip a CUDA device-side
        assert, which CUDA reports at a later call, after the frontend's error about
        the inputs.) On the CPU nothing runs before the returned function is called:
        the inputs are checked first, as without it.
        """
        return self._start(model, inputs, targets, operator, options, magnitude,
                           wait_on_cpu=True)

    def _start(self, model: Any, inputs: np.ndarray, targets: Any, operator: Operator | None,
               options: CallOptions, magnitude: Magnitude | None, wait_on_cpu: bool = False
               ) -> Callable[[], np.ndarray | None]:
        """Queue the gradient on the model's device (on the CPU: compute it, unless
        ``wait_on_cpu``); return the function that gives it as NumPy."""
        info = _model_info.info(model)
        _check_mode(model, options, info)
        device, dtype = _placement(model, inputs.dtype, info)
        feed = partial(_input_tensor, inputs, device, dtype)
        if wait_on_cpu and device.type == "cpu":
            return lambda: self._queue(model, feed, info, targets, operator, options, magnitude)()
        return self._queue(model, feed, info, targets, operator, options, magnitude)

    def _queue(self, model: Any, feed: Callable[[], tuple[torch.Tensor, bool]],
               info: _model_info.ModelInfo, targets: Any, operator: Operator | None,
               options: CallOptions, magnitude: Magnitude | None
               ) -> Callable[[], np.ndarray | None]:
        """Queue the gradient of the inputs that ``feed`` makes; return the function
        that gives it as NumPy."""
        tensor, shared = feed()
        runner = model if self._compiled is None else self._compiled.get(model)
        grad = _gradient(runner, model, _Feed(tensor, shared, info), targets, operator, options)
        if grad is None:
            return _host.no_gradient
        if magnitude is None:
            return partial(_host.to_numpy, grad)
        # Only |g| itself is taken in place; a statement of its own (see sole_owner).
        in_place = magnitude[0] is None and _ownership.sole_owner(grad)
        return _host.magnitude_map(grad, magnitude, in_place)


@dataclass
class _Feed:
    """The inputs as a tensor, whether it is the caller's memory, and the model's info."""

    tensor: torch.Tensor
    shared: bool
    info: _model_info.ModelInfo


def _gradient(runner: Any, model: Any, feed: _Feed, targets: Any, operator: Operator | None,
              options: CallOptions) -> torch.Tensor | None:
    """Input gradient; retried once more for each thing a failed try teaches about the model."""
    info = feed.info
    channels_last = info.prefers_channels_last(feed.tensor)
    try:
        return _input_gradient(runner, feed, targets, operator, options, channels_last)
    except (ValueError, RuntimeError) as error:
        if feed.shared and info.changes_inputs is False and _changed_leaf(error):
            info.changes_inputs = True  # autograd refused the change: nothing was written
        elif channels_last and isinstance(error, ValueError):
            # e.g. a forward that calls .view() on activations: retry in the plain layout.
            _model_info.refuse_channels_last(model)
            info.channels_last = False  # also if the forward made the model's info stale
        else:
            raise
    return _gradient(runner, model, feed, targets, operator, options)


def _changed_leaf(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) is autograd refusing an in-place change of a leaf."""
    cause = error.__cause__ if isinstance(error, ValueError) else error
    return isinstance(cause, RuntimeError) and "leaf Variable that requires grad" in str(cause)


def _input_gradient(model: Any, feed: _Feed, targets: Any, operator: Operator | None,
                    options: CallOptions, channels_last: bool) -> torch.Tensor | None:
    """Gradient of the score with respect to a fresh leaf holding the inputs."""
    import torch

    if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
        return _leaf_gradient(model, feed, targets, operator, options, channels_last)
    with torch.inference_mode(False), torch.enable_grad():
        if feed.tensor.is_inference():  # made under the caller's inference_mode: cannot be a leaf
            feed = _Feed(feed.tensor.clone(), False, feed.info)
        return _leaf_gradient(model, feed, targets, operator, options, channels_last)


def _leaf_gradient(model: Any, feed: _Feed, targets: Any, operator: Operator | None,
                   options: CallOptions, channels_last: bool) -> torch.Tensor | None:
    import torch

    leaf = feed.tensor.requires_grad_(True)  # made for this call: a leaf of its own
    # In-place ops in the forward are allowed and never reach the caller's array: the
    # model gets a copy (for convolutional models the channels-last one) until a call
    # has shown that it leaves its input alone. Then it gets the leaf, which autograd
    # keeps from being changed in place.
    x = leaf.contiguous(memory_format=torch.channels_last) if channels_last else leaf
    if x is leaf and feed.shared and feed.info.changes_inputs is not False:
        x = leaf.clone()
    score, weights = _score(model, x, targets, operator, options)
    _note_changes(feed, x, leaf)
    if not score.requires_grad:  # nothing in the graph depends on the input
        return None
    try:
        return _autograd.input_gradient(score, leaf, weights)
    except RuntimeError as error:
        if "cudnn RNN backward can only be called in training mode" in str(error):
            raise RuntimeError(messages.cudnn_rnn_backward()) from error
        raise


def _note_changes(feed: _Feed, x: torch.Tensor, leaf: torch.Tensor) -> None:
    """Learn from the forward whether the model changes its input in place.

    A tensor's version counts in-place changes, those made under ``torch.no_grad``
    included. A change of the caller's memory outside autograd is reported.
    """
    info = feed.info
    if x is not leaf:
        if info.changes_inputs is None:
            info.changes_inputs = x._version > 0
    elif leaf._version and feed.shared:
        info.changes_inputs = True
        warn(messages.inputs_changed_in_place())


def _check_mode(model: Any, options: CallOptions, info: _model_info.ModelInfo | None = None
                ) -> None:
    if options.allow_training_mode:
        return
    info = info or _model_info.info(model)
    if not info.any_training(model):
        return
    modules = info.modules
    training = [name or type(model).__name__ for name, module in modules if module.training]
    raise ValueError(messages.training_mode(training))


def _placement(model: Any, input_dtype: np.dtype, info: _model_info.ModelInfo | None = None
               ) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's parameters and buffers."""
    import torch

    tensors = (info or _model_info.info(model)).tensors
    devices = {tensor.device for tensor in tensors}
    if len(devices) > 1:
        raise ValueError(messages.several_devices(sorted(str(device) for device in devices)))
    device = devices.pop() if devices else torch.device("cpu")
    for tensor in tensors:
        if tensor.is_floating_point():
            return device, tensor.dtype
    return device, _torch_dtype(input_dtype)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    import torch

    if dtype.name == "bfloat16":
        return torch.bfloat16
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def _as_tensor(inputs: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The inputs on the model's device and in its dtype (see :func:`_input_tensor`)."""
    return _input_tensor(inputs, device, dtype)[0]


def _input_tensor(inputs: np.ndarray, device: torch.device, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, bool]:
    """The inputs on the model's device and in its dtype, and whether the tensor
    shares the caller's memory (it does where possible).

    Warns when the model's dtype differs from the inputs' (16-bit inputs are
    silently computed in the model's precision).
    """
    import torch

    bfloat16 = inputs.dtype.kind == "V" and inputs.dtype.name == "bfloat16"
    shared = not bfloat16 and inputs.flags.writeable
    if not shared:
        inputs = inputs.astype(np.float32 if bfloat16 else inputs.dtype)
    tensor = torch.from_numpy(inputs)
    if tensor.dtype == dtype and device.type == "cpu":
        return tensor, shared
    if tensor.dtype != dtype and inputs.dtype.itemsize >= 4 and dtype.itemsize >= 4:
        warn(messages.dtype_cast(str(inputs.dtype), str(dtype).replace("torch.", "")))
    return tensor.to(device=device, dtype=dtype), False


def _forward(model: Any, x: torch.Tensor, options: CallOptions) -> Any:
    try:
        outputs = model(x)
    except Exception as error:
        raise ValueError(messages.model_failed(tuple(x.shape), error)) from error
    return options.output_selector(outputs) if options.output_selector else outputs


def _score(model: Any, x: torch.Tensor, targets: Any, operator: Operator | None,
           options: CallOptions) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What to differentiate, and the weights of its vector-Jacobian product.

    With an operator: the sum over the batch of its per-sample scores (in at least
    float32) and ``None``. Else the model's outputs and the target weights: the
    backward pass starts from the one-hot weights themselves, so neither the
    product ``outputs * weights``, nor its sum, nor their backward nodes run
    (measured 27 µs less per call than that product for the benchmark MLP at
    batch 1, which was itself 30 µs faster than a gather of the class indices).
    """
    import torch

    if operator is not None:
        scores = operator(model, x, None if targets is None else _target_tensor(targets, x))
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(x),):
            raise ValueError(messages.operator_wrong_shape(tuple(np.shape(scores)), len(x)))
        return _host.upcast(scores).sum(), None
    weights = torch.from_numpy(np.asarray(targets))
    if not x.is_cpu:  # before the forward: a copy from the host waits for the device
        weights = weights.to(device=x.device)
    outputs = _forward(model, x, options)
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
    if outputs.ndim == 0 or outputs.shape[0] != x.shape[0]:
        raise ValueError(messages.output_wrong_shape(tuple(outputs.shape), len(x)))
    if outputs.shape != weights.shape:  # e.g. a model whose number of outputs changed
        raise ValueError(messages.weights_wrong_shape(tuple(weights.shape),
                                                      tuple(outputs.shape)))
    outputs = _host.upcast(outputs)
    if weights.dtype != outputs.dtype or weights.device != outputs.device:
        weights = weights.to(device=outputs.device, dtype=outputs.dtype)
    return outputs, weights


def _target_tensor(targets: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(targets)).to(x.device)
    return tensor.to(x.dtype) if tensor.is_floating_point() else tensor
