"""Our metrics with preset="xplique" give Xplique's numbers on a Keras model (TF backend)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from metrics_cases import CLASSES, image_spec, images, pixel_maps, targets

from agnostic_saliency.metrics import (
    AverageDrop,
    AverageIncrease,
    Deletion,
    Insertion,
    MuFidelity,
)
from agnostic_saliency.testing.builders import build_keras

xplique_metrics = pytest.importorskip("xplique.metrics")


@pytest.fixture(scope="module")
def model() -> Any:
    return build_keras(image_spec())


def _one_hot() -> np.ndarray:
    return np.eye(CLASSES, dtype=np.float32)[targets()]


@pytest.mark.parametrize("ours, theirs", [(Deletion, "Deletion"), (Insertion, "Insertion")])
@pytest.mark.parametrize("settings", [
    {},
    {"steps": 7, "baseline": 0.3, "max_fraction": 0.6},
    {"steps": -1, "activation": "softmax", "max_fraction": 0.25},
])
def test_causal_metrics_match_xplique(model: Any, ours: Any, theirs: str,
                                      settings: dict[str, Any]) -> None:
    x, maps = images(), pixel_maps()
    kwargs = {"steps": settings.get("steps", 10),
              "baseline_mode": settings.get("baseline", 0.0),
              "max_percentage_perturbed": settings.get("max_fraction", 1.0),
              "activation": settings.get("activation")}
    reference = getattr(xplique_metrics, theirs)(model, x, _one_hot(), batch_size=16, **kwargs)
    ours_settings = dict(settings)
    if ours_settings.get("steps") == -1:  # Xplique's "every step": one pixel per step
        ours_settings.update(steps=None, features_per_step=1)
    metric = ours(model, preset="xplique", batch_size=16, **ours_settings)
    np.testing.assert_allclose(metric.evaluate(x, targets(), maps), reference.evaluate(maps),
                               rtol=1e-5, atol=1e-6)
    curve = metric.curve(x, targets(), maps)
    expected = reference.detailed_evaluate(maps)
    np.testing.assert_array_equal(curve.counts, list(expected))
    np.testing.assert_allclose(curve.mean, list(expected.values()), rtol=1e-5, atol=1e-6)


def test_causal_metrics_match_xplique_with_channel_maps(model: Any) -> None:
    x = images()
    maps = np.random.default_rng(5).normal(size=x.shape)  # channels averaged by both
    reference = xplique_metrics.Deletion(model, x, _one_hot(), steps=5)
    ours = Deletion(model, steps=5).evaluate(x, _one_hot(), maps)
    np.testing.assert_allclose(ours, reference.evaluate(maps), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ours, theirs", [(AverageDrop, "AverageDropMetric"),
                                          (AverageIncrease, "AverageIncreaseMetric")])
@pytest.mark.parametrize("activation", [None, "softmax"])
@pytest.mark.parametrize("channels", [False, True])
def test_average_metrics_match_xplique(model: Any, ours: Any, theirs: str,
                                       activation: str | None, channels: bool) -> None:
    x = images()
    maps = (np.random.default_rng(6).normal(size=x.shape) if channels else pixel_maps())
    reference = getattr(xplique_metrics, theirs)(model, x, _one_hot(), batch_size=4,
                                                 activation=activation)
    value = ours(model, activation=activation, batch_size=3).evaluate(x, targets(), maps)
    expected = reference.evaluate(maps.astype(np.float32))
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_average_increase_is_not_trivial(model: Any) -> None:
    """The maps above give a fraction strictly between 0 and 1 for one setting at least,
    so that the comparison with Xplique checks something."""
    x = images()
    maps = (pixel_maps(), -pixel_maps(), np.abs(pixel_maps()))
    values = {AverageIncrease(model, activation=a).evaluate(x, targets(), m)
              for a in (None, "softmax") for m in maps}
    assert any(0 < v < 1 for v in values)


@pytest.mark.parametrize("grid, maps_kind", [(3, "pixel"), (5, "input"), (None, "pixel")])
def test_mufidelity_matches_xplique_given_the_same_random_cells(
        model: Any, monkeypatch: pytest.MonkeyPatch, grid: int | None, maps_kind: str) -> None:
    """Xplique draws its cells with ``tf.random.uniform``, which NumPy cannot reproduce: the
    test hands Xplique the cells that our ``rng="numpy"`` draws (one call of shape
    ``(nb_samples, cells)`` when its batch holds every perturbation)."""
    import tensorflow as tf

    x, nb = images(), 12
    maps = pixel_maps() if maps_kind == "pixel" else np.random.default_rng(7).normal(size=x.shape)
    cells = (grid or x.shape[1]) ** 2
    ours = np.random.default_rng(5).uniform(size=(nb, cells))
    monkeypatch.setattr(tf.random, "uniform",
                        lambda shape, *a, **k: tf.constant(ours.astype(np.float32)))
    reference = xplique_metrics.MuFidelity(model, x, _one_hot(), batch_size=len(x) * nb,
                                           grid_size=grid, nb_samples=nb)
    expected = reference.evaluate(maps.astype(np.float32))
    monkeypatch.undo()
    metric = MuFidelity(model, grid_size=grid, nb_samples=nb, seed=5)
    np.testing.assert_allclose(metric.evaluate(x, targets(), maps), expected, rtol=1e-5,
                               atol=1e-6)
    assert abs(expected) > 1e-3  # not the 0 of constant (degenerate) samples
