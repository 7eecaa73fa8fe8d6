"""What the plots draw, made framework-free: arrays, channel axes, shapes and titles.

Maps and images may be NumPy arrays or any framework's tensors (read through
:func:`agnostic_saliency._duck.as_numpy`). Rank-4 images and maps get their channel
axis from, in order: ``channel_axis``; the explainer that made the maps; the
shapes, where they leave one answer. Images must then have the maps' height and
width: a heat map is never drawn over an image it does not belong to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._duck import as_numpy
from agnostic_saliency._inputs import resolve_channel_axis
from agnostic_saliency._reduce import REDUCERS

__all__ = ["KINDS", "Panels", "as_plot_array", "prepare", "sample_labels"]

KINDS = ("auto", "image", "tabular", "series")
#: Channel counts of images; an axis of another size is not taken for channels.
_CHANNEL_COUNTS = (1, 3, 4)


@dataclass(frozen=True)
class Panels:
    """One plot's data: maps ``(N, H, W)`` (images), ``(N, F)`` or ``(N, T[, F])``."""

    kind: str
    maps: np.ndarray
    images: np.ndarray | None


def as_plot_array(value: Any, name: str) -> np.ndarray:
    """``value`` (NumPy, a list, or any framework's tensor) as a NumPy array."""
    try:
        array = as_numpy(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(messages.plot_not_array(name, type(value).__name__, error)) from None
    if array.dtype.kind not in "biuf":
        problem = TypeError(f"dtype {array.dtype} is not numeric")
        raise TypeError(messages.plot_not_array(name, type(value).__name__, problem))
    return array


def prepare(maps: Any, images: Any, kind: str, channel_axis: int | None, explainer: Any,
            reducer: str, names: Sequence[str] | None) -> Panels:
    """Check ``maps`` and ``images`` against each other and bring them to the drawn form."""
    if kind not in KINDS:
        raise ValueError(messages.bad_choice("kind", kind, KINDS))
    array = as_plot_array(maps, "maps").astype(np.float64)
    if array.ndim < 2:
        raise ValueError(messages.maps_wrong_rank(array.shape, kind))
    if kind == "auto" and array.ndim <= 4:
        kind = "tabular" if array.ndim == 2 else "image"
    inputs = None if images is None else as_plot_array(images, "images")
    if inputs is not None and len(inputs) != len(array):
        raise ValueError(messages.plot_wrong_length("images", len(inputs), len(array)))
    if kind == "image":
        return _image_panels(array, inputs, channel_axis, explainer, reducer)
    if (kind, array.ndim) not in {("tabular", 2), ("series", 2), ("series", 3)}:
        raise ValueError(messages.maps_wrong_rank(array.shape, kind))
    if inputs is not None and inputs.shape != array.shape:
        raise ValueError(messages.inputs_wrong_shape(inputs.shape, array.shape))
    features = array.shape[-1] if kind == "tabular" or array.ndim == 3 else 1
    if names is not None and len(names) != features:
        raise ValueError(messages.plot_wrong_length("feature_names", len(names), features,
                                                    "features"))
    return Panels(kind, array, None if inputs is None else inputs.astype(np.float64))


# --- images ------------------------------------------------------------------------------


def _image_panels(maps: np.ndarray, images: np.ndarray | None, channel_axis: int | None,
                  explainer: Any, reducer: str) -> Panels:
    if maps.ndim not in (3, 4):
        raise ValueError(messages.maps_wrong_rank(maps.shape, "image"))
    if images is not None and images.ndim not in (3, 4):
        raise ValueError(messages.images_wrong_rank(images.shape))
    if channel_axis is not None:
        _check_axis(channel_axis)
    drawn_maps = maps
    if maps.ndim == 4:
        if reducer not in REDUCERS:
            raise ValueError(messages.bad_choice("reducer", reducer, tuple(REDUCERS)))
        spatial = images.shape[1:] if images is not None and images.ndim == 3 else None
        axis = _axis(maps.shape, spatial, channel_axis, explainer)
        drawn_maps = REDUCERS[reducer](np.moveaxis(maps, axis, -1), axis=-1)
    if images is None:
        return Panels("image", drawn_maps, None)
    given = images.shape
    if images.ndim == 4:
        axis = _axis(images.shape, drawn_maps.shape[1:], channel_axis, explainer)
        images = _displayable(np.moveaxis(images, axis, -1))
    if images.shape[1:3] != drawn_maps.shape[1:]:
        raise ValueError(messages.images_do_not_match(given, maps.shape,
                                                      drawn_maps.shape[1:]))
    return Panels("image", drawn_maps, images)


def _axis(shape: tuple[int, ...], spatial: tuple[int, ...] | None, channel_axis: int | None,
          explainer: Any) -> int:
    """The channel axis (1 or 3) of a rank-4 array of ``shape``.

    ``spatial``, the maps' height and width where known, rules out an axis whose
    removal would not leave them.
    """
    if channel_axis is not None:
        return channel_axis % 4
    if explainer is not None:
        return resolve_channel_axis(explainer.channel_axis, explainer.backend.channel_axis,
                                    shape)
    candidates = [axis for axis in (1, 3)
                  if spatial is None or shape[:axis][1:] + shape[axis + 1:] == spatial]
    if not candidates:  # neither layout has the maps' height and width
        return 3
    if len(candidates) == 2:
        candidates = [axis for axis in (1, 3) if shape[axis] in _CHANNEL_COUNTS
                      and shape[4 - axis] not in _CHANNEL_COUNTS]
    if len(candidates) != 1:
        raise ValueError(messages.plot_ambiguous_channels(shape))
    return candidates[0]


def _check_axis(channel_axis: int) -> None:
    if not isinstance(channel_axis, (int, np.integer)) or channel_axis % 4 not in (1, 3) \
            or not -4 <= channel_axis < 4:
        raise ValueError(messages.bad_choice("channel_axis", channel_axis, (1, -1)))


def _displayable(images: np.ndarray) -> np.ndarray:
    """Channels-last images as drawn: 1 channel as grayscale, counts but 3 and 4 as means."""
    if images.shape[-1] == 1:
        return images[..., 0]
    if images.shape[-1] not in (3, 4):
        return images.mean(axis=-1)
    return images


# --- titles ------------------------------------------------------------------------------


def sample_labels(n: int, titles: Sequence[str] | None, targets: Any, predicted: Any,
                  class_names: Sequence[str] | Mapping[int, str] | None
                  ) -> list[str] | None:
    """One label per sample: ``titles``, else the target and predicted classes, or None."""
    if titles is not None:
        if len(titles) != n:
            raise ValueError(messages.plot_wrong_length("titles", len(titles), n))
        return [str(title) for title in titles]
    columns = [(word, _class_indices(value, name, n))
               for word, name, value in (("target", "targets", targets),
                                         ("predicted", "predicted", predicted))
               if value is not None]
    if not columns:
        return None
    return [" | ".join(f"{word}: {_class_name(int(indices[i]), class_names)}"
                       for word, indices in columns) for i in range(n)]


def _class_indices(value: Any, name: str, n: int) -> np.ndarray:
    """Class indices from an int, ``(N,)`` indices, or ``(N, C)`` scores (their argmax)."""
    array = as_plot_array(value, name)
    if array.ndim == 2:
        array = np.argmax(array, axis=1)
    if array.ndim == 0:
        array = np.full(n, array)
    if array.ndim != 1 or len(array) != n or array.dtype.kind not in "iu":
        raise ValueError(messages.plot_bad_classes(name, array.shape, array.dtype, n))
    return array


def _class_name(index: int, names: Sequence[str] | Mapping[int, str] | None) -> str:
    if names is None:
        return str(index)
    if isinstance(names, Mapping):
        return str(names.get(index, index))
    if not 0 <= index < len(names):
        raise ValueError(messages.plot_class_out_of_range(index, len(names)))
    return str(names[index])
