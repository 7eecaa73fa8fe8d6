"""Several inputs, side inputs and layer outputs for the PyTorch backend.

A :class:`~agnostic_saliency._structure.ModelInputs` is called as the user calls the
model: a tuple or list positionally, a dict as keyword arguments, ``model_kwargs``
as keyword constants. Attributed entries become leaves of the backend's own (the
model gets copies of them, as with one array); side inputs (token ids, attention
masks) are copied to the model's device in their own dtype, floating ones in the
model's dtype, and are never differentiated.

A layer (``layer=``, a ``torch.nn.Module`` inside the model) is read and replaced
through a forward hook registered on that module alone for the duration of one
forward pass, and removed afterwards. Reading stops the forward pass at the layer
(the hook raises :class:`_LayerRead`): the rest of the model has nothing to add. Its
output is a tensor, or a tuple or list whose first item is the tensor meant (as many
recurrent and attention modules return); the other items are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.backend import CallOptions, Magnitude
from agnostic_saliency_torch import _messages, _model
from agnostic_saliency_torch._tensors import (
    differentiate,
    finish,
    format_of,
    model_input,
    out_of_memory,
    targets_tensor,
    to_numpy,
    weighted,
)

if TYPE_CHECKING:
    import torch

__all__ = ["forward", "layer_output", "start_gradient"]


def forward(runner: Any, place: _model.Placement, inputs: ModelInputs, options: CallOptions
            ) -> Any:
    """The model's (selected) output for ``inputs``, their layer's output replaced by
    ``inputs.layer_values`` where it has a layer."""
    converted = _converted(inputs, place, inputs.keys)
    if inputs.layer is None:
        return _call(runner, inputs, converted, options)
    values = np.asarray(inputs.layer_values)
    with _hooked(runner, inputs.layer, values, grad=False) as hook:
        outputs = _call(runner, inputs, converted, options)
    hook.check()
    return outputs


def layer_output(runner: Any, place: _model.Placement, inputs: ModelInputs,
                 options: CallOptions) -> np.ndarray:
    """The output of ``inputs.layer`` when the model runs on ``inputs``, as NumPy (the
    first tensor of a layer that returns a tuple or list)."""
    import torch

    with torch.inference_mode(False), torch.no_grad():
        converted = _converted(inputs, place, inputs.keys)
        with _hooked(runner, inputs.layer, None, grad=False) as hook:
            try:
                _call(runner, inputs, converted, options)
            except _LayerRead:
                pass
    hook.check()
    assert hook.output is not None
    return to_numpy(hook.output)


def start_gradient(runner: Any, place: _model.Placement, inputs: ModelInputs, targets: Any,
                   options: CallOptions, magnitude: Magnitude | None
                   ) -> Callable[[], Any]:
    """Queue the gradient of the weighted outputs with respect to the attributed entries
    (a dict by key) or to the layer's output values (an array of their shape); return
    the function that gives it as NumPy (``None`` where the score depends on none)."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        given = targets_tensor(targets, place.device)
        assert given is not None
        if inputs.layer is None:
            leaves = {key: model_input(inputs.values[key], place).requires_grad_(True)
                      for key in inputs.attributed}
            side = [key for key in inputs.keys if key not in leaves]
            converted = {**_converted(inputs, place, side),
                         **{key: leaf.clone(memory_format=format_of(place, leaf.ndim))
                            for key, leaf in leaves.items()}}
            outputs = _call(runner, inputs, converted, options)
        else:
            converted = _converted(inputs, place, inputs.keys)
            with _hooked(runner, inputs.layer, np.asarray(inputs.layer_values),
                         grad=True) as hook:
                outputs = _call(runner, inputs, converted, options)
            hook.check()
            assert hook.leaf is not None
            leaves = {None: hook.leaf}
        scores, weights = weighted(outputs, given, targets, len(inputs))
        if not scores.requires_grad:
            return lambda: None
        grads = differentiate(scores, list(leaves.values()), weights)
    if inputs.layer is not None:
        return lambda: None if grads[0] is None else to_numpy(finish(grads[0], magnitude))
    if magnitude is not None:
        raise TypeError(_messages.magnitude_with_entries())
    if all(grad is None for grad in grads):
        return lambda: None
    # An entry the score does not depend on has a zero gradient (the others do depend).
    found = {key: torch.zeros_like(leaf) if grad is None else grad
             for (key, leaf), grad in zip(leaves.items(), grads, strict=True)}
    return partial(_all_to_numpy, found)


def _all_to_numpy(tensors: dict[Any, torch.Tensor]) -> dict[Any, np.ndarray]:
    return {key: to_numpy(tensor) for key, tensor in tensors.items()}


