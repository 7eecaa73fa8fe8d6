"""Reading or replacing the output of one Keras layer inside any Keras model.

Keras 3 has no forward hooks. Every Keras layer, however deep inside a model
(functional, Sequential, subclassed, or a model nested in another such as a
keras_hub backbone inside its task), runs through ``Layer.__call__``, which looks its
``call`` method up on the instance each time. For the duration of one forward pass
the layer's instance gets a ``call`` of its own: a wrapper that runs the original
``call`` and then records the output (reading) or returns given values instead
(replacing). The instance's own ``call`` attribute is put back in a ``finally``, so
the user's model is unchanged afterwards. The same works on Keras' TensorFlow, JAX
and PyTorch backends (on PyTorch a Keras layer is a ``torch.nn.Module`` whose
``forward`` calls ``Layer.__call__``).

A lock per layer keeps two threads from intercepting the same layer at once, and the
wrapper intercepts only calls made by the thread that installed it: another thread
running the same model meanwhile gets the layer's own output.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agnostic_saliency_keras import _messages

__all__ = ["Interception", "LayerRead", "contains", "intercepted"]

_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


class LayerRead(BaseException):
    """Raised once the layer's output is read: it ends the forward pass there. A
    ``BaseException``, so that a model's own ``except Exception`` lets it pass."""


class Interception:
    """What happens to the layer's output on its first call in a forward pass.

    Parameters
    ----------
    layer
        The Keras layer.
    values
        ``None`` to read the output (and end the pass with :class:`LayerRead`), else
        the tensor that replaces it (cast to the output's dtype): a plain tensor, a
        watched one (TensorFlow), a tracer (JAX) or a leaf (PyTorch).
    """

    def __init__(self, layer: Any, values: Any | None) -> None:
        self.layer = layer
        self.described = f"a {type(layer).__name__} {layer.name!r}"
        self.values = values
        self.calls = 0
        self.problem: str | None = None
        #: The layer's output, once read.
        self.output: Any | None = None

    def run(self, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The layer's call: the original one, its output read or replaced on the first
        call; later calls are counted (and refused by :meth:`check`)."""
        import keras

        self.calls += 1
        output = original(*args, **kwargs)
        if self.calls > 1 or self.problem is not None:
            return output
        first = output[0] if isinstance(output, (tuple, list)) and output else output
        if not keras.ops.is_tensor(first):
            self.problem = _messages.layer_output_not_tensor(self.described,
                                                             type(output).__name__)
            return output
        if self.values is None:
            self.output = first
            raise LayerRead
        if not _same_shape(tuple(first.shape), tuple(self.values.shape)):
            self.problem = _messages.layer_values_wrong_shape(
                self.described, tuple(self.values.shape), tuple(first.shape))
            return output
        replacement = keras.ops.cast(self.values, first.dtype)
        if first is output:
            return replacement
        return type(output)([replacement, *output[1:]])

    def check(self, found: bool, model_name: str) -> None:
        """Raise where the layer did not run exactly once in the pass, or its output was
        no tensor of the expected shape; ``found``: whether the layer is one of the
        model's (nested) layers, for the message when it did not run."""
        if self.calls == 0 and not found:
            raise ValueError(_messages.layer_not_in_model(type(self.layer).__name__,
                                                          model_name))
        if self.calls == 0:
            raise ValueError(_messages.layer_not_called(self.described))
        if self.calls > 1:
            raise ValueError(_messages.layer_called_again(self.described, self.calls))
        if self.problem is not None:
            raise ValueError(self.problem)


def contains(model: Any, layer: Any) -> bool:
    """Whether ``layer`` is one of ``model``'s layers, searched through the public
    ``layers`` of nested models (a backbone inside a task model)."""
    seen: set[int] = set()
    pending = [model]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        for child in getattr(item, "layers", None) or ():
            if child is layer:
                return True
            pending.append(child)
    return False


@contextmanager
def intercepted(interception: Interception) -> Iterator[Interception]:
    """``interception`` installed on its layer for the duration of the block."""
    layer = interception.layer
    with _lock_of(layer):
        owner = threading.get_ident()
        original = layer.call
        own = vars(layer).get("call", _NOTHING)  # an instance attribute of the user's

        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != owner:
                return original(*args, **kwargs)
            return interception.run(original, args, kwargs)

        # object.__setattr__: a function is no state for Keras' (or torch's) tracking.
        object.__setattr__(layer, "call", call)
        try:
            yield interception
        finally:
            if own is _NOTHING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)


_NOTHING = object()


def _same_shape(found: tuple[Any, ...], given: tuple[Any, ...]) -> bool:
    """Equal shapes; a size unknown while tracing (``None``) matches any."""
    return len(found) == len(given) and all(
        a is None or b is None or a == b for a, b in zip(found, given, strict=True))


def _lock_of(layer: Any) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(layer)
        if lock is None:
            lock = _LOCKS[layer] = threading.RLock()
        return lock
