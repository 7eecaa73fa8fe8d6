"""Several inputs (a tuple, list or dict of arrays), side inputs, and layer outputs.

The methods of the gradient family work on one floating array ``x`` of shape
``(N, ...)``. A structured call is brought to that form once, in NumPy:

- the floating entries that are attributed are flattened per sample and put side by
  side, ``(N, D)``, so that noise and integration paths treat them jointly (as
  Captum does with several inputs); the maps are cut back into entries afterwards,
  each reduced by its own rank rule;
- every other entry (token ids, attention masks, segment ids, floating entries left
  out by ``attribute=``) is a side input: sliced with every chunk, repeated across
  noisy copies and path points (by the sample each model input row stands for), and
  passed to the model unchanged;
- with ``layer=``, ``x`` is that layer's output for the inputs, and every entry of
  the inputs is a side input.

A backend gets a :class:`ModelInputs` instead of an array when it declares
``structured_inputs`` (and ``layer_outputs`` for layers).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agnostic_saliency import messages

__all__ = ["ModelInputs", "OutputKey", "Structure", "split_structure"]

Key = Hashable


@dataclass(frozen=True)
class ModelInputs:
    """What a backend runs the model on, for a structured call or a layer.

    Attributes
    ----------
    kind
        ``"tuple"`` or ``"list"`` (positional arguments for PyTorch and JAX; the list
        itself for Keras), ``"dict"`` (keyword arguments; the dict for Keras), or
        ``"array"`` (one positional array: a call with ``layer=`` on one input).
    keys
        The entries' positions or names, in the caller's order.
    values
        Every entry's rows, NumPy, by key: attributed entries at the points asked
        for, side inputs as given.
    attributed
        The keys whose gradients are wanted (empty with a ``layer``).
    model_kwargs
        Constants passed as keyword arguments to every call.
    layer
        The layer (the framework's object) whose output is replaced by
        ``layer_values``, and whose gradient is wanted; ``None`` for the inputs.
    layer_values
        The layer's output to use, ``(n, ...)``, or ``None``.
    """

    kind: str
    keys: tuple[Key, ...]
    values: Mapping[Key, np.ndarray]
    attributed: tuple[Key, ...]
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    layer: Any = None
    layer_values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.values.values())))

    def arguments(self, converted: Mapping[Key, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of a call from ``converted`` entries (tensors
        by key): a tuple or list positionally, a dict as keywords, plus ``model_kwargs``."""
        if self.kind == "dict":
            return (), {**{str(key): converted[key] for key in self.keys}, **self.model_kwargs}
        return tuple(converted[key] for key in self.keys), dict(self.model_kwargs)

    def structure(self, converted: Mapping[Key, Any]) -> Any:
        """``converted`` in the caller's structure: one array, a tuple, a list or a dict."""
        if self.kind == "array":
            return converted[self.keys[0]]
        if self.kind == "dict":
            return {key: converted[key] for key in self.keys}
        items = [converted[key] for key in self.keys]
        return tuple(items) if self.kind == "tuple" else items


class OutputKey:
    """``output="logits"``: picks an entry of a dict output, or an attribute (a Hugging
    Face ``ModelOutput`` has both); picklable, unlike a lambda."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, outputs: Any) -> Any:
        if isinstance(outputs, Mapping) or hasattr(outputs, "keys"):
            try:
                return outputs[self.name]
            except (KeyError, TypeError):
                pass
        if hasattr(outputs, self.name):
            return getattr(outputs, self.name)
        raise TypeError(messages.output_key_missing(self.name, messages.describe_output(outputs)))

    def __repr__(self) -> str:
        return f"output={self.name!r}"


@dataclass
class Structure:
    """The caller's inputs taken apart: which entries are attributed, and the rest."""

    kind: str
    keys: tuple[Key, ...]
    #: Every entry, NumPy, each with the batch axis first.
    values: dict[Key, np.ndarray]
    #: The attributed entries, in order (empty with a layer).
    attributed: tuple[Key, ...]
    model_kwargs: dict[str, Any]
    layer: Any = None

    @property
    def n(self) -> int:
        return len(next(iter(self.values.values())))

    def shapes(self) -> dict[Key, tuple[int, ...]]:
        return {key: self.values[key].shape[1:] for key in self.attributed}

    def flat(self) -> np.ndarray:
        """The attributed entries side by side, ``(N, D)``, in one floating dtype."""
        parts = [self.values[key].reshape(self.n, -1) for key in self.attributed]
        dtype = np.result_type(*parts)
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=dtype)

    def unflatten(self, flat: np.ndarray) -> dict[Key, np.ndarray]:
        """Rows of :meth:`flat`'s form cut back into the attributed entries, each in its
        own dtype (a new, contiguous array)."""
        return {key: np.ascontiguousarray(piece, dtype=self.values[key].dtype)
                for key, piece in self.cut(flat).items()}

    def model_inputs(self, points: np.ndarray, samples: np.ndarray | slice) -> ModelInputs:
        """What the backend runs for ``points`` (rows of ``x``), each standing for the
        sample of ``samples``."""
        side = {key: value[samples] for key, value in self.values.items()
                if key not in self.attributed}
        if self.layer is not None:
            return ModelInputs(self.kind, self.keys, side, (), self.model_kwargs, self.layer,
                               points)
        values = {**side, **self.unflatten(points)}
        return ModelInputs(self.kind, self.keys, values, self.attributed, self.model_kwargs)

    def rows(self, rows: slice, layer: Any = None) -> ModelInputs:
        """The entries' ``rows`` as given: a forward pass of the inputs themselves (with
        ``layer``: to read that layer's output)."""
        values = {key: value[rows] for key, value in self.values.items()}
        return ModelInputs(self.kind, self.keys, values, (), self.model_kwargs, layer)

    def cut(self, flat: np.ndarray) -> dict[Key, np.ndarray]:
        """Maps of :meth:`flat`'s form cut into the attributed entries, their dtype kept."""
        pieces, start = {}, 0
        for key, shape in self.shapes().items():
            size = int(np.prod(shape))
            pieces[key] = flat[:, start:start + size].reshape(len(flat), *shape)
            start += size
        return pieces

    def joined(self, gradients: Any) -> Any:
        """A backend's gradients by attributed key, side by side as :meth:`flat` is;
        anything else (``None``, a malformed answer) as it is, for the checks."""
        if not isinstance(gradients, Mapping):
            return gradients
        parts = []
        for key in self.attributed:
            value = gradients.get(key)
            if value is None or not isinstance(value, np.ndarray):
                return value
            parts.append(value.reshape(len(value), -1))
        return np.concatenate(parts, axis=1)

    def rebuilt(self, maps: dict[Key, Any]) -> Any:
        """``maps`` by key in the caller's structure, ``None`` where not attributed."""
        items = {key: maps.get(key) for key in self.keys}
        if self.kind == "dict":
            return items
        ordered = [items[key] for key in self.keys]
        return tuple(ordered) if self.kind == "tuple" else ordered


