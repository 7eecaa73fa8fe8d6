"""Metrics: analytic cases on linear models, the same numbers in every framework, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from metrics_cases import image_spec, images, linear_spec, pixel_maps, targets

from agnostic_saliency.metrics import (
    AverageDrop,
    AverageIncrease,
    Deletion,
    Insertion,
    MuFidelity,
)
from agnostic_saliency.testing import NumpyModel, ReferenceBackend
from agnostic_saliency.testing.builders import (
    build_jax_function,
    build_keras,
    build_tensorflow,
    build_torch,
)


def _linear_case(n: int = 6, features: int = 12) -> tuple[Any, np.ndarray, np.ndarray,
                                                           np.ndarray]:
    """A linear PyTorch model, inputs, targets and exact gradient x input maps."""
    spec = linear_spec(features=features)
    x = np.random.default_rng(4).normal(size=(n, features)).astype(np.float32)
    t = np.arange(n) % 3
    contributions = x * spec.dense(0).weight[:, t].T
    return build_torch(spec), x, t, contributions


# --- analytic ---------------------------------------------------------------------------


def test_deletion_removes_the_true_contributions_in_their_order() -> None:
    model, x, t, contributions = _linear_case()
    curve = Deletion(model, steps=None, features_per_step=1).curve(x, t, contributions)
    base = model(__import__("torch").from_numpy(x)).detach().numpy()[np.arange(len(x)), t]
    ordered = -np.sort(-contributions, axis=1)  # largest first
    removed = np.concatenate([np.zeros((len(x), 1)), np.cumsum(ordered, axis=1)], axis=1)
    np.testing.assert_allclose(curve.scores, base[:, None] - removed, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(curve.counts, np.arange(13))


@pytest.mark.parametrize("seed", range(5))
def test_true_maps_beat_random_maps_on_deletion_and_insertion(seed: int) -> None:
    """Deleting the largest contributions first gives the lowest score after every step,
    so no map has a lower Deletion area (or a higher Insertion area) than the true one."""
    model, x, t, contributions = _linear_case()
    random = np.random.default_rng(seed).normal(size=contributions.shape)
    for metric, better in ((Deletion, np.less), (Insertion, np.greater)):
        m = metric(model, steps=None, features_per_step=1)
        true = m.evaluate_per_sample(x, t, contributions)
        other = m.evaluate_per_sample(x, t, random)
        assert np.all(better(true, other) | np.isclose(true, other))
        assert better(true.mean(), other.mean())


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
@pytest.mark.parametrize("subsets", [{"subset_fraction": 0.3, "subset_size": None},
                                     {"subset_fraction": None, "subset_size": 4}])
def test_mufidelity_of_exact_maps_on_a_linear_model_is_one(
        correlation: str, subsets: dict[str, Any]) -> None:
    model, x, t, contributions = _linear_case()
    metric = MuFidelity(model, correlation=correlation, nb_samples=30, **subsets)
    np.testing.assert_allclose(metric.evaluate_per_sample(x, t, contributions), 1.0, atol=1e-5)
    np.testing.assert_allclose(metric.evaluate(x, t, -contributions), -1.0, atol=1e-5)


def test_mufidelity_on_images_with_a_grid_sums_each_pixels_channels() -> None:
    from agnostic_saliency.testing.models import make_spec

    spec = make_spec("linear_image")  # flatten + dense on 6x5x3 images
    x = np.random.default_rng(0).normal(size=(4, 6, 5, 3)).astype(np.float32)
    t = np.array([0, 1, 2, 3])
    maps = x * spec.dense(1).weight[:, t].T.reshape(4, 6, 5, 3)
    model = build_torch(spec.for_layout("channels_first"))
    for grid in (3, None):
        metric = MuFidelity(model, correlation="pearson", nb_samples=25, grid_size=grid)
        value = metric.evaluate(x.transpose(0, 3, 1, 2), t, maps.transpose(0, 3, 1, 2))
        np.testing.assert_allclose(value, 1.0, atol=1e-5)


# --- one answer in every framework ------------------------------------------------------

FRAMEWORKS = {
    "torch": lambda spec: build_torch(spec.for_layout("channels_first")),
    "keras": build_keras,
    "tensorflow": build_tensorflow,
    "jax": build_jax_function,
    "reference": NumpyModel,  # the NumPy backend registered as a plugin (entry point)
}
METRICS = [
    (Deletion, {}), (Insertion, {}), (Deletion, {"preset": "quantus", "features_per_step": 16}),
    (Insertion, {"preset": "rise", "features_per_step": 8}),
    (MuFidelity, {"nb_samples": 20}),
    (MuFidelity, {"preset": "quantus", "nb_samples": 20, "subset_size": 40}),
    (AverageDrop, {}), (AverageIncrease, {"activation": "softmax"}),
]


@pytest.fixture(scope="module")
def values() -> dict[str, list[float]]:
    results = {}
    for name, build in FRAMEWORKS.items():
        model = build(image_spec())
        x = images().transpose(0, 3, 1, 2) if name == "torch" else images()
        backend = name if name in ("jax", "reference") else None
        results[name] = [metric(model, backend=backend, **settings).evaluate(x, targets(),
                                                                             pixel_maps())
                         for metric, settings in METRICS]
    return results


@pytest.mark.parametrize("framework", ["keras", "tensorflow", "jax", "reference"])
def test_every_framework_gives_the_same_values(values: dict[str, list[float]],
                                               framework: str) -> None:
    np.testing.assert_allclose(values[framework], values["torch"], rtol=1e-5, atol=1e-6)


def test_the_values_are_not_trivial(values: dict[str, list[float]]) -> None:
    assert len(set(np.round(values["torch"], 6))) >= 6


# --- memory bound, tensors, presets, errors ---------------------------------------------


def test_chunk_size_does_not_change_the_numbers() -> None:
    model = build_torch(image_spec().for_layout("channels_first"))
    x = images().transpose(0, 3, 1, 2)
    for metric, settings in ((Deletion, {}), (MuFidelity, {"nb_samples": 10})):
        one, many = (metric(model, batch_size=b, **settings).evaluate(x, targets(), pixel_maps())
                     for b in (3, 64))
        assert one == pytest.approx(many, rel=1e-6)


def test_framework_tensors_are_taken_as_they_are() -> None:
    import torch

    model = build_torch(image_spec().for_layout("channels_first"))
    x = np.ascontiguousarray(images().transpose(0, 3, 1, 2))
    expected = Deletion(model).evaluate(x, targets(), pixel_maps())
    value = Deletion(model).evaluate(torch.from_numpy(x), torch.from_numpy(targets()),
                                     torch.from_numpy(pixel_maps()))
    assert value == pytest.approx(expected, rel=1e-12)


def test_none_targets_take_the_predicted_class() -> None:
    model, x, _, contributions = _linear_case()
    predicted = model(__import__("torch").from_numpy(x)).argmax(1).numpy()
    assert Deletion(model).evaluate(x, None, contributions) == pytest.approx(
        Deletion(model).evaluate(x, predicted, contributions))


def test_presets_set_the_settings_that_differ() -> None:
    model, *_ = _linear_case()
    assert Deletion(model).settings["steps"] == 10
    quantus = Deletion(model, preset="quantus").settings
    assert quantus["features_per_step"] == 1 and quantus["area"] == "trapezoid"
    assert Insertion(model, preset="rise").settings["baseline"] == "blur"
    assert MuFidelity(model, preset="quantus").settings["correlation"] == "pearson"


@pytest.mark.parametrize("make, match", [
    (lambda m: Deletion(m, preset="captum"), "preset='captum'"),
    (lambda m: Deletion(m, step=3), "unknown settings \\['step'\\]"),
    (lambda m: Deletion(m, features_per_step=2), "exactly one of steps"),
    (lambda m: MuFidelity(m, correlation="kendall"), "correlation='kendall'"),
    (lambda m: Deletion(m, batch_size=0), "batch_size=0"),
])
def test_bad_settings_are_named(make: Any, match: str) -> None:
    model, *_ = _linear_case()
    with pytest.raises((ValueError, TypeError), match=match):
        make(model)


def test_maps_of_the_wrong_shape_are_named() -> None:
    model, x, t, contributions = _linear_case()
    with pytest.raises(ValueError, match=r"maps of shape \(6, 11\) for inputs of shape \(6, 12\)"):
        Deletion(model).evaluate(x, t, contributions[:, :11])
    with pytest.raises(ValueError, match="5 maps for 6 inputs"):
        Deletion(model).evaluate(x, t, contributions[:5])
    bad = contributions.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"samples \[3\]"):
        MuFidelity(model).evaluate(x, t, bad)


def test_metrics_and_sanity_import_no_framework() -> None:
    import subprocess
    import sys

    code = ("import sys, agnostic_saliency.metrics, agnostic_saliency.sanity, "
            "agnostic_saliency._cli_evaluate, agnostic_saliency._plot_metrics\n"
            "print(sorted({'torch', 'tensorflow', 'jax', 'keras', 'flax'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "[]"


class _Recording(ReferenceBackend):
    """The reference backend, recording the batch sizes the metrics call it with."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def predict(self, model: Any, inputs: np.ndarray, options: Any) -> Any:
        self.sizes.append(len(inputs))
        return super().predict(model, inputs, options)


