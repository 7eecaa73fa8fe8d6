"""Sanity checks of saliency methods (Adebayo et al. 2018, "Sanity Checks for Saliency
Maps"), in NumPy around any backend.

- :func:`model_randomization`: re-initialise the model's layers from the output down
  (cascading) or one at a time, on a copy, explain again, and measure how much the maps
  still resemble the original ones. A method whose maps do not change does not depend
  on what the model learned.
- :func:`random_logit`: explain a random other class (Xplique's ``RandomLogitMetric``)
  and measure the resemblance; a class-sensitive method gives dissimilar maps.

Random weights are drawn in NumPy from ``seed`` and the layer's position and canonical
shape (dense ``(in, out)``, convolution ``(*kernel, in, out)``), so the same architecture
in two frameworks gets the same random weights and the same report. Backends list and
set weights through :meth:`BackendBase.layer_weights` and
:meth:`BackendBase.with_layer_weights`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agnostic_saliency._metrics import spearman, ssim, top_k_overlap

__all__ = [
    "RandomLogitReport",
    "RandomizationReport",
    "glorot_weights",
    "model_randomization",
    "random_logit",
]

#: ``init(name, weights, rng) -> new weights``: the random weights of one layer, given
#: its canonical weights and a generator seeded by ``seed`` and the layer's position.
Init = Callable[[str, list[np.ndarray], np.random.Generator], list[np.ndarray]]


@dataclass(frozen=True)
class RandomizationReport:
    """Similarity of each randomised model's maps to the original maps.

    Attributes
    ----------
    layers
        The layers, output first. With ``cascade`` the row of a layer randomises it and
        every layer above it; otherwise that layer alone.
    cascade
        Whether the randomisation cascaded.
    spearman, ssim, top_k_overlap
        Per layer and sample, shape ``(L, N)``: Spearman rank correlation, SSIM, and the
        overlap of the ``top_k`` fraction of largest positions (see
        :mod:`agnostic_saliency.compare`).
    top_k
        The fraction of :attr:`top_k_overlap`.
    absolute
        Whether the maps were compared by magnitude.
    """

    layers: tuple[str, ...]
    cascade: bool
    spearman: np.ndarray
    ssim: np.ndarray
    top_k_overlap: np.ndarray
    top_k: float
    absolute: bool

    def summary(self) -> dict[str, np.ndarray]:
        """Mean over the samples of each measure, per layer (NaN Spearman samples, of
        constant maps, skipped)."""
        with np.errstate(all="ignore"):
            rank = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan
                             for r in self.spearman])
        return {"spearman": rank, "ssim": self.ssim.mean(axis=1),
                "top_k_overlap": self.top_k_overlap.mean(axis=1)}

    def __str__(self) -> str:
        summary = self.summary()
        width = max([5, *map(len, self.layers)])
        lines = [f"{'layer':<{width}}  spearman      ssim  top-k({self.top_k:g})"]
        for i, name in enumerate(self.layers):
            lines.append(f"{name:<{width}}  {summary['spearman'][i]:8.4f}  "
                         f"{summary['ssim'][i]:8.4f}  {summary['top_k_overlap'][i]:8.4f}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RandomLogitReport:
    """Similarity of the maps of a random other class to the original maps.

    Attributes
    ----------
    classes, off_classes
        The class explained first and the random other class, per sample ``(N,)``.
    ssim, spearman, top_k_overlap
        Per sample, shape ``(N,)``.
    """

    classes: np.ndarray
    off_classes: np.ndarray
    ssim: np.ndarray
    spearman: np.ndarray
    top_k_overlap: np.ndarray

    @property
    def score(self) -> float:
        """Mean SSIM over the samples (Xplique's value; lower is better)."""
        return float(self.ssim.mean())


def model_randomization(explainer: Any, inputs: Any, targets: Any = None, *,
                        cascade: bool = True, seed: int = 0, absolute: bool = True,
                        top_k: float = 0.1, init: Init | None = None,
                        layers: Sequence[str] | None = None) -> RandomizationReport:
    """Model parameter randomisation test (Adebayo et al. 2018).

    Parameters
    ----------
    explainer
        A :class:`~agnostic_saliency.explainer.GradientExplainer`; its model is never
        changed: every randomised model is a copy (``backend.with_layer_weights``).
    inputs, targets
        As for ``explainer.explain``. ``None`` targets explain the original model's
        predicted class, and the randomised models explain that same class.
    cascade
        Randomise from the output down, keeping the layers above randomised (True), or
        one layer at a time (False).
    seed
        Seed of the random weights; layer ``i`` (counted from the input) draws from
        ``numpy.random.default_rng([seed, i])``.
    absolute
        Compare ``|maps|`` (Adebayo et al.'s main figures; Quantus's MPRT default).
    top_k
        Fraction of positions of the top-k overlap.
    init
        ``init(name, weights, rng) -> weights`` instead of :func:`glorot_weights`.
    layers
        Names of the layers to randomise, of those the backend lists; ``None`` for all.

    Returns
    -------
    RandomizationReport
    """
    backend, model = explainer.backend, explainer.model
    listed = backend.layer_weights(model)
    names = [name for name, _ in listed]
    chosen = _chosen_layers(names, layers)
    original, targets = _explain(explainer, inputs, targets)
    draw = init or glorot_weights
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    randomised: dict[str, list[np.ndarray]] = {}
    for index in reversed(range(len(listed))):
        name, weights = listed[index]
        if name not in chosen:
            continue
        new = [np.asarray(w, dtype=np.asarray(old).dtype) for w, old in
               zip(draw(name, weights, np.random.default_rng([seed, index])), weights,
                   strict=True)]
        randomised = {**randomised, name: new} if cascade else {name: new}
        clone = copy.copy(explainer)  # fresh caches, same settings
        clone.model = backend.with_layer_weights(model, randomised)
        maps = clone.explain(inputs, targets)
        rows.append(_similarities(original, maps, absolute, top_k, _map_axis(explainer)))
    order = tuple(name for name in reversed(names) if name in chosen)
    rank, structure, overlap = (np.stack(r) for r in zip(*rows, strict=True))
    return RandomizationReport(order, cascade, rank, structure, overlap, top_k, absolute)


def random_logit(explainer: Any, inputs: Any, targets: Any = None, *, seed: int = 0,
                 top_k: float = 0.1) -> RandomLogitReport:
    """Random logit test (Sixt et al. 2020; Xplique's ``RandomLogitMetric``).

    Each sample is explained for its class and for another class drawn uniformly from
    the others (``numpy.random.default_rng(seed)``); the report compares the two maps
    as they are (signed).

    Parameters
    ----------
    explainer
        A :class:`~agnostic_saliency.explainer.GradientExplainer` of a model with
        several outputs.
    inputs, targets
        As for ``explainer.explain``; ``None`` for the predicted classes, and weights
        ``(N, n_outputs)`` (one-hot rows) give the class of their largest weight.
    """
    outputs = np.asarray(explainer.predict(inputs))
    n, classes = len(outputs), outputs.reshape(len(outputs), -1).shape[1]
    if classes < 2:
        raise ValueError(f"random_logit needs a model with several outputs; this one has "
                         f"{classes}")
    true = _class_indices(targets, outputs)
    rnd = np.random.default_rng(seed).integers(0, classes - 1, size=n)
    off = np.where(rnd >= true, rnd + 1, rnd)
    original = explainer.explain(inputs, true)
    other = explainer.explain(inputs, off)
    rank, structure, overlap = _similarities(original, other, False, top_k,
                                             _map_axis(explainer))
    return RandomLogitReport(true, off, structure, rank, overlap)


def glorot_weights(name: str, weights: list[np.ndarray], rng: np.random.Generator
                   ) -> list[np.ndarray]:
    """Random weights of one layer from their canonical shapes.

    Arrays of rank 2 or more (kernels, ``(*receptive, in, out)``) are drawn from Glorot's
    uniform distribution, ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``; vectors
    (biases, scales) from ``U(-b, b)`` with ``b = 1 / sqrt(fan_in)`` of the layer's
    kernel (PyTorch's bias initialisation), or of their own length without a kernel.
    """
    kernel = next((w for w in weights if np.ndim(w) >= 2), None)
    layer_fan_in = _fans(np.shape(kernel))[0] if kernel is not None else None
    new = []
    for w in weights:
        shape = np.shape(w)
        if len(shape) >= 2:
            fan_in, fan_out = _fans(shape)
            limit = np.sqrt(6.0 / (fan_in + fan_out))
        else:
            limit = 1.0 / np.sqrt(layer_fan_in or max(int(np.prod(shape)), 1))
        new.append(rng.uniform(-limit, limit, size=shape))
    return new


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def _chosen_layers(names: list[str], layers: Sequence[str] | None) -> set[str]:
    if not names:
        raise ValueError("the model has no layers with trainable weights to randomise")
    if layers is None:
        return set(names)
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ValueError(f"layers {unknown} are not among the model's layers {names}")
    return set(layers)


def _explain(explainer: Any, inputs: Any, targets: Any) -> tuple[np.ndarray, Any]:
    """The original maps, and the targets that the randomised models explain."""
    maps, indices = explainer.explain_with_targets(inputs, targets)
    return maps, (indices if targets is None and indices is not None else targets)


def _class_indices(targets: Any, outputs: np.ndarray) -> np.ndarray:
    if targets is None:
        return np.argmax(outputs.reshape(len(outputs), -1), axis=1)
    t = np.asarray(targets)
    if t.ndim == 0:
        return np.full(len(outputs), int(t))
    if t.ndim == 2:
        return np.argmax(t, axis=1)
    return t.astype(np.int64)


def _map_axis(explainer: Any) -> int:
    axis = explainer.channel_axis
    return int(explainer.backend.channel_axis if axis is None else axis)


def _similarities(a: np.ndarray, b: np.ndarray, absolute: bool, top_k: float,
                  channel_axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if absolute:
        a, b = np.abs(a), np.abs(b)
    if a.ndim == 4:  # input-shaped image maps: channels last for SSIM
        a, b = np.moveaxis(a, channel_axis, -1), np.moveaxis(b, channel_axis, -1)
    return spearman(a, b), ssim(a, b), top_k_overlap(np.abs(a), np.abs(b), top_k)
