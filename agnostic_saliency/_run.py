"""The state of one ``explain`` call: its inputs, targets, gradients and dead samples.

:class:`Run` asks the backend for gradients (or for the reduced absolute gradients
of a backend with ``magnitude_maps``), checks each answer, and remembers which
samples ever had a non-zero gradient. The first gradient of a dispatching backend
is where the inputs are checked, while the backend computes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np

from agnostic_saliency._inputs import FEW, check_finite
from agnostic_saliency._outputs import check_gradient
from agnostic_saliency._reduce import Reducer, is_image, reduced_shape
from agnostic_saliency._targets import TargetPlan
from agnostic_saliency.backend import Magnitude

if TYPE_CHECKING:
    from agnostic_saliency.explainer import Dispatch, GradientExplainer, Layout

__all__ = ["Run", "magnitude_for"]

_NO_SAMPLES = np.zeros(0, dtype=np.intp)
_NO_SAMPLES.flags.writeable = False


class Run:
    """State of one ``explain`` call: inputs, targets, and which samples had a gradient."""

    __slots__ = ("_alive", "_all_alive", "dispatch", "everything", "explainer", "layout",
                 "plan", "plan_unchecked", "raw_targets", "state", "x")

    def __init__(self, explainer: GradientExplainer, x: np.ndarray, layout: Layout,
                 plan: TargetPlan | None = None, raw_targets: np.ndarray | None = None) -> None:
        self.explainer = explainer
        self.x = x
        #: The channel axis, map shape and the backend's capabilities for ``x``.
        self.layout = layout
        #: Per-call state of a method (e.g. its noise generators), never shared across calls.
        self.state: dict[str, Any] = {}
        self.plan = plan
        self.raw_targets = raw_targets
        #: The rows of every sample: methods pass this very object for a single chunk.
        self.everything = slice(0, len(x))
        #: Whether every sample had a non-zero gradient in one call on all of them.
        self._all_alive = False
        #: Per sample, whether some gradient of it was non-zero; made on first need.
        self._alive: np.ndarray | None = None
        #: While the inputs are unchecked: the backend's ``dispatch_gradient``.
        self.dispatch: Dispatch | None = None
        #: Whether the range of the plan's class indices is left to :meth:`finish_checks`.
        self.plan_unchecked = False

    def magnitude(self, reducer: Reducer) -> Magnitude | None:
        """What to ask the backend for to get ``reducer`` over ``|gradient|`` directly.

        ``None`` where the backend cannot give it: then :meth:`gradient` returns the
        gradient (or its absolute values) with the channels kept.
        """
        return magnitude_for(self.layout, reducer, self.x.ndim)

    def gradient(self, points: np.ndarray, samples: np.ndarray | slice,
                 absolute: bool = False, magnitude: Magnitude | None = None) -> np.ndarray:
        """Signed gradient at ``points``, each explained with the target of ``samples``.

        ``absolute=True`` returns its absolute values instead (a new array; the check
        of the gradient computes them anyway). A ``magnitude`` from :meth:`magnitude`
        returns what the backend computes for it: the absolute values, channels
        reduced for images when it names a reducer.
        """
        explainer = self.explainer
        targets: Any
        if self.plan is not None:
            ids = None if samples is self.everything else samples  # None: no indexing
            class_indices = self.layout.capabilities.class_index_targets
            targets = self.plan.class_indices_for(ids) if class_indices else None
            if targets is None:
                targets = self.plan.weights_for(ids, points.dtype)
        elif self.raw_targets is None or self.raw_targets.ndim == 0:
            targets = self.raw_targets
        else:
            targets = self.raw_targets[samples]
        extra = {} if magnitude is None else {"magnitude": magnitude}
        if self.dispatch is not None:
            gradient = self._first_gradient(points, targets, extra)
        else:
            gradient = explainer.backend.gradient(explainer.model, points, targets,
                                                  explainer.operator, explainer.options,
                                                  **extra)
        if magnitude is None:
            gradient, nonzero = check_gradient(gradient, points.shape, explainer.backend.name,
                                               samples, absolute)
        else:
            shape = reduced_shape(points.shape, magnitude[1], magnitude[0])
            gradient, nonzero = check_gradient(gradient, shape, explainer.backend.name,
                                               samples, nonnegative=True)
        self._note_alive(samples, nonzero)
        return gradient

    def _first_gradient(self, points: np.ndarray, targets: Any, extra: dict[str, Any]) -> Any:
        """Start the first gradient, check the inputs while it computes, then wait for it.

        Non-finite inputs and class indices out of range raise before any result is
        used, and before an error of the backend (one the bad values may have
        caused), which stays attached.
        """
        explainer, dispatch = self.explainer, self.dispatch
        assert dispatch is not None
        try:
            result = dispatch(explainer.model, points, targets, explainer.operator,
                              explainer.options, **extra)
        finally:
            self.finish_checks()
        return result()

    def finish_checks(self) -> None:
        """The checks left for the wait of the first gradient: the inputs are finite,
        then the class indices are in range."""
        self.dispatch = None
        check_finite(self.x)
        if self.plan_unchecked:
            assert self.plan is not None
            self.plan.check_range()

    def _note_alive(self, samples: np.ndarray | slice, nonzero: np.ndarray | bool) -> None:
        """Record which of ``samples`` had a non-zero gradient."""
        if self._all_alive:
            return
        if nonzero is True and samples is self.everything:
            self._all_alive = True  # the common case: one chunk, no array needed
            return
        if self._alive is None:
            self._alive = np.zeros(len(self.x), dtype=bool)
        if nonzero is True:
            self._alive[samples] = True
        elif isinstance(samples, slice):  # distinct samples
            self._alive[samples] |= nonzero
        else:  # a sample may come back several times (noisy copies, path points)
            np.logical_or.at(self._alive, samples, nonzero)

    def dead_samples(self) -> np.ndarray:
        """Indices of the samples whose every gradient was identically zero."""
        alive = self._alive
        if self._all_alive or len(self.x) == 0:
            return _NO_SAMPLES
        if alive is None:
            return np.arange(len(self.x))
        if (False not in alive.tolist()) if len(alive) <= FEW else alive.all():
            return _NO_SAMPLES
        return np.flatnonzero(~alive)


def magnitude_for(layout: Layout, reducer: Reducer, ndim: int) -> Magnitude | None:
    """What to ask the backend of ``layout`` for to get ``reducer`` over ``|gradient|``
    of inputs of rank ``ndim`` directly; ``None`` where it cannot give it."""
    reducers = layout.capabilities.magnitude_reducers
    if not reducers:
        return None
    wanted = reducer if is_image(ndim) else None  # only images are reduced
    if wanted not in reducers:
        return None
    return cast(Magnitude, (wanted, layout.channel_axis))