def split_structure(inputs: Any, to_numpy: Any, attribute: Sequence[Key] | None,
                    model_kwargs: Mapping[str, Any] | None, layer: Any) -> Structure | None:
    """``inputs`` taken apart when they are a tuple, list or dict, or when a ``layer``
    is explained; ``None`` for one array explained at the inputs.

    Raises
    ------
    TypeError
        For entries that are no arrays, or no floating entry to attribute.
    ValueError
        For entries whose first axes differ, unknown ``attribute`` keys, or a
        ``model_kwargs`` array with one row per sample.
    """
    if isinstance(inputs, Mapping):
        kind, keys = "dict", tuple(inputs)
        items = [inputs[key] for key in keys]
    elif isinstance(inputs, (tuple, list)) and inputs and all(
            hasattr(item, "shape") for item in inputs):
        kind, keys, items = type(inputs).__name__, tuple(range(len(inputs))), list(inputs)
    elif layer is not None:
        kind, keys, items = "array", (0,), [inputs]
    else:
        return None
    values = {key: _entry(key, item, to_numpy) for key, item in zip(keys, items, strict=True)}
    n = _common_batch(values)
    _check_constants(model_kwargs or {}, n)
    if layer is not None:
        return Structure(kind, keys, values, (), dict(model_kwargs or {}), layer)
    floating = [key for key, value in values.items() if value.dtype.kind == "f"]
    chosen = tuple(floating if attribute is None else _chosen(attribute, keys, values))
    if not chosen:
        raise TypeError(messages.nothing_to_attribute(
            {str(key): str(value.dtype) for key, value in values.items()}))
    return Structure(kind, keys, values, chosen, dict(model_kwargs or {}))


def _entry(key: Key, item: Any, to_numpy: Any) -> np.ndarray:
    array = item if isinstance(item, np.ndarray) else to_numpy(item)
    if not isinstance(array, np.ndarray) or array.ndim < 1:
        raise TypeError(messages.entry_not_array(key, type(item).__name__))
    return np.ascontiguousarray(array)


def _common_batch(values: dict[Key, np.ndarray]) -> int:
    lengths = {key: len(value) for key, value in values.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(messages.entries_batch_mismatch(
            {str(key): value.shape for key, value in values.items()}))
    return next(iter(lengths.values()))


def _chosen(attribute: Sequence[Key], keys: tuple[Key, ...],
            values: dict[Key, np.ndarray]) -> list[Key]:
    chosen = []
    for key in ([attribute] if isinstance(attribute, (str, int)) else list(attribute)):
        if key not in keys:
            raise ValueError(messages.unknown_attribute(key, list(keys)))
        if values[key].dtype.kind != "f":
            raise TypeError(messages.inputs_not_floating(values[key].dtype))
        chosen.append(key)
    return chosen


def _check_constants(model_kwargs: Mapping[str, Any], n: int) -> None:
    for name, value in model_kwargs.items():
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) > 0 and shape[0] == n and n > 1:
            raise ValueError(messages.per_sample_model_kwarg(name, tuple(shape)))
