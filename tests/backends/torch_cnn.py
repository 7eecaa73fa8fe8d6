"""A small PyTorch CNN with its exact maps, shared by the PyTorch backend's tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency.testing import make_spec
from agnostic_saliency.testing.builders import build_torch
from agnostic_saliency.testing.reference import NumpyModel

#: The class explained for each of the CNN's four samples.
TARGETS = [0, 1, 2, 1]


def small_cnn() -> tuple[Any, np.ndarray, np.ndarray]:
    """A channels-first CNN, four inputs, and their maps for :data:`TARGETS`
    (max over channels of |gradient|, from the float64 NumPy reference model)."""
    spec = make_spec("cnn", layout="channels_first")
    x = np.random.default_rng(0).normal(size=(4, 3, 7, 6)).astype(np.float32)
    reference = NumpyModel(spec.cast(np.float64))
    gradient = reference.input_gradient(x.astype(np.float64), np.eye(3)[TARGETS])
    return build_torch(spec), x, np.abs(gradient).max(axis=1)
