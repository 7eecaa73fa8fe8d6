"""The same seeded weights in every framework give the same maps (float32 tolerance).

PyTorch gets channels-first inputs, the others channels-last; maps are compared
after the channel reduction, so this also checks the channel-axis handling.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import (
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    VarGrad,
    compare,
)
from agnostic_saliency.testing import NumpyModel, make_spec
from agnostic_saliency.testing.builders import BUILDERS

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax")
pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("keras")
pytest.importorskip("jax")


def _explain(framework: str, method: Any, name: str, x: np.ndarray, targets: np.ndarray,
             **kwargs: Any) -> np.ndarray:
    build, layout, backend = BUILDERS[framework]
    model = build(make_spec(name, layout=layout))  # type: ignore[arg-type]
    inputs = np.ascontiguousarray(np.moveaxis(x, -1, 1)) if layout == "channels_first" else x
    maps = method(model, backend=backend, **kwargs).explain(inputs, targets)
    if kwargs.get("reducer", "max") is None and layout == "channels_first":
        maps = np.moveaxis(maps, 1, -1)
    return maps


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return rng.normal(size=(6, 7, 6, 3)).astype(np.float32), rng.integers(0, 3, 6)


@pytest.mark.parametrize("name", ["cnn", "cnn_flatten"])
def test_saliency_maps_agree_across_frameworks_and_with_the_exact_map(
        name: str, images: tuple[np.ndarray, np.ndarray]) -> None:
    spec = make_spec(name)
    targets = images[1]
    x = np.random.default_rng(3).normal(size=(6, *spec.input_shape)).astype(np.float32)
    exact = NumpyModel(spec.cast(np.float64)).input_gradient(x.astype(np.float64),
                                                             np.eye(3)[targets])
    expected = np.abs(exact).max(axis=-1)
    maps = {framework: _explain(framework, Saliency, name, x, targets)
            for framework in FRAMEWORKS}
    for framework, values in maps.items():
        np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-6 * expected.max(),
                                   err_msg=framework)
    report = compare(maps)
    assert all(row.spearman > 0.999 and row.relative_error < 1e-4 for row in report.rows)


@pytest.mark.parametrize(("method", "kwargs"), [
    (SmoothGrad, {"nb_samples": 6, "noise": 0.3, "seed": 5, "reducer": None}),
    (VarGrad, {"nb_samples": 6, "noise": 0.3, "seed": 5, "batch_size": 4}),
    (IntegratedGradients, {"steps": 16, "quadrature": "gausslegendre", "reducer": None}),
])
def test_gradient_family_agrees_across_frameworks_with_one_seed(
        method: Any, kwargs: dict[str, Any], images: tuple[np.ndarray, np.ndarray]) -> None:
    x, targets = images
    maps = {framework: _explain(framework, method, "cnn", x, targets, **kwargs)
            for framework in FRAMEWORKS}
    reference = NumpyModel(make_spec("cnn", dtype=np.float64))
    expected = method(reference, **kwargs).explain(x.astype(np.float64), targets)
    scale = float(np.abs(expected).max())
    for framework, values in maps.items():
        np.testing.assert_allclose(values, expected, rtol=2e-4, atol=2e-5 * scale,
                                   err_msg=framework)
