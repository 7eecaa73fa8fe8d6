"""How an explainer takes several inputs, side inputs and layers apart, and puts the
maps back together (see :mod:`agnostic_saliency._structure`).

A mixin of :class:`~agnostic_saliency.explainer.GradientExplainer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._inputs import check_finite, resolve_channel_axis
from agnostic_saliency._reduce import Reducer, reduce_channels
from agnostic_saliency._structure import Structure, split_structure

if TYPE_CHECKING:
    from agnostic_saliency._memory import BatchSize
    from agnostic_saliency.backend import BackendBase, CallOptions

__all__ = ["SeveralInputs"]

#: Samples per forward pass that reads a layer's output, without an explicit batch size.
_LAYER_CHUNK = 32


class SeveralInputs:
    """Several inputs, side inputs and layer outputs of an explainer."""

    model: Any
    backend: BackendBase
    options: CallOptions
    batch_size: BatchSize
    reducer: Reducer
    channel_axis: int | None
    attribute: Any
    model_kwargs: dict[str, Any]
    layer: Any

    def _structure(self, inputs: Any) -> Structure | None:
        """``inputs`` taken apart (several inputs, or a layer), or ``None``."""
        structure = split_structure(inputs, self.backend.to_numpy, self.attribute,
                                    self.model_kwargs, self.layer)
        if structure is not None and structure.layer is not None \
                and not self.backend.layer_outputs:  # named first: layer= is what was asked
            raise TypeError(messages.structured_not_supported(self.backend.name,
                                                              "layer outputs (layer=)"))
        if structure is not None and not self.backend.structured_inputs:
            raise TypeError(messages.structured_not_supported(
                self.backend.name, "several inputs, side inputs or model_kwargs"))
        return structure

    def _x_of(self, structure: Structure) -> np.ndarray:
        """What the methods explain: the layer's output, or the attributed entries side
        by side; checked to be floating and finite."""
        if structure.layer is None:
            x = structure.flat()
        else:
            size = self.batch_size if isinstance(self.batch_size, int) else _LAYER_CHUNK
            parts = [self.backend.layer_output(self.model, structure.rows(
                slice(start, start + size), structure.layer), self.options)
                for start in range(0, structure.n, size)]
            x = np.ascontiguousarray(np.concatenate(parts))
        if x.dtype.kind != "f" or x.ndim < 2:
            raise TypeError(messages.inputs_not_floating(x.dtype))
        check_finite(x)
        return x

    def _entry_maps(self, maps: np.ndarray, structure: Structure) -> Any:
        """The flat maps cut into the attributed entries, each reduced by its rank."""
        entries = {}
        for key, entry in structure.cut(maps).items():
            reduces = self.reducer is not None and (
                entry.ndim == 4 or (self.channel_axis is not None and entry.ndim >= 3))
            if reduces:
                axis = resolve_channel_axis(self.channel_axis, self.backend.channel_axis,
                                            entry.shape)
                entry = reduce_channels(entry, axis, self.reducer)
            entries[key] = np.ascontiguousarray(entry)
        return structure.rebuilt(entries)
