"""The framework-free engine shared by every gradient-based explainer.

An explainer validates the inputs and targets once in NumPy, then walks the
batch in chunks; for each chunk the method (``_attribute``) asks the backend for
input gradients (through :class:`agnostic_saliency._run.Run`) and turns them into
attributions, which are reduced over the channel axis (unless a backend with
``magnitude_maps`` returned them reduced) and written into one output array.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, NamedTuple, TypeVar

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._inputs import as_input_array, check_finite, resolve_channel_axis
from agnostic_saliency._outputs import output_spec
from agnostic_saliency._reduce import Reducer, check_reducer, is_image, reduce_channels
from agnostic_saliency._run import Run
from agnostic_saliency._targets import OutputSpec, TargetPlan, plan_targets
from agnostic_saliency.backend import (
    STRICT,
    Backend,
    BackendBase,
    CallOptions,
    Operator,
    OutputSelector,
    as_backend_base,
    warn,
)
from agnostic_saliency.registry import resolve_backend

__all__ = ["GradientExplainer"]

#: Most output specs and layouts kept per explainer (one per input signature).
_MAX_CACHED = 64

T = TypeVar("T")


#: What starts a gradient and returns the function that waits for it.
Dispatch = Callable[..., Callable[[], Any]]


class Capabilities(NamedTuple):
    """What the frontend uses of a backend beyond its required members."""

    #: Its ``start_gradient`` where it is asynchronous, else ``None``.
    dispatch: Dispatch | None
    magnitude_reducers: tuple[str | None, ...]
    class_index_targets: bool


def capabilities(backend: BackendBase) -> Capabilities:
    return Capabilities(backend.start_gradient if backend.asynchronous else None,
                        tuple(backend.magnitude_maps), bool(backend.class_index_targets))


class Layout(NamedTuple):
    """What an input signature (shape and dtype) fixes for an explainer and its
    backend, worked out on the first call that has it."""

    #: The backend it was made for (an explainer's backend may be replaced).
    backend: Backend
    #: The backend's optional members that the frontend uses.
    capabilities: Capabilities
    #: Non-negative channel axis of image inputs; the last axis otherwise.
    channel_axis: int
    map_shape: tuple[int, ...]
    map_dtype: np.dtype
    #: Whether maps have a channel axis to reduce.
    reduces: bool


class GradientExplainer:
    """Base class of the explainers: validation, batching, reduction, assembly.

    Parameters
    ----------
    model
        A model of any framework with an installed backend, or a function together
        with ``backend=``.
    backend
        A registered backend name (``"torch"``, ``"jax"``, ...) or a backend object;
        always wins over detection.
    batch_size
        Largest number of inputs sent to the model at once; ``None`` sends all.
        Results do not depend on it.
    operator
        ``operator(model, inputs, targets) -> scores (N,)`` in the model's framework;
        ``None`` explains the output selected by ``targets``.
    channel_axis
        Channel axis of image (rank-4) inputs; ``None`` takes the framework's
        convention (1 for PyTorch, -1 otherwise).
    reducer
        Reduction over the channel axis of image maps: ``"max"``, ``"mean"``,
        ``"min"``, ``"sum"``, or ``None`` to keep the channels.
    output_selector
        Picks one tensor out of a model output that is a tuple, dict or object.
    allow_training_mode
        Explain a model in training mode instead of refusing it.
    strict
        Raise ``RuntimeError`` instead of warning about what may spoil a map: a
        sample whose attribution is identically zero, outputs that look like
        probabilities, inputs cast to a lower precision.
    """

    def __init__(
        self,
        model: Any,
        *,
        backend: str | Backend | None = None,
        batch_size: int | None = None,
        operator: Operator | None = None,
        channel_axis: int | None = None,
        reducer: Reducer = "max",
        output_selector: OutputSelector | None = None,
        allow_training_mode: bool = False,
        strict: bool = False,
    ) -> None:
        self.model = model
        self._backend = resolve_backend(model, backend)
        self.batch_size = _check_batch_size(batch_size)
        self.operator = operator
        self.channel_axis = channel_axis
        self.reducer = check_reducer(reducer)
        self.options = CallOptions(output_selector, allow_training_mode)
        self.strict = strict
        self._specs: dict[Hashable, OutputSpec] = {}
        self._layouts: dict[Hashable, Layout] = {}
        self._cache_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={type(self.model).__name__}, "
                f"backend={self.backend.name!r}, reducer={self.reducer!r})")

    def __getstate__(self) -> dict[str, Any]:
        """What pickles and deep copies keep: everything but the caches and their lock,
        which come back empty."""
        state = self.__dict__.copy()
        for prepared in ("_specs", "_layouts", "_cache_lock"):
            state.pop(prepared, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._specs = {}
        self._layouts = {}
        self._cache_lock = threading.Lock()

    @property
    def backend(self) -> BackendBase:
        """The backend that explains the model."""
        return self._backend

    @backend.setter
    def backend(self, backend: Backend) -> None:
        self._backend = as_backend_base(backend)

    # --- public ---------------------------------------------------------------------

    def explain(self, inputs: Any, targets: Any = None) -> np.ndarray:
        """Explain ``inputs`` with respect to ``targets``.

        Parameters
        ----------
        inputs
            A floating batch, NumPy or the model framework's tensor. Image inputs
            are rank 4 with a channel axis (see ``channel_axis``).
        targets
            ``None`` for the predicted class (argmax of the output); an int for one
            class for every sample; integers of shape ``(N,)``; or weights of shape
            ``(N, n_outputs)`` (score = sum of output * weight). With an
            ``operator`` they are passed to it unchanged.

        Returns
        -------
        numpy.ndarray
            A new array: ``(N, H, W)`` for images with a reducer, else the inputs'
            shape. float32 for 16-bit inputs, else the inputs' dtype.
        """
        return self._explain(inputs, targets, 0, None)[0]

    def explain_with_targets(self, inputs: Any, targets: Any = None, *, sample_offset: int = 0,
                             sample_ids: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Like :meth:`explain`, and also return the class index explained per sample.

        The second item is ``None`` for 2-D weight targets and with an operator.
        Seeded noise (SmoothGrad and its kin) is drawn per sample from its global id:
        ``sample_ids`` (one non-negative integer per sample), else ``sample_offset``
        plus its index here. Explained in pieces, sharded or resumed, a data set then
        gets the maps it gets in one call.
        """
        maps, run = self._explain(inputs, targets, sample_offset, sample_ids)
        if run.plan is None:
            return maps, None
        indices = run.plan.indices
        # Integer targets are used as they are given: hand out a copy, not the caller's array.
        if indices is not None and (indices is targets or indices.base is not None):
            indices = indices.copy()
        return maps, indices

    def _explain(self, inputs: Any, targets: Any, sample_offset: int, sample_ids: Any
                 ) -> tuple[np.ndarray, Run]:
        """The maps of ``inputs`` and the run that made them."""
        token = STRICT.set(self.strict)  # warn() raises inside this call when strict
        try:
            # A backend that computes asynchronously gets the inputs unchecked: the
            # first gradient checks them while the backend computes it. Not a model
            # allowed to run in training mode: its forward pass may change its state
            # (batch-norm statistics), so it never sees inputs before they are checked.
            x = as_input_array(inputs, self.backend, check=False)
            layout = self._layout(x)
            dispatch = (None if self.options.allow_training_mode
                        else layout.capabilities.dispatch)
            if dispatch is None:
                check_finite(x)
            ids = _sample_ids(sample_ids, sample_offset, len(x))
            maps, run = self._compute(x, layout, targets, ids, dispatch)
            if run.dispatch is not None:  # no gradient was computed (a method without any)
                run.finish_checks()
            dead = run.dead_samples()
            if dead.size:
                self._report_zero_samples(dead)
        finally:
            STRICT.reset(token)
        return maps, run

    def _compute(self, x: np.ndarray, layout: Layout, targets: Any, sample_ids: np.ndarray,
                 dispatch: Dispatch | None = None) -> tuple[np.ndarray, Run]:
        """The maps of ``x`` (whose layout is ``layout``), and the run that made them
        (targets, dead samples).

        ``dispatch`` (the backend's ``dispatch_gradient``) means that ``x`` is not
        checked yet: the run's first gradient checks it, and the range of class
        indices that the backend takes as they are.
        """
        axis = layout.channel_axis
        if self.operator is None:
            defer = dispatch is not None and layout.capabilities.class_index_targets
            run = Run(self, x, layout, plan=self._plan(x, targets, check_range=not defer))
            run.plan_unchecked = defer
        else:
            run = Run(self, x, layout, raw_targets=self._operator_targets(x, targets))
        run.dispatch = dispatch
        run.state["sample_ids"] = sample_ids
        shape, dtype = layout.map_shape, layout.map_dtype
        size = self._samples_per_chunk(len(x))
        if 0 < len(x) <= size:  # one chunk: keep the method's result when it is fresh
            attributions = self._attribute(run, run.everything)
            if layout.reduces:
                attributions = reduce_channels(attributions, axis, self.reducer)
            maps = fresh_maps(attributions, shape, dtype, x)
        else:  # each chunk is written into the output: memory grows with size, not N
            maps = np.empty(shape, dtype=dtype)
            for rows in _chunks(len(x), size):
                attributions = self._attribute(run, rows)
                if attributions.dtype == dtype:
                    reduce_channels(attributions, axis, self.reducer, out=maps[rows])
                else:
                    maps[rows] = reduce_channels(attributions, axis, self.reducer)
        return maps, run

    # --- for subclasses -------------------------------------------------------------

    def _attribute(self, run: Run, rows: slice) -> np.ndarray:
        """Attributions of the samples ``rows`` of the input, channels kept."""
        raise NotImplementedError

    def _samples_per_chunk(self, n: int) -> int:
        return self.batch_size or max(n, 1)

    # --- internals ------------------------------------------------------------------

    def _layout(self, x: np.ndarray) -> Layout:
        """The layout of inputs like ``x`` (made on the first call that has their shape)."""
        layout = self._known_layout(x)
        if layout is None:
            axis = self._channel_axis(x)
            shape = self._map_shape(x, axis)
            layout = Layout(self.backend, capabilities(self.backend), axis, shape,
                            _output_dtype(x.dtype), reduces=shape != x.shape)
            self._remember(self._layouts, self._layout_key(x), layout)
        return layout

    def _known_layout(self, x: np.ndarray) -> Layout | None:
        """The layout of inputs like ``x`` for the current backend, if made already."""
        layout = self._layouts.get(self._layout_key(x))  # reading a dict needs no lock
        return layout if layout is not None and layout.backend is self.backend else None

    def _layout_key(self, x: np.ndarray) -> Hashable:
        return (x.shape, x.dtype, self.reducer, self.channel_axis)

    def _remember(self, cache: dict[Hashable, T], key: Hashable, value: T) -> None:
        """Store ``value``, dropping the oldest entry of a full ``cache``."""
        with self._cache_lock:
            if len(cache) >= _MAX_CACHED:
                cache.pop(next(iter(cache)), None)
            cache[key] = value

    def _channel_axis(self, x: np.ndarray) -> int:
        if not is_image(x.ndim):
            return x.ndim - 1
        default = self.backend.channel_axis
        if self.channel_axis is None:  # the model's own layout (a Keras data_format) first
            declared = self.backend.model_channel_axis(self.model, x.ndim)
            default = default if declared is None else declared
        return resolve_channel_axis(self.channel_axis, default, x.shape)

    def _map_shape(self, x: np.ndarray, axis: int) -> tuple[int, ...]:
        if self.reducer is None or not is_image(x.ndim):
            return x.shape
        return x.shape[:axis] + x.shape[axis + 1:]

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

    def _plan(self, x: np.ndarray, targets: Any, check_range: bool = True) -> TargetPlan:
        """Resolve targets for the whole input (one forward pass if they are predicted).

        ``check_range=False`` leaves the range of given class indices unchecked.
        """
        if len(x) == 0:
            return TargetPlan(OutputSpec((1,)), indices=np.zeros(0, dtype=np.int64))
        if targets is None:
            outputs = self._predict_array(x)
            spec = OutputSpec(outputs.shape[1:])
            if spec.single:
                return TargetPlan(spec, indices=np.zeros(len(x), dtype=np.int64))
            return TargetPlan(spec, indices=np.argmax(outputs, axis=1).astype(np.int64))
        if not isinstance(targets, np.ndarray):
            targets = self._targets_array(targets)
        return plan_targets(targets, len(x), self._output_spec(x), check_range)

    def _output_spec(self, x: np.ndarray) -> OutputSpec:
        spec = self._known_spec(x)
        if spec is None:
            # Two samples, so that a model that reduces over the batch is caught.
            probe = x[:2]
            spec = output_spec(self.backend.predict(self.model, probe, self.options), len(probe))
            self._remember(self._specs, _spec_key(x), spec)
        return spec

    def _known_spec(self, x: np.ndarray) -> OutputSpec | None:
        """The model's output spec for inputs like ``x``, if probed already."""
        return self._specs.get(_spec_key(x))  # reading a dict needs no lock

    def predict(self, inputs: Any) -> np.ndarray:
        """The model's outputs for ``inputs``, in batches, as NumPy."""
        return self._predict_array(as_input_array(inputs, self.backend))

    def _predict_array(self, x: np.ndarray) -> np.ndarray:
        """:meth:`predict` of an array already made by ``as_input_array``."""
        parts = []
        for rows in _chunks(len(x), self._samples_per_chunk(len(x))):
            outputs = self.backend.predict(self.model, x[rows], self.options)
            output_spec(outputs, rows.stop - rows.start)
            parts.append(outputs)
        if not parts:
            return np.zeros((0,), dtype=x.dtype)
        return np.concatenate(parts)

    def _report_zero_samples(self, samples: np.ndarray) -> None:
        warn(messages.zero_saliency(samples.tolist()))


