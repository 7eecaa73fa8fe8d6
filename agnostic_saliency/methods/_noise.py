"""Seeded Gaussian noise keyed by sample id, shared by SmoothGrad's family and NoiseTunnel.

Noise is drawn in NumPy from ``np.random.default_rng([entropy, sample_id])``: one
stream per sample, keyed by its global id (``run.state["sample_ids"]``), in the
channels-last layout of image inputs (then moved to the input's layout). The same
seed therefore gives the same noise on every backend, for every ``batch_size``,
for channels-first and channels-last twins, and for a data set explained in pieces.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from agnostic_saliency._reduce import is_image
from agnostic_saliency._run import Run

__all__ = ["NoiseScale", "noisy_copies", "standard_normal"]

NoiseScale = Literal["absolute", "relative"]


def noisy_copies(run: Run, seed: int | None, index: int, size: int, noise: float,
                 noise_scale: NoiseScale) -> np.ndarray:
    """The next ``size`` noisy copies of sample ``index`` of ``run``, in the inputs' dtype.

    Each sample's stream continues across calls within one run, so chunking the copies
    does not change them.
    """
    state = run.state
    if "entropy" not in state:
        state["entropy"] = seed if seed is not None else np.random.SeedSequence().entropy
        state["generators"] = {}
    generators = state["generators"]
    if index not in generators:
        stream = int(state["sample_ids"][index])
        generators[index] = np.random.default_rng([state["entropy"], stream])
    sample = run.x[index]
    sigma = noise
    if noise_scale == "relative":
        sigma *= float(sample.max()) - float(sample.min())
    axis = run.layout.channel_axis - 1 if is_image(run.x.ndim) else None
    draws = standard_normal(generators[index], size, sample.shape, axis)
    return (sample + sigma * draws).astype(run.x.dtype, copy=False)


def standard_normal(rng: np.random.Generator, size: int, shape: tuple[int, ...],
                    channel_axis: int | None) -> np.ndarray:
    """``size`` draws of ``shape``, drawn channels-last and moved to ``channel_axis``."""
    if channel_axis is None or channel_axis == len(shape) - 1:
        return rng.standard_normal((size, *shape))
    canonical = shape[:channel_axis] + shape[channel_axis + 1:] + (shape[channel_axis],)
    return np.moveaxis(rng.standard_normal((size, *canonical)), -1, channel_axis + 1)
