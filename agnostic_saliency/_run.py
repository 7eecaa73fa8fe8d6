"""The state of one ``explain`` call: its inputs, targets, gradients and dead samples.

:class:`Run` asks the backend for gradients (or for the reduced absolute gradients
of a backend with ``magnitude_maps``), checks each answer, and remembers which
samples ever had a non-zero gradient. Every model call goes through
:meth:`Run.gradient`, which also:

- checks the inputs while an asynchronous backend computes the first gradient;
- pads a short last call to an explicit ``batch_size`` where the model refuses it
  unpadded (a model exported with a static batch then explains any number of
  samples), dropping the padded rows;
- halves the samples per call after the framework's out-of-memory error, down to
  one, so the maps are those of a run that never hit the limit.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._inputs import check_finite
from agnostic_saliency._outputs import check_gradient
from agnostic_saliency._reduce import reduced_shape
from agnostic_saliency._structure import Structure
from agnostic_saliency._targets import TargetPlan
from agnostic_saliency.backend import Magnitude, user_stacklevel

if TYPE_CHECKING:
    from agnostic_saliency.explainer import GradientExplainer, Layout

__all__ = ["Run", "pad_rows", "pad_targets", "rows_of"]


class Run:
    """State of one ``explain`` call: inputs, targets, and which samples had a gradient."""

    def __init__(self, explainer: GradientExplainer, x: np.ndarray, layout: Layout,
                 plan: TargetPlan | None = None, raw_targets: np.ndarray | None = None,
                 unchecked: bool = False, structure: Structure | None = None) -> None:
        self.explainer = explainer
        self.x = x
        #: Several inputs, side inputs or a layer (``x`` is then their flat form or the
        #: layer's output), or ``None`` for one array.
        self.structure = structure
        #: The channel axis, map shape and magnitude request for ``x``.
        self.layout = layout
        #: Per-call state of a method (its noise generators, the samples' global ids).
        self.state: dict[str, Any] = {}
        self.plan = plan
        self.raw_targets = raw_targets
        #: The rows of every sample: methods pass this very object for a single chunk.
        self.everything = slice(0, len(x))
        #: Points per model call (samples, or noisy copies and path points).
        self.model_batch = max(len(x), 1)
        #: Pad shorter calls to this many points (an explicit ``batch_size``), or not.
        self.pad_to: int | None = None
        #: Most points per call after an out-of-memory error, else ``None``.
        self.limit: int | None = None
        #: The sizes of the model calls that succeeded, in order of first use.
        self.call_sizes: list[int] = []
        #: Whether ``x`` (and the plan's class indices) still await their check.
        self.unchecked = unchecked
        #: Whether those checks refused them.
        self.checks_failed = False
        self._alive = np.zeros(len(x), dtype=bool)

    def magnitude(self, absolute: bool) -> Magnitude | None:
        """What to ask the backend for to get the reduced ``|gradient|`` directly, or
        ``None`` where it cannot give it (then :meth:`gradient` keeps the channels)."""
        return self.layout.magnitude if absolute else None

    def gradient(self, points: np.ndarray, samples: np.ndarray | slice,
                 absolute: bool = False, magnitude: Magnitude | None = None) -> np.ndarray:
        """Signed gradient at ``points``, each explained with the target of ``samples``.

        ``absolute=True`` returns its absolute values instead (a new array). A
        ``magnitude`` from :meth:`magnitude` returns what the backend computes for it:
        the absolute values, channels reduced when it names a reducer.
        """
        targets = self._targets(samples, points.dtype)
        ids = np.arange(len(self.x))[samples] if isinstance(samples, slice) else samples
        gradient = self._call(points, targets, magnitude, ids)
        backend = self.explainer.backend.name
        named = self.state["sample_ids"][ids] if "sample_ids" in self.state else ids
        if magnitude is None:
            gradient, nonzero = check_gradient(gradient, points.shape, backend, named,
                                               absolute)
        else:
            shape = reduced_shape(points.shape, magnitude[1], magnitude[0])
            gradient, nonzero = check_gradient(gradient, shape, backend, named,
                                               nonnegative=True)
        if nonzero is True:
            self._alive[samples] = True
        elif isinstance(samples, slice):  # distinct samples
            self._alive[samples] |= nonzero
        else:  # a sample may come back several times (noisy copies, path points)
            np.logical_or.at(self._alive, samples, nonzero)
        return gradient

    def _targets(self, samples: np.ndarray | slice, dtype: np.dtype) -> Any:
        """The targets of ``samples`` in the form the backend takes."""
        if self.plan is not None:
            ids = None if samples is self.everything else samples  # None: no indexing
            targets = (self.plan.class_indices_for(ids)
                       if self.explainer.backend.class_index_targets else None)
            return self.plan.weights_for(ids, dtype) if targets is None else targets
        if self.raw_targets is None or self.raw_targets.ndim == 0:
            return self.raw_targets
        return self.raw_targets[samples]

    def _call(self, points: np.ndarray, targets: Any, magnitude: Magnitude | None,
              samples: np.ndarray) -> Any:
        """The backend's answer for ``points`` (standing for ``samples``): in pieces of
        at most :attr:`limit`, and again in halves after an out-of-memory error."""
        limit = self.limit
        if limit is not None and len(points) > limit:
            pieces = [self._call(points[start:start + limit],
                                 rows_of(targets, start, start + limit), magnitude,
                                 samples[start:start + limit])
                      for start in range(0, len(points), limit)]
            return np.concatenate(pieces)
        try:
            return self._call_once(points, targets, magnitude, samples)
        except Exception as error:
            if not self.explainer.backend.is_out_of_memory(error):
                raise
            if len(points) < 2:
                named = self.state["sample_ids"][samples] if "sample_ids" in self.state else samples
                _add_note(error, messages.out_of_memory_one_sample(int(named[0]),
                                                                   tuple(points.shape[1:])))
                raise
            smaller = (len(points) + 1) // 2
            if self.limit is None:  # warn once per call
                warnings.warn(messages.out_of_memory_backoff(len(points), smaller, error),
                              messages.SaliencyWarning, stacklevel=user_stacklevel())
            self.limit = smaller
        return self._call(points, targets, magnitude, samples)

    def _call_once(self, points: np.ndarray, targets: Any, magnitude: Magnitude | None,
                   samples: np.ndarray) -> Any:
        """One model call. A short call (fewer points than an explicit ``batch_size``)
        that fails is tried once more padded to it: a model with a static batch then
        takes it, and the explainer pads its short calls from then on."""
        n, explainer = len(points), self.explainer
        if self.structure is not None:  # never padded: side inputs follow the samples
            inputs = self.structure.model_inputs(points, samples)
            return self.structure.joined(self._start_and_wait(inputs, targets, magnitude))
        short = self.pad_to is not None and self.limit is None and n < self.pad_to
        if short and explainer.static_batch:
            return self._start_and_wait(pad_rows(points, self.pad_to or n),
                                        pad_targets(targets, n, self.pad_to or n), magnitude)[:n]
        try:
            return self._start_and_wait(points, targets, magnitude)
        except Exception as error:
            if not short or self.checks_failed or explainer.backend.is_out_of_memory(error):
                raise
            try:
                result = self._start_and_wait(pad_rows(points, self.pad_to or n),
                                              pad_targets(targets, n, self.pad_to or n),
                                              magnitude)
            except Exception:
                raise error from None
            explainer.static_batch = True
            return result[:n]

    def _start_and_wait(self, points: Any, targets: Any, magnitude: Magnitude | None) -> Any:
        """The backend's answer; the inputs are checked while an asynchronous backend
        computes. Non-finite inputs and class indices out of range raise before any
        result is used, and before an error of the backend (which stays attached)."""
        explainer = self.explainer
        try:
            pending = explainer.backend.start_gradient(
                explainer.model, points, targets, explainer.operator, explainer.options,
                magnitude=magnitude)
        finally:
            self.finish_checks()
        result = pending()
        if len(points) not in self.call_sizes:
            self.call_sizes.append(len(points))
        return result

    def finish_checks(self) -> None:
        """The checks left for the first gradient: the inputs are finite, then the
        class indices are in range."""
        if self.unchecked:
            self.unchecked = False
            self.checks_failed = True
            check_finite(self.x, self.state.get("sample_ids"))
            if self.plan is not None:
                self.plan.check_range()
            self.checks_failed = False

    def dead_samples(self) -> np.ndarray:
        """Indices of the samples whose every gradient was identically zero."""
        return np.flatnonzero(~self._alive)


def _add_note(error: BaseException, note: str) -> None:
    """Add ``note`` to the framework's own ``error`` (Python 3.11 and later), keeping its type."""
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        add_note(note)


def rows_of(values: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of per-row ``values``; anything else (``None``, one value) as is."""
    if isinstance(values, np.ndarray) and values.ndim > 0:
        return values[start:stop]
    return values


def pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` with its last row repeated up to ``size`` rows."""
    return np.concatenate([array, np.repeat(array[-1:], size - len(array), axis=0)])


def pad_targets(targets: Any, n: int, size: int) -> Any:
    """Per-row ``targets`` of ``n`` rows padded like :func:`pad_rows`; others as they are."""
    if isinstance(targets, np.ndarray) and targets.ndim > 0 and len(targets) == n:
        return pad_rows(targets, size)
    return targets