def _converted(inputs: ModelInputs, place: _model.Placement, keys: Any
               ) -> dict[Any, torch.Tensor]:
    """Copies of the entries ``keys`` on the model's device: floating ones in the
    model's dtype, others (token ids, masks) in their own."""
    import torch

    converted = {}
    for key in keys:
        value = inputs.values[key]
        if value.dtype.kind in "fV":  # "V": ml_dtypes' bfloat16
            converted[key] = model_input(value, place).clone()
        else:
            converted[key] = torch.tensor(value, device=place.device)
    return converted


def _call(runner: Any, inputs: ModelInputs, converted: dict[Any, torch.Tensor],
          options: CallOptions) -> Any:
    """The model called as the user calls it, its output selected."""
    args, kwargs = inputs.arguments(converted)
    try:
        outputs = runner(*args, **kwargs)
    except _LayerRead:
        raise
    except Exception as error:
        if out_of_memory(error):
            raise  # the frontend retries with smaller chunks
        raise ValueError(_messages.structured_model_failed(_describe(inputs), error)) from error
    return options.output_selector(outputs) if options.output_selector else outputs


def _describe(inputs: ModelInputs) -> str:
    """How the model was called: ``model(input_ids=(2, 8) int64, ...)``."""
    entries = [f"{'' if inputs.kind != 'dict' else f'{key}='}"
               f"{tuple(inputs.values[key].shape)} {inputs.values[key].dtype}"
               for key in inputs.keys]
    constants = [f"{name}={value!r}" for name, value in inputs.model_kwargs.items()]
    return f"model({', '.join(entries + constants)})"


class _LayerRead(BaseException):
    """Raised by a reading hook once it has the layer's output: it ends the forward pass
    there. A ``BaseException``, so that a model's own ``except Exception`` lets it pass."""


class _Hook:
    """A forward hook that records (``values is None``) or replaces the output of one
    module, on its first call in a forward pass; later calls are counted and refused
    afterwards by :meth:`check`. It raises inside the model's forward only to end a
    forward pass that read the layer (:class:`_LayerRead`)."""

    def __init__(self, layer: Any, values: np.ndarray | None, grad: bool) -> None:
        self.layer = layer
        self.values = values
        self.grad = grad
        self.calls = 0
        self.problem: str | None = None
        #: The layer's output (read), or the leaf that replaced it.
        self.output: torch.Tensor | None = None
        self.leaf: torch.Tensor | None = None

    def __call__(self, module: Any, args: Any, output: Any) -> Any:
        import torch

        self.calls += 1
        if self.calls > 1 or self.problem is not None:
            return None
        first = output[0] if isinstance(output, (tuple, list)) and output else output
        if not isinstance(first, torch.Tensor):
            self.problem = _messages.layer_output_not_tensor(type(self.layer).__name__,
                                                             type(output).__name__)
            return None
        if self.values is None:
            self.output = first.detach()
            raise _LayerRead
        if tuple(first.shape) != self.values.shape:
            self.problem = _messages.layer_values_wrong_shape(
                type(self.layer).__name__, self.values.shape, tuple(first.shape))
            return None
        leaf = torch.tensor(self.values).to(device=first.device, dtype=first.dtype)
        self.leaf = leaf.requires_grad_(True) if self.grad else leaf
        # The model gets a copy: an in-place change of the layer's output leaves the leaf.
        replacement = self.leaf.clone()
        if first is output:
            return replacement
        return type(output)([replacement, *output[1:]])

    def check(self) -> None:
        """Raise where the layer did not run exactly once, or its output was no tensor
        of the expected shape."""
        name = type(self.layer).__name__
        if self.calls == 0:
            raise ValueError(_messages.layer_not_called(name))
        if self.calls > 1:
            raise ValueError(_messages.layer_called_again(name, self.calls))
        if self.problem is not None:
            raise ValueError(self.problem)


@contextmanager
def _hooked(model: Any, layer: Any, values: np.ndarray | None, grad: bool) -> Iterator[_Hook]:
    """A :class:`_Hook` on ``layer`` (a module of ``model``) for the duration of the block."""
    import torch

    if not isinstance(layer, torch.nn.Module):
        raise TypeError(_messages.layer_not_module(type(layer).__name__))
    if not any(module is layer for module in model.modules()):
        raise ValueError(_messages.layer_not_in_model(type(layer).__name__,
                                                      type(model).__name__))
    hook = _Hook(layer, values, grad)
    handle = layer.register_forward_hook(hook)
    try:
        yield hook
    finally:
        handle.remove()
