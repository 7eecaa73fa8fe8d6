"""The contract between the framework-free frontend and a framework backend.

A backend is any object that satisfies :class:`Backend`. It is found through the
entry-point group ``agnostic_saliency.backends`` (or registered by hand with
:func:`agnostic_saliency.register_backend`). Everything that is not framework
specific (targets, batching, reductions, validation) is done by the frontend, so
a backend only turns NumPy arrays into framework tensors, runs the model, and
returns NumPy arrays.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from agnostic_saliency.messages import SaliencyWarning

__all__ = [
    "MAGNITUDE_REDUCERS", "Backend", "CallOptions", "Capabilities", "Dispatch", "Magnitude",
    "Operator", "OutputSelector", "capabilities", "gradient_dispatcher", "magnitude_reducers",
    "outputs_to_numpy", "user_stacklevel", "warn",
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

#: A backend's optional ``dispatch_gradient``: takes what ``gradient`` takes, starts
#: it, and returns the function that waits for it and returns its result.
Dispatch = Callable[..., Callable[[], Any]]

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
    Optional members, used when present: ``full_precision()`` returns a context
    manager that turns off reduced-precision float32 math (TF32) while
    :func:`agnostic_saliency.compare` runs; ``can_load(path) -> bool`` (without
    importing anything) and ``load_model(path)`` let the command line load saved
    models of the framework's formats; ``class_index_targets = True`` declares that
    :meth:`gradient` also takes class indices (see there), which lets a compiled
    framework gather the score instead of multiplying the output by one-hot rows
    (XLA runs the gather faster).

    ``dispatch_gradient(model, inputs, targets, operator, options)``, for frameworks
    that compute asynchronously (JAX; PyTorch on a GPU), starts what :meth:`gradient`
    computes and returns a function that waits for it and returns what
    :meth:`gradient` would. The frontend then checks that the inputs are finite (and
    the range of class indices, with ``class_index_targets``) while the model runs,
    and drops the result if they are not: a backend that has it declares that
    running its models (``predict`` too) on inputs and indices not yet checked
    changes nothing. It may also start nothing and compute when the function is
    called (PyTorch on the CPU). It is used only when the class that defines
    :meth:`gradient`, or a subclass, defines it (see :func:`gradient_dispatcher`),
    and never for calls with ``allow_training_mode``: a model in training mode may
    change its state on a forward pass.

    ``magnitude_maps = ("max", "mean", "sum")`` (a tuple of
    :data:`MAGNITUDE_REDUCERS`) declares that :meth:`gradient` (and
    ``dispatch_gradient``) also take a keyword ``magnitude=(reducer, channel_axis)``
    (a :data:`Magnitude`) for each listed ``reducer`` and then return
    ``reducer(|gradient|, axis=channel_axis)`` (NumPy's functions), or ``|gradient|``
    for ``None``, as float32 or float64. The frontend asks for it when a map needs no
    more than that (:class:`~agnostic_saliency.Saliency`), so that a framework on a
    GPU copies the reduced map to the host instead of the whole gradient, and NumPy
    does not make another pass over it. Like ``dispatch_gradient``, it is used only
    when the class that defines :meth:`gradient`, or a subclass, declares it (see
    :func:`magnitude_reducers`).
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


class Capabilities(NamedTuple):
    """What the frontend uses of a backend beyond :class:`Backend`'s required members."""

    #: Its ``dispatch_gradient`` (see :func:`gradient_dispatcher`), or ``None``.
    dispatch: Dispatch | None
    #: Its ``magnitude_maps`` (see :func:`magnitude_reducers`), or ``()``.
    magnitude_reducers: tuple[str | None, ...]
    #: Whether its ``gradient`` takes class indices (``class_index_targets``).
    class_index_targets: bool


def capabilities(backend: object) -> Capabilities:
    """Read the optional members of ``backend`` that the frontend uses.

    An explainer reads them on its first call with each input signature (shape and
    dtype), and again after its ``backend`` is replaced; not on every call.
    """
    return Capabilities(gradient_dispatcher(backend), magnitude_reducers(backend),
                        bool(getattr(backend, "class_index_targets", False)))


def gradient_dispatcher(backend: object) -> Dispatch | None:
    """The backend's ``dispatch_gradient`` (see :class:`Backend`), or ``None``.

    ``None`` also when neither the class that defines ``gradient`` nor a subclass of
    it defines ``dispatch_gradient`` (a subclass or wrapper that overrides ``gradient``
    alone, to record or change gradients) or when ``gradient`` is set on the
    instance: those ``gradient`` methods keep being called.
    """
    if not _beside_gradient(backend, "dispatch_gradient"):
        return None
    dispatch: Dispatch = backend.dispatch_gradient  # type: ignore[attr-defined]
    return dispatch


def magnitude_reducers(backend: object) -> tuple[str | None, ...]:
    """The reducers ``backend`` declares in ``magnitude_maps`` (see :class:`Backend`).

    Empty also where a subclass or wrapper overrides ``gradient`` without declaring
    them, and where ``gradient`` is set on the instance, as for
    :func:`gradient_dispatcher`.
    """
    if not _beside_gradient(backend, "magnitude_maps"):
        return ()
    return tuple(getattr(backend, "magnitude_maps", ()))


def _beside_gradient(backend: object, name: str) -> bool:
    """Whether ``name`` is defined by the class that defines ``backend.gradient`` or by
    a subclass of it, and ``gradient`` is not set on the instance."""
    kind = type(backend)
    found = _BESIDE_GRADIENT.get((kind, name))
    if found is None:
        if len(_BESIDE_GRADIENT) >= 256:  # classes made on the fly: keep the cache bounded
            _BESIDE_GRADIENT.clear()
        owner, gradient_owner = _owner(kind, name), _owner(kind, "gradient")
        found = owner is not None and gradient_owner is not None and issubclass(
            owner, gradient_owner)
        _BESIDE_GRADIENT[kind, name] = found
    return found and "gradient" not in getattr(backend, "__dict__", ())


#: Per backend class and member name: whether it is defined at or below ``gradient``.
_BESIDE_GRADIENT: dict[tuple[type, str], bool] = {}


def _owner(kind: type, name: str) -> type | None:
    """The class of ``kind``'s MRO whose body defines ``name``."""
    return next((base for base in kind.__mro__ if name in base.__dict__), None)


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
