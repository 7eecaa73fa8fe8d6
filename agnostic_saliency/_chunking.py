"""How many samples go to the model at once: the explicit batch size, the size that
``batch_size="auto"`` learned for a signature within the memory budget, or a first
guess (see :mod:`agnostic_saliency._memory`).

A mixin of :class:`~agnostic_saliency.explainer.GradientExplainer`: it reads the
explainer's model, backend, batch size, memory budget and chunk-size cache. Methods
that send several points per sample (noisy copies, path points) override
:meth:`ChunkSizes._points_per_sample`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from agnostic_saliency._memory import (
    AUTO,
    MemoryProbe,
    default_budget,
    first_chunk,
    learned_chunk,
)

if TYPE_CHECKING:
    from agnostic_saliency._memory import BatchSize
    from agnostic_saliency.backend import BackendBase
    from agnostic_saliency.cache import BoundedCache
    from agnostic_saliency.explainer import Layout

__all__ = ["ChunkSizes"]

#: A first chunk of fewer points than this (and than the first guess) teaches nothing.
_SMALLEST_MEASURED = 16


class ChunkSizes:
    """Points per model call and samples per chunk of an explainer."""

    model: Any
    backend: BackendBase
    batch_size: BatchSize
    memory_budget: int | None
    _chunk_sizes: BoundedCache[int]

    def _points_per_sample(self) -> int:
        """Model inputs per sample (noisy copies, path points)."""
        return 1

    def _samples_per_chunk(self, model_batch: int) -> int:
        """Samples per chunk when the model takes ``model_batch`` points per call."""
        return max(1, model_batch // self._points_per_sample())

    def _everything_at_once(self, n_points: int) -> int:
        """Points per call for ``batch_size=None``."""
        return max(n_points, 1)

    def _model_batch(self, layout: Layout, n_points: int) -> int:
        """Points per model call: the explicit batch size, the learned one, or a first guess."""
        if isinstance(self.batch_size, int):
            return self.batch_size
        if self.batch_size is None:
            return self._everything_at_once(n_points)
        learned = self._chunk_sizes.get(layout)
        if learned is not None:
            return learned
        return first_chunk(n_points, layout.sample_bytes, self._budget())

    def _probe(self, layout: Layout) -> MemoryProbe | None:
        """A probe of the first chunk's memory, where ``batch_size="auto"`` has yet to learn."""
        if self.batch_size != AUTO or self._chunk_sizes.get(layout) is not None:
            return None
        return MemoryProbe(partial(self.backend.device_memory, self.model))

    def _learn_chunk(self, layout: Layout, probe: MemoryProbe, measured: int, guess: int) -> int:
        """The chunk size after a first chunk of ``measured`` points; it is kept for the
        signature unless that chunk was too small to tell (one-off costs, such as a
        compilation, would dominate it)."""
        assert probe.cost_per_sample is not None
        size = learned_chunk(probe.cost_per_sample, self._budget())
        if measured >= min(guess, _SMALLEST_MEASURED):
            self._chunk_sizes.put(layout, size)
        return size

    def _budget(self) -> int:
        if self.memory_budget is not None:
            return self.memory_budget
        return default_budget(self.backend.device_memory(self.model))
