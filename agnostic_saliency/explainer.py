"""The framework-free engine shared by every gradient-based explainer.

An explainer validates the inputs and targets once in NumPy, then walks the
batch in chunks; for each chunk the method (``_attribute``) asks the backend for
input gradients (through :class:`agnostic_saliency._run.Run`) and turns them into
attributions, which are reduced over the channel axis (unless the backend returned
them reduced) and written into one output array. What an input signature fixes
(channel axis, map shape, the model's output spec, the chunk size that fits the
memory budget) is worked out on its first call and kept in bounded caches.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._chunking import ChunkSizes
from agnostic_saliency._dataset_methods import DatasetMethods
from agnostic_saliency._inputs import as_input_array, check_finite, resolve_channel_axis
from agnostic_saliency._memory import AUTO, BatchSize, check_batch_size, check_budget
from agnostic_saliency._predictions import TargetsAndOutputs
from agnostic_saliency._reduce import Reducer, check_reducer, reduce_channels, reduced_shape
from agnostic_saliency._run import Run
from agnostic_saliency._several import SeveralInputs
from agnostic_saliency._structure import OutputKey, Structure
from agnostic_saliency._targets import OutputSpec
from agnostic_saliency.backend import (
    STRICT,
    Backend,
    BackendBase,
    CallOptions,
    Magnitude,
    Operator,
    OutputSelector,
    as_backend_base,
    warn,
)
from agnostic_saliency.cache import BoundedCache
from agnostic_saliency.registry import resolve_backend

__all__ = ["GradientExplainer", "Layout"]

#: Most input signatures whose layout, output spec and chunk size an explainer keeps.
_MAX_CACHED = 64


class Layout(NamedTuple):
    """What an input signature (sample shape and dtype) fixes, worked out once."""

    #: Non-negative channel axis; the last axis of inputs that are not reduced.
    channel_axis: int
    #: Shape of one sample's map.
    map_shape: tuple[int, ...]
    map_dtype: np.dtype
    #: Whether maps have a channel axis to reduce.
    reduces: bool
    #: What the backend computes directly for ``|gradient|`` maps, or ``None``.
    magnitude: Magnitude | None
    #: Bytes of one input sample.
    sample_bytes: int


class GradientExplainer(SeveralInputs, TargetsAndOutputs, ChunkSizes, DatasetMethods):
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
        Most samples (or noisy copies, path points) sent to the model at once.
        ``"auto"`` (the default) sizes chunks so that their working memory stays
        within ``memory_budget``, learned from the first chunk of each input shape;
        an int is used as it is (a shorter last chunk is padded to it, so a model
        exported with a static batch works); ``None`` sends everything at once.
        Results never depend on it.
    memory_budget
        Bytes of working memory for ``batch_size="auto"``: of the device's memory
        for a model on an accelerator (GPU), else of the host's. ``None``: 10 % of
        the available host memory, or of the device's free memory, and at least 1 GiB.
    operator
        ``operator(model, inputs, targets) -> scores (N,)`` in the model's framework;
        ``None`` explains the output selected by ``targets``.
    channel_axis
        Channel axis of the inputs. ``None`` takes what the model declares (a Keras
        layer's ``data_format``), else the framework's convention (1 for PyTorch, -1
        otherwise), and reduces only images (rank 4). Given explicitly, it is reduced
        for every input of rank 3 or more (``(N, L, D)`` embeddings give ``(N, L)``).
    reducer
        Reduction over the channel axis: ``"max"``, ``"mean"``, ``"min"``, ``"sum"``,
        or ``None`` to keep the channels.
    output_selector
        Picks one tensor out of a model output that is a tuple, dict or object.
    allow_training_mode
        Explain a model in training mode instead of refusing it.
    strict
        Raise ``RuntimeError`` instead of warning about what may spoil a map: a
        sample whose attribution is identically zero, outputs that look like
        probabilities, inputs cast to a lower precision.
    attribute
        With several inputs (a tuple, list or dict): the positions or keys of the
        floating entries to explain; ``None``: every floating entry. The others are
        side inputs, passed to the model unchanged.
    model_kwargs
        Constants passed as keyword arguments to every model call
        (``{"return_dict": True}``); never an array with one row per sample.
    layer
        Explain the output of this layer (a ``torch.nn.Module`` of the model, a Keras
        layer, a Flax NNX submodule) instead of the inputs: maps have the layer
        output's shape, its last (hidden) axis reduced by ``reducer`` (``"l2"`` by
        default): ``(N, L)`` per token for an embedding layer.
    output
        Short form of ``output_selector`` for a dict or Hugging Face output:
        ``output="logits"``.
    """

    #: The library whose definitions a method reproduces (``preset=``), if any.
    preset: str | None = None

    def __init__(
        self,
        model: Any,
        *,
        backend: str | Backend | None = None,
        batch_size: BatchSize = AUTO,
        memory_budget: float | None = None,
        operator: Operator | None = None,
        channel_axis: int | None = None,
        reducer: Reducer = "max",
        output_selector: OutputSelector | None = None,
        allow_training_mode: bool = False,
        strict: bool = False,
        attribute: Any = None,
        model_kwargs: dict[str, Any] | None = None,
        layer: Any = None,
        output: str | None = None,
    ) -> None:
        if output is not None:
            if output_selector is not None:
                raise ValueError(messages.output_and_selector(output))
            output_selector = OutputKey(output)
        self.model = model
        self._backend = resolve_backend(model, backend)
        self.batch_size = check_batch_size(batch_size)
        self.memory_budget = check_budget(memory_budget)
        self.operator = operator
        self.channel_axis = channel_axis
        self.reducer = check_reducer(reducer)
        self.options = CallOptions(output_selector, allow_training_mode)
        self.strict = strict
        self.attribute = attribute
        self.model_kwargs = dict(model_kwargs or {})
        self.layer = layer
        #: Sizes of the model calls of the last explain call (after any back-off).
        self.last_batch_sizes: list[int] = []
        #: Whether the model took only full batches of ``batch_size`` (learned).
        self.static_batch = False
        self._new_caches()

    def _new_caches(self) -> None:
        self._layouts: BoundedCache[Layout] = BoundedCache(_MAX_CACHED)
        self._specs: BoundedCache[OutputSpec] = BoundedCache(_MAX_CACHED)
        self._chunk_sizes: BoundedCache[int] = BoundedCache(_MAX_CACHED)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={type(self.model).__name__}, "
                f"backend={self.backend.name!r}, reducer={self.reducer!r})")

    @property
    def backend(self) -> BackendBase:
        """The backend that explains the model; replacing it forgets what was prepared."""
        return self._backend

    @backend.setter
    def backend(self, backend: Backend) -> None:
        self._backend = as_backend_base(backend)
        self._new_caches()

    # --- public ---------------------------------------------------------------------

    def explain(self, inputs: Any, targets: Any = None) -> Any:
        """Explain ``inputs`` with respect to ``targets``.

        Parameters
        ----------
        inputs
            A floating batch, NumPy or the model framework's tensor. Image inputs
            are rank 4 with a channel axis (see ``channel_axis``). Several inputs: a
            tuple or list (positional arguments of a PyTorch or JAX model, the list of
            a Keras model) or a dict (keyword arguments) of arrays sharing the batch
            axis; non-floating entries (token ids, attention masks) are side inputs.
        targets
            ``None`` for the predicted class (argmax of the output); an int for one
            class for every sample; integers of shape ``(N,)``; or weights of shape
            ``(N, n_outputs)`` (score = sum of output * weight). With an
            ``operator`` they are passed to it unchanged.

        Returns
        -------
        numpy.ndarray or tuple or list or dict
            A new array: ``(N, H, W)`` for images with a reducer, else the inputs'
            shape. float32 for 16-bit inputs, else the inputs' dtype. For several
            inputs, the same structure with one map per attributed entry (each reduced
            by its own rank) and ``None`` for side inputs; with ``layer``, the layer
            output's shape without its hidden axis.
        """
        return self._explain(inputs, targets, 0, None)[0]

    def explain_with_targets(self, inputs: Any, targets: Any = None, *, sample_offset: int = 0,
                             sample_ids: Any = None) -> tuple[Any, np.ndarray | None]:
        """Like :meth:`explain`, and also return the class index explained per sample.

        The second item is ``None`` for 2-D weight targets and with an operator.
        Seeded noise (SmoothGrad and its kin) is drawn per sample from its global id:
        ``sample_ids`` (one non-negative integer per sample), else ``sample_offset``
        plus its index here. Explained in pieces, sharded or resumed, a data set then
        gets the maps it gets in one call.
        """
        maps, run = self._explain(inputs, targets, sample_offset, sample_ids)
        if run.plan is None or run.plan.indices is None:
            return maps, None
        indices = run.plan.indices
        # Integer targets are used as they are given: hand out a copy, not the caller's array.
        return maps, (indices.copy() if indices is targets or indices.base is not None
                      else indices)

    def predict(self, inputs: Any) -> np.ndarray:
        """The model's outputs for ``inputs``, in chunks, as NumPy."""
        structure = self._structure(inputs)
        x = as_input_array(inputs, self.backend) if structure is None else self._x_of(structure)
        return self._predict(x, self._model_batch(self._layout(x, structure), len(x)),
                             structure)

    # --- the path of every call -----------------------------------------------------

    def _explain(self, inputs: Any, targets: Any, sample_offset: int, sample_ids: Any
                 ) -> tuple[Any, Run]:
        """The maps of ``inputs`` and the run that made them."""
        token = STRICT.set(self.strict)  # warn() raises inside this call when strict
        try:
            # An asynchronous backend gets the inputs unchecked: the first gradient
            # checks them while the device computes. Not a model allowed to run in
            # training mode: its forward pass may change its state (batch-norm
            # statistics), so it never sees inputs before they are checked.
            structure = self._structure(inputs)
            overlap = (self.backend.asynchronous and not self.options.allow_training_mode
                       and structure is None)
            x = (as_input_array(inputs, self.backend, check=False) if structure is None
                 else self._x_of(structure))
            ids = _sample_ids(sample_ids, sample_offset, len(x))
            if not overlap:
                check_finite(x, ids)
            layout = self._layout(x, structure)
            run = self._start(x, layout, targets, overlap, structure, ids)
            maps = self._compute(run)
            if structure is not None and structure.layer is None:
                maps = self._entry_maps(maps, structure)
            run.finish_checks()  # a method that computed no gradient
            self.last_batch_sizes = run.call_sizes
            dead = run.dead_samples()
            if dead.size:  # named by global id: a data set's absolute sample indices
                self._report_zero_samples(run.state["sample_ids"][dead])
        finally:
            STRICT.reset(token)
        return maps, run

    def _start(self, x: np.ndarray, layout: Layout, targets: Any, overlap: bool,
               structure: Structure | None, ids: np.ndarray) -> Run:
        """The run of ``x`` (whose samples' global ids are ``ids``): targets resolved,
        chunk sizes chosen."""
        model_batch = self._model_batch(layout, len(x) * self._points_per_sample())
        if self.operator is not None:
            run = Run(self, x, layout, raw_targets=self._operator_targets(x, targets),
                      unchecked=overlap, structure=structure)
        else:
            # Class indices the backend takes as they are: their range is checked
            # with the inputs, while the device computes.
            defer = overlap and self.backend.class_index_targets
            plan = self._plan(x, targets, model_batch, structure, check_range=not defer)
            run = Run(self, x, layout, plan=plan, unchecked=overlap, structure=structure)
        run.state["sample_ids"] = ids
        run.model_batch = model_batch
        run.pad_to = (self.batch_size if isinstance(self.batch_size, int) and structure is None
                      and not self.options.allow_training_mode else None)
        return run

    def _compute(self, run: Run) -> np.ndarray:
        """The maps of ``run.x``, chunk by chunk; memory grows with a chunk, not with N."""
        x, layout = run.x, run.layout
        maps = np.empty((len(x), *layout.map_shape), dtype=layout.map_dtype)
        start, probe = 0, self._probe(layout)
        while start < len(x):
            rows = slice(start, min(start + self._samples_per_chunk(run.model_batch), len(x)))
            if probe is not None:
                measured = min(run.model_batch, len(x) * self._points_per_sample())
                with probe.measure(measured, layout.sample_bytes):
                    attributions = self._attribute(run, rows)
                run.model_batch = self._learn_chunk(layout, probe, measured, run.model_batch)
                probe = None
            else:
                attributions = self._attribute(run, rows)
            if layout.reduces and attributions.shape[1:] != layout.map_shape:  # else reduced
                attributions = reduce_channels(attributions, layout.channel_axis, self.reducer)
            if rows == run.everything and _handed_over(attributions, maps, x):
                return attributions
            maps[rows] = attributions
            start = rows.stop
        return maps

    # --- for subclasses -------------------------------------------------------------

    def _attribute(self, run: Run, rows: slice) -> np.ndarray:
        """Attributions of the samples ``rows`` of the input, channels kept."""
        raise NotImplementedError

    # --- what a signature fixes -----------------------------------------------------

    def _layout(self, x: np.ndarray, structure: Structure | None = None) -> Layout:
        """The layout of inputs like ``x`` (made on the first call that has their shape)."""
        kind = None if structure is None else ("layer" if structure.layer is not None
                                               else tuple(structure.shapes().items()))
        key = (x.shape[1:], x.dtype, self.reducer, self.channel_axis, kind)
        layout = self._layouts.get(key)
        if layout is None and structure is not None:
            reduces = kind == "layer" and self.reducer is not None and x.ndim >= 3
            shape = x.shape[1:-1] if reduces else x.shape[1:]
            layout = Layout(x.ndim - 1, shape, _output_dtype(x.dtype), reduces, None,
                            x.dtype.itemsize * int(np.prod(x.shape[1:])))
            self._layouts.put(key, layout)
        if layout is None:
            declared = self.backend.model_channel_axis(self.model, x.ndim)
            explicit = self.channel_axis is not None or declared is not None
            reduces = self.reducer is not None and (x.ndim == 4 or (explicit and x.ndim >= 3))
            axis = x.ndim - 1
            if reduces or x.ndim == 4:
                default = self.backend.channel_axis if declared is None else declared
                axis = resolve_channel_axis(self.channel_axis, default, x.shape,
                                            declared=declared is not None)
            shape = reduced_shape(x.shape, axis, self.reducer if reduces else None)[1:]
            magnitude = self._magnitude(axis, reduces)
            layout = Layout(axis, shape, _output_dtype(x.dtype), reduces, magnitude,
                            x.dtype.itemsize * int(np.prod(x.shape[1:])))
            self._layouts.put(key, layout)
        return layout

    def _magnitude(self, axis: int, reduces: bool) -> Magnitude | None:
        """What the backend can compute directly for ``|gradient|`` maps, reduced over
        ``axis`` where the maps are."""
        wanted = self.reducer if reduces else None
        if wanted not in self.backend.magnitude_maps:
            return None
        return (wanted, axis)  # type: ignore[return-value]

    def _report_zero_samples(self, samples: np.ndarray) -> None:
        warn(messages.zero_saliency(samples.tolist()))

    # --- pickling -------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """What pickles and deep copies keep: the caches come back empty."""
        state = self.__dict__.copy()
        for cache in ("_layouts", "_specs", "_chunk_sizes"):
            state.pop(cache, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._new_caches()


def _handed_over(result: np.ndarray, maps: np.ndarray, x: np.ndarray) -> bool:
    """Whether ``result`` may be returned as ``maps`` without a copy: a new array of
    its own memory (NumPy's, or a backend's writeable answer, which is handed over),
    of the maps' kind, that is not the inputs' memory."""
    flags = result.flags
    return (flags.owndata and flags.writeable and flags.c_contiguous
            and result.shape == maps.shape and result.dtype == maps.dtype
            and not np.shares_memory(result, x))


def _sample_ids(ids: Any, offset: int, n: int) -> np.ndarray:
    """Each sample's global id: ``ids`` checked, else ``offset`` plus its index."""
    if ids is None:
        return np.arange(offset, offset + n, dtype=np.int64)
    array = np.asarray(ids)
    if array.shape != (n,) or array.dtype.kind not in "iu" or (n and array.min() < 0):
        raise ValueError(messages.bad_sample_ids(array.shape, array.dtype, n))
    return array.astype(np.int64, copy=False)


def _output_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.itemsize < 4 or (dtype.kind != "f" and not np.issubdtype(dtype, np.floating)):
        return np.dtype(np.float32)
    return dtype