def _spec_key(x: np.ndarray) -> Hashable:
    """What the model's output spec depends on: the shape and dtype of a sample."""
    return (x.shape[1:], x.dtype)


def _sample_ids(ids: Any, offset: int, n: int) -> np.ndarray:
    """Each sample's global id: ``ids`` checked, else ``offset`` plus its index."""
    if ids is None:
        return np.arange(offset, offset + n, dtype=np.int64)
    array = np.asarray(ids)
    if array.shape != (n,) or array.dtype.kind not in "iu" or (n and array.min() < 0):
        raise ValueError(messages.bad_sample_ids(array.shape, array.dtype, n))
    return array.astype(np.int64, copy=False)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _check_batch_size(batch_size: object) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) \
            and batch_size > 0:
        return int(batch_size)
    raise ValueError(messages.bad_batch_size(batch_size))


def fresh_maps(result: np.ndarray, shape: tuple[int, ...], dtype: np.dtype,
               inputs: np.ndarray) -> np.ndarray:
    """``result`` as the returned maps: itself if it is a new array of the right kind, else a copy.

    A writeable result that is no view of another NumPy array was made for this call
    (by NumPy, or a backend's tensor memory handed over: see :class:`Backend`), so
    handing it out saves a copy; one that shares memory with the inputs is copied.
    """
    flags = result.flags
    if flags.writeable and flags.c_contiguous and result.shape == shape \
            and result.dtype == dtype and not isinstance(result.base, np.ndarray) \
            and (flags.owndata or not np.may_share_memory(result, inputs)):
        return result
    maps = np.empty(shape, dtype=dtype)
    maps[...] = result
    return maps


def _output_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.itemsize < 4 or (dtype.kind != "f" and not np.issubdtype(dtype, np.floating)):
        return np.dtype(np.float32)
    return dtype

