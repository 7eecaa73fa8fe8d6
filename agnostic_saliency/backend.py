"""The contract between the framework-free frontend and a framework backend.

A backend is any object that satisfies :class:`Backend`. It is found through the
entry-point group ``agnostic_saliency.backends`` (or registered by hand with
:func:`agnostic_saliency.register_backend`). Everything that is not framework
specific (targets, batching, reductions, validation) is done by the frontend, so
a backend only turns NumPy arrays into framework tensors, runs the model, and
returns NumPy arrays.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._memory import DeviceMemory
from agnostic_saliency.messages import SaliencyWarning

__all__ = [
    "MAGNITUDE_REDUCERS", "Backend", "BackendBase", "CallOptions", "DeviceMemory", "Magnitude",
    "Operator", "OutputSelector", "as_backend_base", "outputs_to_numpy", "plugin_of", "report_cast",
    "user_stacklevel", "warn",
]

#: Whether the explain call running in this thread (or task) was made with strict=True.
#: The explainer sets it around each call (``token = STRICT.set(...)``, then
#: ``STRICT.reset(token)``); a ContextVar keeps concurrent calls apart.
STRICT: ContextVar[bool] = ContextVar("agnostic_saliency_strict", default=False)

#: ``operator(model, inputs, targets) -> scores`` written in the model's framework;
#: must return one score per sample, shape ``(N,)``.
Operator = Callable[[Any, Any, Any], Any]

#: ``output_selector(outputs) -> tensor`` picks one tensor out of a model that
#: returns a tuple, a dict or an output object.
OutputSelector = Callable[[Any], Any]

#: ``(reducer, channel_axis)``: what a backend with ``magnitude_maps`` returns instead
#: of the signed gradient: ``reducer(|gradient|, axis=channel_axis)``, or ``|gradient|``
#: itself when ``reducer`` is ``None``.
Magnitude = tuple[Literal["max", "mean", "sum"] | None, int]

#: What a backend may list in ``magnitude_maps``: NumPy's names of the reductions, and
#: ``None`` for ``|gradient|`` itself.
MAGNITUDE_REDUCERS = (None, "max", "mean", "sum")


@dataclass(frozen=True)
class CallOptions:
    """Options the frontend forwards to every backend call.

    Attributes
    ----------
    output_selector
        Applied to the raw model output before scoring, for models whose output is
        not a single tensor (``lambda out: out["logits"]``). ``None`` uses the output
        as it is.
    allow_training_mode
        Run a model that is in training mode (dropout or batch-norm active) instead
        of refusing it. Maps then depend on the batch and on randomness.
    """

    output_selector: OutputSelector | None = None
    allow_training_mode: bool = False


@runtime_checkable
class Backend(Protocol):
    """What a framework backend provides.

    Attributes
    ----------
    name
        Registry name, e.g. ``"torch"``; users pass it as ``backend=``.
    modules
        Top-level module names whose classes this backend may claim, e.g.
        ``("torch",)``. Detection asks a backend only when one of these modules is
        already imported and appears in the model type's MRO.
    priority
        Backends with a higher priority are asked first (Keras models are also
        ``torch.nn.Module`` objects under Keras' torch backend, so Keras asks first).
    channel_axis
        Default channel axis of image inputs in this framework's convention.

    Notes
    -----
    The optional members (``class_index_targets``, ``magnitude_maps``,
    ``asynchronous``, ``start_gradient``, ``full_precision``, ``can_load``,
    ``load_model``, ``model_channel_axis``, ``is_out_of_memory``, ``device_memory``,
    ``output_shape``) have defaults in :class:`BackendBase`, which documents them. Subclass
    it; a plugin that implements this protocol alone is wrapped in one, and its
    ``class_index_targets`` and ``magnitude_maps`` are read once, when it is registered.
    """

    name: str
    modules: tuple[str, ...]
    priority: int
    channel_axis: int

    def can_handle(self, model: Any) -> bool:
        """Return whether this backend explains ``model``; must never import a framework."""
        ...

    def to_numpy(self, array: Any) -> np.ndarray:
        """Convert one of this framework's arrays (or any array-like) to NumPy."""
        ...

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        """Run the model on ``inputs`` and return its output converted to NumPy.

        A model output that is a tuple, list or mapping is returned with the same
        structure and NumPy leaves, so that the frontend can report it.
        """
        ...

    def gradient(
        self,
        model: Any,
        inputs: np.ndarray,
        targets: Any,
        operator: Operator | None,
        options: CallOptions,
    ) -> np.ndarray:
        """Return the signed gradient of the summed scores with respect to ``inputs``.

        Parameters
        ----------
        model
            The user's model.
        inputs
            Floating, finite, C-contiguous batch; never modified.
        targets
            Without ``operator``: weights of the model's outputs, same shape as the
            output (one-hot rows select a class); the score of a sample is
            ``sum(output * weights)`` over the non-batch axes. A backend whose
            ``class_index_targets`` is true also gets integer class indices of
            shape ``(N,)`` (int64, in range) when every sample explains one class of
            a model with several outputs: the score of sample ``i`` is then
            ``output[i, targets[i]]``. With ``operator``:
            the user's targets for this batch (NumPy or ``None``), converted to the
            framework and passed to the operator unchanged.
        operator
            ``None``, or ``operator(model, inputs, targets) -> scores (N,)``.
        options
            Forwarded :class:`CallOptions`.

        Returns
        -------
        numpy.ndarray
            The gradient, same shape as ``inputs``. A writeable array is handed
            over: the frontend may return it to the user as the maps, without a
            copy, unless it shares memory with ``inputs``. Memory that the backend
            keeps using (a buffer of its own, a framework's immutable array) goes
            back read-only, and the frontend copies it.
        """
        ...


class BackendBase:
    """Base class of backends: every optional member of :class:`Backend` has a default.

    A backend subclasses it and writes ``can_handle``, ``gradient`` and ``predict``
    (and sets ``name``, ``modules`` and, where it differs, ``channel_axis``). The
    frontend calls the same members on every backend; a plugin that implements
    :class:`Backend` without this class is wrapped in one (:func:`as_backend_base`).

    Attributes
    ----------
    class_index_targets
        ``True`` declares that :meth:`gradient` also takes integer class indices
        ``(N,)`` (see :class:`Backend`), so a compiled framework gathers the score
        instead of multiplying the output by one-hot rows.
    magnitude_maps
        The reducers (of :data:`MAGNITUDE_REDUCERS`) for which :meth:`gradient` takes a
        keyword ``magnitude=(reducer, channel_axis)`` and returns
        ``reducer(|gradient|, axis=channel_axis)`` (``|gradient|`` for ``None``).
        A framework on a GPU then copies the reduced map to the host.
    structured_inputs
        ``True`` declares that :meth:`predict` and :meth:`gradient` also take a
        :class:`~agnostic_saliency._structure.ModelInputs` (several inputs, side
        inputs such as attention masks, ``model_kwargs``) and that :meth:`gradient`
        then returns a dict of gradients, one per attributed key.
    layer_outputs
        ``True`` declares that :meth:`layer_output` works and that :meth:`gradient`,
        given a ``ModelInputs`` with a ``layer``, runs the model with that layer's
        output replaced by ``layer_values`` and returns the gradient with respect to
        them (an array of their shape).
    asynchronous
        ``True`` when :meth:`start_gradient` returns before the device has finished:
        the frontend then checks the inputs while the device computes, and a
        backend that says so declares that running its models on inputs not yet
        checked changes nothing.
    """

    name: str = ""
    modules: tuple[str, ...] = ()
    priority: int = 0
    channel_axis: int = -1
    class_index_targets: bool = False
    magnitude_maps: tuple[str | None, ...] = ()
    asynchronous: bool = False
    structured_inputs: bool = False
    layer_outputs: bool = False

    def can_handle(self, model: Any) -> bool:
        """Whether this backend explains ``model``; must never import a framework."""
        return False

    def to_numpy(self, array: Any) -> np.ndarray:
        """One of this framework's arrays (or any array-like) as NumPy."""
        return np.asarray(array)

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        """The model's output for ``inputs`` as NumPy (see :meth:`Backend.predict`)."""
        raise NotImplementedError(f"backend {self.name!r} does not implement predict()")

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any,
                 operator: Operator | None, options: CallOptions,
                 magnitude: Magnitude | None = None) -> np.ndarray:
        """The signed gradient of the summed scores (see :meth:`Backend.gradient`);
        ``magnitude`` comes only for a reducer listed in :attr:`magnitude_maps`."""
        raise NotImplementedError(f"backend {self.name!r} does not implement gradient()")

    def start_gradient(self, model: Any, inputs: np.ndarray, targets: Any,
                       operator: Operator | None, options: CallOptions,
                       magnitude: Magnitude | None = None) -> Callable[[], np.ndarray]:
        """Start :meth:`gradient` and return the function that waits for its result.

        The default computes at once. An asynchronous backend (JAX, PyTorch on a
        GPU) returns as soon as the device has the work, so that the frontend's
        checks run meanwhile.
        """
        extra = {} if magnitude is None else {"magnitude": magnitude}
        result = self.gradient(model, inputs, targets, operator, options, **extra)
        return lambda: result

    def layer_output(self, model: Any, inputs: Any, options: CallOptions) -> np.ndarray:
        """The output of ``inputs.layer`` when the model runs on ``inputs`` (a
        ``ModelInputs``), as NumPy; only for backends with :attr:`layer_outputs`."""
        raise TypeError(messages.structured_not_supported(self.name, "layer outputs (layer=)"))

    def full_precision(self) -> AbstractContextManager[None]:
        """A context that turns off reduced-precision float32 math (TF32) while
        :func:`agnostic_saliency.compare` runs; by default nothing to turn off."""
        return nullcontext()

    def can_load(self, path: Path) -> bool:
        """Whether :meth:`load_model` reads the saved model at ``path`` (imports nothing)."""
        return False

    def load_model(self, path: Path) -> Any:
        """Load the saved model at ``path`` (for the command line)."""
        raise ValueError(f"backend {self.name!r} loads no saved models ({path})")

    def model_channel_axis(self, model: Any, ndim: int) -> int | None:
        """The channel axis that ``model`` itself declares for inputs of rank ``ndim``
        (a Keras layer's ``data_format``), or ``None`` to use :attr:`channel_axis`."""
        return None

    def is_out_of_memory(self, error: BaseException) -> bool:
        """Whether ``error`` is this framework's out-of-memory error, after which the
        frontend retries with smaller chunks."""
        return isinstance(error, MemoryError)

    def device_memory(self, model: Any) -> DeviceMemory | None:
        """The memory of the accelerator that holds ``model``'s weights, as its framework
        reports it (free bytes, and its peak counter, never reset), or ``None`` (the
        default) where the model computes on the host. ``batch_size="auto"`` then budgets
        and measures device memory instead of host memory."""
        return None

    def output_shape(self, model: Any, inputs: Any, options: CallOptions
                     ) -> tuple[int, ...] | None:
        """The shape of what :meth:`predict` returns for ``inputs`` (batch axis included),
        found without running (nor compiling) a forward pass, or ``None`` where that is
        not known without running one.

        The frontend learns a model's output spec from it when class indices are given
        (their range, a single-output model); on ``None`` it runs :meth:`predict`
        instead, which also reports a model that fails or returns no single array. So
        an implementation returns ``None`` rather than raising, and whenever the
        output is not one array. The default returns ``None``.
        """
        return None

    def layer_weights(self, model: Any) -> list[tuple[str, list[np.ndarray]]]:
        """The model's layers that hold trainable weights, input to output: ``(name,
        weights)`` with the weights as NumPy in the canonical layout (dense ``(in, out)``,
        convolution ``(*kernel, in, out)``, anything else as stored), for the sanity checks
        of :mod:`agnostic_saliency.sanity`."""
        raise NotImplementedError(
            f"listing a model's layers is not supported by this backend ({self.name!r}); "
            "model randomization needs a backend that implements layer_weights()")

    def with_layer_weights(self, model: Any, weights: Mapping[str, list[np.ndarray]]) -> Any:
        """A copy of ``model`` (never the model itself) whose layers named in ``weights``
        hold those weights (canonical layout, as :meth:`layer_weights` gives them)."""
        raise NotImplementedError(
            f"setting a model's weights is not supported by this backend ({self.name!r}); "
            "model randomization needs a backend that implements with_layer_weights()")

    def __reduce_ex__(self, protocol: Any) -> str | tuple[Any, ...]:
        """A registered backend pickles as its name (the other process's registry
        gives its own instance, caches and all); any other by value."""
        from agnostic_saliency.registry import registered_as

        if self.name and registered_as(self.name) is self:
            return (_registered_backend, (self.name,))
        return super().__reduce_ex__(protocol)