@pytest.mark.parametrize("metric, settings", [
    (Deletion, {"preset": "quantus", "features_per_step": 4}),
    (Insertion, {}),
    (MuFidelity, {"nb_samples": 9}),
    (MuFidelity, {"preset": "quantus", "nb_samples": 9, "subset_size": 10}),
    (AverageDrop, {}),
])
def test_the_model_never_sees_more_than_batch_size_inputs(metric: Any,
                                                          settings: dict[str, Any]) -> None:
    backend = _Recording()
    value = metric(NumpyModel(image_spec()), backend=backend, batch_size=5,
                   **settings).evaluate(images(), targets(), pixel_maps())
    assert np.isfinite(value)
    assert max(backend.sizes) == 5 and len(backend.sizes) > 2


@pytest.mark.parametrize("metric, settings, calls", [
    # 8 samples x 11 steps = 88 rows; 8 x 6 steps (192 elements, 32 a step) = 48 rows;
    # MuFidelity: 8 base rows, then 8 x 9 draws = 72 rows
    (Deletion, {}, [5] * 17 + [3]),
    (Insertion, {"preset": "quantus", "features_per_step": 32}, [5] * 9 + [3]),
    (MuFidelity, {"nb_samples": 9}, [5, 3] + [5] * 14 + [2]),
])
def test_calls_are_full_across_steps_and_draws(metric: Any, settings: dict[str, Any],
                                               calls: list[int]) -> None:
    backend = _Recording()
    metric(NumpyModel(image_spec()), backend=backend, batch_size=5,
           **settings).evaluate(images(), targets(), pixel_maps())
    assert backend.sizes == calls


