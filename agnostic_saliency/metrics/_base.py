"""What every metric shares: settings and presets, inputs in a canonical layout, and the
model's scores of perturbed batches, computed in bounded chunks with the backend's
``predict`` alone.

Images (rank-4 inputs) are held channels-first, ``(N, C, H, W)``, whatever the model's
layout, so that a perturbation that ranks single input elements visits them in the same
order in every framework; they are moved back to the model's layout for each call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agnostic_saliency.backend import BackendBase, CallOptions
from agnostic_saliency.registry import resolve_backend

__all__ = ["Metric", "Prepared"]

PRESETS = ("xplique", "quantus", "rise")
_DEFAULT_BATCH = 64


@dataclass(frozen=True)
class Prepared:
    """Inputs, targets and maps of one evaluation, in the metrics' layout.

    Attributes
    ----------
    x
        The inputs, float; images channels-first ``(N, C, H, W)``.
    targets
        Class indices ``(N,)`` or weights ``(N, K)`` of the scores.
    maps
        The maps as given, images channels-first: ``(N, H, W)`` or ``(N, C, H, W)``.
    image
        Whether ``x`` holds images.
    """

    x: np.ndarray
    targets: np.ndarray
    maps: np.ndarray
    image: bool


class Metric:
    """Base of the metrics: a model, its backend, and named settings.

    Parameters
    ----------
    model
        The model, in any framework a backend handles.
    backend
        A backend name or object; ``None`` detects it from the model.
    batch_size
        Perturbed inputs per call of the model (the memory bound); ``None`` for 64.
    preset
        ``"xplique"`` (default), ``"quantus"`` or ``"rise"``: the settings of that library.
    channel_axis
        Channel axis of image inputs (and of the model's); ``None`` for the one the model
        declares (a Keras layer's ``data_format``), else the backend's convention.
    **settings
        Any setting of the metric (see its class), overriding the preset's value.
    """

    #: preset name -> settings; every metric defines its own.
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, model: Any, *, backend: Any = None, batch_size: int | None = None,
                 preset: str = "xplique", channel_axis: int | None = None,
                 **settings: Any) -> None:
        self.model = model
        self.backend: BackendBase = resolve_backend(model, backend)
        self.batch_size = _check_batch_size(batch_size)
        self.preset = preset
        if channel_axis is None:  # the model's own declaration (Keras data_format), else
            declared = self.backend.model_channel_axis(model, 4)  # the framework's convention
            channel_axis = self.backend.channel_axis if declared is None else declared
        self.channel_axis = int(channel_axis)
        self.settings = _merge(type(self).__name__, self.presets, preset, settings)
        self.check_settings()

    def __repr__(self) -> str:
        items = ", ".join(f"{key}={value!r}" for key, value in self.settings.items())
        return f"{type(self).__name__}(preset={self.preset!r}, {items})"

    def check_settings(self) -> None:
        """Raise ``ValueError`` for a setting out of its range (subclasses)."""

    def evaluate(self, inputs: Any, targets: Any, maps: Any) -> float:
        """The metric's value over ``inputs`` (see the class)."""
        return float(np.mean(self.evaluate_per_sample(inputs, targets, maps)))

    def evaluate_per_sample(self, inputs: Any, targets: Any, maps: Any) -> np.ndarray:
        """The metric's value for each sample, shape ``(N,)``."""
        raise NotImplementedError

    # --- inputs ---------------------------------------------------------------------

    def prepare(self, inputs: Any, targets: Any, maps: Any) -> Prepared:
        """Check and convert one evaluation's arrays (see :class:`Prepared`)."""
        x = np.asarray(self.backend.to_numpy(inputs))
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"inputs of shape {x.shape}: expected a batch (N, ...) with N >= 1")
        image = x.ndim == 4
        if image:
            x = np.moveaxis(x, self.channel_axis, 1)
        m = np.asarray(self.backend.to_numpy(maps), dtype=np.float64)
        m = self._canonical_maps(m, x, image)
        if not np.isfinite(m).all():
            bad = np.flatnonzero(~np.isfinite(m.reshape(len(m), -1)).all(axis=1))
            raise ValueError(f"maps of samples {bad.tolist()} are not finite; "
                             "evaluate finite maps only")
        return Prepared(np.ascontiguousarray(x), self._targets(targets, x), m, image)

    def _canonical_maps(self, m: np.ndarray, x: np.ndarray, image: bool) -> np.ndarray:
        if len(m) != len(x):
            raise ValueError(f"{len(m)} maps for {len(x)} inputs: give one map per input")
        if image and m.ndim == 3 and m.shape[1:] == x.shape[2:]:
            return m
        if image and m.ndim == 4:
            moved = np.moveaxis(m, self.channel_axis, 1)
            if moved.shape == x.shape:
                return moved
        elif m.shape == x.shape:
            return m
        spatial = f" or {(len(x), *x.shape[2:])}" if image else ""
        raise ValueError(f"maps of shape {m.shape} for inputs of shape "
                         f"{np.moveaxis(x, 1, self.channel_axis).shape if image else x.shape}: "
                         f"expected the inputs' shape{spatial}")

    def _targets(self, targets: Any, x: np.ndarray) -> np.ndarray:
        if targets is None:
            return np.argmax(self.outputs(x), axis=-1)
        t = np.asarray(self.backend.to_numpy(targets))
        if t.ndim == 0:
            return np.full(len(x), int(t))
        if len(t) != len(x) or t.ndim > 2:
            raise ValueError(f"targets of shape {t.shape} for {len(x)} inputs: expected an int, "
                             "class indices (N,) or weights (N, n_outputs)")
        if t.ndim == 1 and not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"targets of dtype {t.dtype} and shape {t.shape}: class indices "
                             "must be integers")
        return t

    # --- the model ------------------------------------------------------------------

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs (after the ``activation`` setting) of canonical ``x``."""
        parts = [self._call(x[start:start + self.batch_size])
                 for start in range(0, len(x), self.batch_size)]
        return np.concatenate(parts)

    def scores(self, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The target scores of canonical ``x``, shape ``(N,)``, float64."""
        return self.scores_of(((x, targets),))

    def scores_of(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """The scores of perturbed inputs made lazily, concatenated in order.

        The pieces may have any number of rows (one step's or one draw's samples): they
        are packed into calls of exactly ``batch_size`` rows (the last may be shorter),
        so that a few samples with many steps still make full calls of the model.
        """
        parts = [_pick(self._call(x), targets)
                 for x, targets in _packed(batches, self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _call(self, x: np.ndarray) -> np.ndarray:
        model_x = np.ascontiguousarray(np.moveaxis(x, 1, self.channel_axis)) if x.ndim == 4 else x
        out = self.backend.predict(self.model, model_x, CallOptions())
        if not isinstance(out, np.ndarray):
            raise TypeError(f"the model returned {type(out).__name__}; the metrics need a "
                            "model with one output tensor of shape (N, n_outputs)")
        out = out.reshape(len(x), -1)
        activation = self.settings.get("activation")
        if activation == "softmax":
            shifted = out - out.max(axis=-1, keepdims=True)
            exp = np.exp(shifted)
            out = exp / exp.sum(axis=-1, keepdims=True)
        elif activation == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-out))
        return out


def _packed(batches: Iterable[tuple[np.ndarray, np.ndarray]], size: int
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x, targets)`` pieces of any length regrouped into ``size`` rows, in order; at most
    one call's rows are held besides the current piece."""
    held: list[tuple[np.ndarray, np.ndarray]] = []
    count = 0
    for x, targets in batches:
        start = 0
        while start < len(x):
            take = min(size - count, len(x) - start)
            held.append((x[start:start + take], targets[start:start + take]))
            count += take
            start += take
            if count == size:
                yield _joined(held)
                held, count = [], 0
    if held:
        yield _joined(held)


def _joined(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(pieces) == 1:
        return pieces[0]
    return (np.concatenate([x for x, _ in pieces]),
            np.concatenate([targets for _, targets in pieces]))


def _pick(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if targets.ndim == 2:
        return (outputs * targets).sum(axis=-1).astype(np.float64)
    return outputs[np.arange(len(outputs)), targets].astype(np.float64)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` rows covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _merge(metric: str, presets: Mapping[str, Mapping[str, Any]], preset: str,
           settings: Mapping[str, Any]) -> dict[str, Any]:
    if preset not in presets:
        raise ValueError(f"{metric}: preset={preset!r}; expected one of {sorted(presets)}")
    merged = dict(presets[preset])
    unknown = sorted(set(settings) - set(merged))
    if unknown:
        raise TypeError(f"{metric}: unknown settings {unknown}; its settings are "
                        f"{sorted(merged)}")
    merged.update(settings)
    return merged


def _check_batch_size(batch_size: object) -> int:
    if batch_size is None:
        return _DEFAULT_BATCH
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive int or None")
    return int(batch_size)


def check_choice(metric: str, name: str, value: object, choices: tuple[object, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{metric}: {name}={value!r}; expected one of {list(choices)}")


def baseline_values(x: np.ndarray, baseline: object, *, blur_size: int = 11,
                    blur_sigma: float = 5.0) -> np.ndarray:
    """The replacement values of canonical inputs ``x``, same shape.

    ``baseline`` is a number, ``"min"`` (each sample's smallest value, Quantus's
    "black"), ``"mean"`` (each sample's mean), or ``"blur"`` (a Gaussian blur of each
    image's channels, RISE's insertion start: zero padding, ``blur_size`` taps).
    """
    axes = tuple(range(1, x.ndim))
    if baseline == "min":
        return np.broadcast_to(x.min(axis=axes, keepdims=True), x.shape)
    if baseline == "mean":
        return np.broadcast_to(x.mean(axis=axes, keepdims=True), x.shape)
    if baseline == "blur":
        if x.ndim != 4:
            raise ValueError(f"baseline='blur' needs images (N, C, H, W); inputs are {x.shape}")
        return gaussian_blur(x, blur_size, blur_sigma)
    if isinstance(baseline, (int, float, np.number)) and not isinstance(baseline, bool):
        return np.full_like(x, float(baseline))
    raise ValueError(f"baseline={baseline!r}: expected a number, 'min', 'mean' or 'blur'")


def gaussian_blur(x: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Blur each channel of ``(N, C, H, W)`` with a normalised ``size`` x ``size``
    Gaussian (zero padding, output of the input's size), as RISE's ``gkern``."""
    offsets = np.arange(size) - size // 2
    taps = np.exp(-(offsets ** 2) / (2 * sigma ** 2))
    taps /= taps.sum()
    pad = size // 2
    out = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    for axis in (2, 3):
        length = out.shape[axis] - size + 1
        acc = np.zeros((*out.shape[:axis], length, *out.shape[axis + 1:]))
        index: list[slice] = [slice(None)] * 4
        for tap, weight in enumerate(taps):
            index[axis] = slice(tap, tap + length)
            acc += weight * out[tuple(index)]
        out = acc
    return out.astype(x.dtype)
