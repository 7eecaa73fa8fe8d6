"""Targets and model outputs of an explain call: the class each sample explains,
the model's output spec (from ``backend.output_shape`` where the backend knows it
without a forward pass, else from one), and forward passes in chunks.

A mixin of :class:`~agnostic_saliency.explainer.GradientExplainer`: it reads the
explainer's model, backend, options, batch size and output-spec cache.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._outputs import output_spec
from agnostic_saliency._run import pad_rows
from agnostic_saliency._structure import Structure
from agnostic_saliency._targets import OutputSpec, TargetPlan, plan_targets
from agnostic_saliency.backend import STRICT, user_stacklevel

if TYPE_CHECKING:
    from agnostic_saliency._memory import BatchSize
    from agnostic_saliency.backend import BackendBase, CallOptions
    from agnostic_saliency.cache import BoundedCache

__all__ = ["TargetsAndOutputs"]


class TargetsAndOutputs:
    """Targets, output specs and forward passes of an explainer."""

    model: Any
    backend: BackendBase
    options: CallOptions
    batch_size: BatchSize
    static_batch: bool
    _specs: BoundedCache[OutputSpec]

    def _targets_array(self, targets: Any) -> Any:
        if targets is None or isinstance(targets, (int, np.integer, np.ndarray, list, tuple)):
            return targets
        return self.backend.to_numpy(targets)

    def _operator_targets(self, x: np.ndarray, targets: Any) -> np.ndarray | None:
        """Targets passed raw to the operator: ``None``, one value, or one row per sample."""
        if targets is None:
            return None
        array = np.asarray(self._targets_array(targets))
        if array.ndim > 0 and len(array) != len(x):
            raise ValueError(messages.targets_wrong_length(len(array), len(x)))
        return array

    def _plan(self, x: np.ndarray, targets: Any, model_batch: int,
              structure: Structure | None = None, check_range: bool = True) -> TargetPlan:
        """Resolve targets for the whole input (one forward pass if they are predicted).

        ``check_range=False`` leaves the range of given class indices unchecked.
        """
        if len(x) == 0:
            return TargetPlan(OutputSpec((1,)), indices=np.zeros(0, dtype=np.int64))
        if targets is None:
            outputs = self._predict(x, model_batch, structure)
            spec = OutputSpec(outputs.shape[1:])
            self._specs.put(_spec_key(x), spec)
            if spec.single:
                return TargetPlan(spec, indices=np.zeros(len(x), dtype=np.int64))
            return TargetPlan(spec, indices=np.argmax(outputs, axis=1).astype(np.int64))
        known = self._specs.get(_spec_key(x))
        if known is None:  # learned from the first chunk the user asked for
            first = slice(0, min(model_batch, len(x)))
            chunk = self._model_inputs(x, first, structure)
            known = self._spec_without_running(chunk, first.stop)
            if known is None:
                known = output_spec(self._predict_chunk(chunk, first.stop, model_batch),
                                    first.stop)
            self._specs.put(_spec_key(x), known)
        return plan_targets(self._targets_array(targets), len(x), known, check_range)

    def _spec_without_running(self, chunk: Any, n: int) -> OutputSpec | None:
        """The output spec of ``chunk`` (``n`` samples) as the backend knows it without a
        forward pass (a JAX trace, no compilation), or ``None``: the caller then runs
        the model, whose own call reports a wrong output (so messages stay the same).

        Without outputs there are no values to find probabilities in, so with
        ``strict=True`` (every check that can spoil a map) the model runs instead.
        """
        if STRICT.get():
            return None
        shape = self.backend.output_shape(self.model, chunk, self.options)
        if shape is None or len(shape) not in (1, 2) or shape[0] != n:
            return None
        return OutputSpec(tuple(int(size) for size in shape[1:]))

    def _predict(self, x: np.ndarray, model_batch: int, structure: Structure | None = None
                 ) -> np.ndarray:
        """The model's outputs for ``x``, ``model_batch`` samples per call."""
        parts = []
        for start in range(0, len(x), model_batch):
            rows = slice(start, min(start + model_batch, len(x)))
            outputs = self._predict_chunk(self._model_inputs(x, rows, structure),
                                          rows.stop - rows.start, model_batch)
            output_spec(outputs, rows.stop - rows.start)
            parts.append(outputs)
        return np.concatenate(parts) if parts else np.zeros((0,), dtype=x.dtype)

    @staticmethod
    def _model_inputs(x: np.ndarray, rows: slice, structure: Structure | None) -> Any:
        """What the backend's ``predict`` runs for ``rows`` of ``x``."""
        return x[rows] if structure is None else structure.rows(rows)

    def _predict_chunk(self, chunk: Any, n: int, model_batch: int, warned: bool = False) -> Any:
        """The model's output for ``chunk`` (``n`` samples), in halves after an
        out-of-memory error (array inputs and outputs; warned once per chunk, as
        :meth:`Run._call` does for gradients)."""
        try:
            return self._predict_padded(chunk, n, model_batch)
        except Exception as error:
            if (n < 2 or not isinstance(chunk, np.ndarray)
                    or not self.backend.is_out_of_memory(error)):
                raise
            half = (n + 1) // 2
            if not warned:
                warnings.warn(messages.out_of_memory_backoff(n, half, error),
                              messages.SaliencyWarning, stacklevel=user_stacklevel())
            parts = [self._predict_chunk(chunk[:half], half, model_batch, True),
                     self._predict_chunk(chunk[half:], n - half, model_batch, True)]
            if not all(isinstance(part, np.ndarray) for part in parts):
                raise error from None  # outputs of several arrays are not split
            return np.concatenate(parts)

    def _predict_padded(self, chunk: Any, n: int, model_batch: int) -> Any:
        """The model's output for ``chunk`` (``n`` samples); a short array chunk that the
        model refuses is padded to the explicit batch size (see :meth:`Run._call_once`)."""
        short = (isinstance(self.batch_size, int) and n < model_batch
                 and isinstance(chunk, np.ndarray) and not self.options.allow_training_mode)
        if not short or not self.static_batch:
            try:
                return self.backend.predict(self.model, chunk, self.options)
            except Exception as error:
                if not short or self.backend.is_out_of_memory(error):
                    raise
                try:
                    outputs = self.backend.predict(self.model, pad_rows(chunk, model_batch),
                                                   self.options)
                except Exception:
                    raise error from None
                self.static_batch = True
        else:
            outputs = self.backend.predict(self.model, pad_rows(chunk, model_batch),
                                           self.options)
        return outputs[:n] if isinstance(outputs, np.ndarray) else outputs


def _spec_key(x: np.ndarray) -> Hashable:
    """What the model's output spec depends on: the shape and dtype of a sample."""
    return (x.shape[1:], x.dtype)