def _registered_backend(name: str) -> BackendBase:
    from agnostic_saliency.registry import get_backend

    return get_backend(name)


class _PluginWrapper(BackendBase):
    """A :class:`BackendBase` around a plugin that implements :class:`Backend` alone.

    Its optional members are read once, here; anything else is the plugin's.
    """

    def __init__(self, plugin: Any) -> None:
        self.plugin = plugin
        self.name = plugin.name
        self.modules = tuple(plugin.modules)
        self.priority = int(plugin.priority)
        self.channel_axis = int(plugin.channel_axis)
        self.class_index_targets = bool(getattr(plugin, "class_index_targets", False))
        # Declared magnitude maps count only where its gradient takes the keyword (a
        # proxy that forwards every attribute may not).
        if _takes_keyword(plugin.gradient, "magnitude"):
            self.magnitude_maps = tuple(getattr(plugin, "magnitude_maps", ()))
        self.structured_inputs = bool(getattr(plugin, "structured_inputs", False))
        self.layer_outputs = bool(getattr(plugin, "layer_outputs", False))
        for member in ("full_precision", "can_load", "load_model", "model_channel_axis",
                       "is_out_of_memory", "device_memory", "layer_output", "layer_weights",
                       "with_layer_weights", "output_shape"):
            found = getattr(plugin, member, None)
            if callable(found):
                setattr(self, member, found)
        self.can_handle = plugin.can_handle  # type: ignore[method-assign]
        self.to_numpy = plugin.to_numpy  # type: ignore[method-assign]
        self.predict = plugin.predict  # type: ignore[method-assign]
        self.gradient = plugin.gradient  # type: ignore[method-assign]

    def __getattr__(self, name: str) -> Any:
        if "plugin" not in self.__dict__:  # being unpickled or copied: no plugin yet
            raise AttributeError(name)
        return getattr(self.__dict__["plugin"], name)

    def __repr__(self) -> str:
        return f"<backend {self.name!r}: {self.plugin!r}>"