@pytest.mark.parametrize("metric, settings", [
    (Deletion, {}),
    (Insertion, {"preset": "quantus", "features_per_step": 16}),
    (Deletion, {"preset": "rise", "features_per_step": 8}),
    (MuFidelity, {"nb_samples": 9}),
    (MuFidelity, {"preset": "quantus", "nb_samples": 9, "subset_size": 10}),
    (AverageDrop, {"activation": "softmax"}),
])
def test_batch_sizes_1_7_and_none_give_the_same_numbers(metric: Any,
                                                        settings: dict[str, Any]) -> None:
    """Rows packed across steps and draws land on their own sample and step."""
    model = NumpyModel(image_spec())
    values = [metric(model, backend=ReferenceBackend(), batch_size=size, **settings)
              .evaluate_per_sample(images(), targets(), pixel_maps()) for size in (1, 7, None)]
    assert np.ptp(values[0]) > 1e-3  # the samples differ: a shuffled row would show
    for other in values[1:]:  # float32 sums differ in the last bits with the batch's size
        np.testing.assert_allclose(other, values[0], rtol=1e-5, atol=1e-6)
    if metric in (Deletion, Insertion):
        curves = [metric(model, backend=ReferenceBackend(), batch_size=size, **settings)
                  .curve(images(), targets(), pixel_maps()).scores for size in (1, 7)]
        np.testing.assert_allclose(curves[1], curves[0], rtol=1e-6, atol=1e-7)


def test_keras_predictions_through_the_graph_equal_the_eager_call() -> None:
    """The Keras backend (TensorFlow) predicts through a cached graph: its outputs equal the
    eager call for every batch size, use weights changed after the first call, and a model
    that cannot be traced is called eagerly."""
    import keras

    from agnostic_saliency.backend import CallOptions
    from agnostic_saliency.registry import get_backend

    backend = get_backend("keras")
    model = build_keras(image_spec())
    x = images()
    for rows in (8, 3, 1):
        np.testing.assert_allclose(backend.predict(model, x[:rows], CallOptions()),
                                   np.asarray(model(x[:rows], training=False)),
                                   rtol=1e-6, atol=1e-7)
    kernel = model.layers[-1].kernel
    kernel.assign(np.asarray(kernel) * 2.0)
    np.testing.assert_allclose(backend.predict(model, x, CallOptions()),
                               np.asarray(model(x, training=False)), rtol=1e-6, atol=1e-7)

    class Eager(keras.layers.Layer):
        def call(self, inputs: Any) -> Any:
            return inputs * float(np.asarray(inputs).max())  # needs a value: not traceable

    eager = keras.Sequential([keras.Input((4,)), Eager()])
    v = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(backend.predict(eager, v, CallOptions()), v * 7.0)
