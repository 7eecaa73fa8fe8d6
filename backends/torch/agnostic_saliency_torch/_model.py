"""What a call needs to know about a PyTorch model, read from the model on every call.

Nothing is remembered between calls: the modules, their ``training`` flags, the
devices and dtypes of the weights are read again each time, so a model changed
between two calls (a layer replaced, moved or converted) is seen as it is now.
"""

from __future__ import annotations

from functools import cache
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple

from agnostic_saliency.backend import CallOptions, warn
from agnostic_saliency_torch import _messages

if TYPE_CHECKING:
    import torch

__all__ = ["Placement", "inspect"]


class Placement(NamedTuple):
    """The device of the model's weights, the dtype of the first floating one (``None``
    without any), and whether its convolutions hold channels-last weights."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool


def inspect(model: Any, options: CallOptions) -> Placement:
    """Where ``model`` computes; a ``ValueError`` for a module that computes differently
    in training mode (unless allowed), weights on ``meta`` or on several devices."""
    import torch

    devices = set()
    dtype = None
    for tensor in chain(model.parameters(), model.buffers()):
        devices.add(tensor.device)
        if dtype is None and tensor.is_floating_point():
            dtype = tensor.dtype
    if any(device.type == "meta" for device in devices):
        names = [name for name, tensor in chain(model.named_parameters(), model.named_buffers())
                 if tensor.is_meta]
        raise ValueError(_messages.meta_weights(names))
    if len(devices) > 1:
        raise ValueError(_messages.several_devices(sorted(str(device) for device in devices)))
    training, weight = False, None  # the weights' problems first: they hide no other
    for module in model.modules():
        training = training or (module.training and _mode_dependent(module) is not False)
        if weight is None and isinstance(module, torch.nn.Conv2d):
            weight = module.weight
    if training and not options.allow_training_mode:
        check_mode(model)
    device = devices.pop() if devices else torch.device("cpu")
    # Channels-last inputs only for a model whose first convolution holds channels-last
    # weights (and not also plain ones, as a 1x1 kernel does): the user chose that layout.
    channels_last = weight is not None and not weight.is_contiguous() and (
        weight.is_contiguous(memory_format=torch.channels_last))
    return Placement(device, dtype, channels_last)


def check_mode(model: Any) -> None:
    """Refuse modules in training mode that compute differently in it; warn about modules
    of the user's own classes in training mode; a ``nn.Linear`` in it changes nothing."""
    refused, custom = [], []
    for name, module in model.named_modules():
        if module.training:
            kind = _mode_dependent(module)
            label = f"{name or type(model).__name__} ({_class_name(module)})"
            if kind:
                refused.append(label)
            elif kind is None:
                custom.append(label)
    if refused:
        raise ValueError(_messages.training_mode(refused))
    warn(_messages.custom_modules_training(custom))


def _class_name(module: Any) -> str:
    return str(getattr(module, "original_name", "") or type(module).__name__)


def _mode_dependent(module: Any) -> bool | None:
    """Whether ``module`` computes differently in training mode; ``None`` for a class not
    from PyTorch. A TorchScript module stands for the ``torch.nn`` class of its name."""
    import torch

    cls: Any = type(module)
    if isinstance(module, torch.jit.ScriptModule):
        cls = getattr(torch.nn, _class_name(module), None)
        if not isinstance(cls, type):
            return None
    dropout, norms, recurrent = _mode_classes()
    if issubclass(cls, dropout):
        return bool(getattr(module, "p", 1.0) > 0)
    if issubclass(cls, norms):
        return bool(getattr(module, "track_running_stats", True))
    if issubclass(cls, recurrent):
        return bool(getattr(module, "dropout", 1.0) > 0)
    return False if f"{cls.__module__}.".startswith("torch.") else None


@cache
def _mode_classes() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """``torch.nn`` classes whose forward reads the mode: dropout (and RReLU's random
    slopes), norms with running statistics, and modules with a dropout rate."""
    from torch import nn

    dropout = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
               nn.FeatureAlphaDropout, nn.RReLU)
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
             nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d,
             nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
             nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d)
    return dropout, norms, (nn.RNNBase, nn.MultiheadAttention)