def _takes_keyword(function: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return name in parameters or any(parameter.kind is inspect.Parameter.VAR_KEYWORD
                                     for parameter in parameters.values())


def as_backend_base(backend: Any) -> BackendBase:
    """``backend`` itself if it is a :class:`BackendBase`, else a wrapper around it."""
    return backend if isinstance(backend, BackendBase) else _PluginWrapper(backend)


def plugin_of(backend: BackendBase) -> Any:
    """The object a plugin registered: ``backend`` itself, or what it wraps."""
    return backend.plugin if isinstance(backend, _PluginWrapper) else backend


def outputs_to_numpy(outputs: Any, is_tensor: Callable[[Any], bool],
                     convert: Callable[[Any], np.ndarray]) -> Any:
    """A model's outputs with NumPy leaves, for :meth:`Backend.predict`.

    Tensors (``is_tensor``) become NumPy arrays (``convert``); mappings become dicts
    and tuples or lists become tuples with converted leaves, so that the frontend can
    name what the model returned; anything else is returned as it is.
    """
    if is_tensor(outputs):
        return convert(outputs)
    if isinstance(outputs, Mapping):
        return {key: outputs_to_numpy(value, is_tensor, convert) for key, value in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return tuple(outputs_to_numpy(value, is_tensor, convert) for value in outputs)
    return outputs


def report_cast(given: Any, used: Any) -> None:
    """Warn (see :func:`warn`) that inputs of dtype ``given`` are cast to ``used``, where
    that loses precision; an up-cast (float32 inputs to a float64 model) says nothing."""
    given_dtype, used_dtype = _as_dtype(given), _as_dtype(used)
    if given_dtype is None or used_dtype is None or used_dtype.itemsize < given_dtype.itemsize \
            or (used_dtype.itemsize == given_dtype.itemsize and used_dtype != given_dtype):
        warn(messages.dtype_cast(str(given).replace("torch.", ""),
                                 str(used).replace("torch.", "")))


def _as_dtype(value: Any) -> np.dtype | None:
    try:
        return np.dtype(str(value).replace("torch.", ""))
    except TypeError:  # bfloat16 without ml_dtypes, say
        return None


def warn(text: str, stacklevel: int | None = None) -> None:
    """Report a sign that a map may be wrong: a :class:`SaliencyWarning`, or, inside an
    explainer made with ``strict=True``, a ``RuntimeError``.

    Backends call it for what may spoil a map (a precision-losing cast, say); notes
    about speed stay plain warnings. The strict setting is per thread (a context
    variable), so concurrent calls with different settings do not interfere.

    The warning names the line of the user's code that led to it: the innermost
    frame outside ``agnostic_saliency`` and the packages named ``agnostic_saliency_*``
    (its built-in backends), however deep the call went. ``stacklevel`` counts frames
    up from the caller instead, as :func:`warnings.warn` does.
    """
    if STRICT.get():
        raise RuntimeError(f"{text} (strict=True turns this warning into an error.)")
    warnings.warn(text, SaliencyWarning,
                  stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1)


def user_stacklevel() -> int:
    """The ``stacklevel`` for a :func:`warnings.warn` made by the caller of this
    function that names the innermost frame outside this library (``agnostic_saliency``
    and the packages named ``agnostic_saliency_*``), or the outermost frame if every
    frame is in it."""
    frame = sys._getframe(1)  # the caller: stacklevel 1 of its warnings.warn
    level = 1
    while frame.f_back is not None and _in_library(frame):
        frame = frame.f_back
        level += 1
    return level


def _in_library(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__", "")
    return isinstance(name, str) and name.startswith("agnostic_saliency")
