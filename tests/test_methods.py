"""The gradient family in the frontend, checked with the NumPy reference backend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_frontend import CountingBackend

from agnostic_saliency import (
    GradientInput,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    SquareGrad,
    VarGrad,
)
from agnostic_saliency.methods.integrated_gradients import QUADRATURES, quadrature
from agnostic_saliency.testing import NumpyModel, make_spec


def _setup(name: str = "cnn", n: int = 4, seed: int = 0) -> tuple[NumpyModel, np.ndarray]:
    spec = make_spec(name, dtype=np.float64)
    x = np.random.default_rng(seed).normal(size=(n, *spec.input_shape))
    return NumpyModel(spec), x


def _gradient(model: NumpyModel, x: np.ndarray, target: int) -> np.ndarray:
    weights = np.zeros((len(x), model.spec.n_outputs))
    weights[:, target] = 1
    return model.input_gradient(x, weights)


def _noise(seed: int, index: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng([seed, index]).standard_normal((count, *shape))


def test_gradient_input_is_input_times_gradient() -> None:
    model, x = _setup()
    maps = GradientInput(model, reducer=None).explain(x, 1)
    np.testing.assert_allclose(maps, x * _gradient(model, x, 1), rtol=1e-12)
    reduced = GradientInput(model).explain(x, 1)
    np.testing.assert_allclose(reduced, (x * _gradient(model, x, 1)).mean(axis=-1), rtol=1e-12)


def test_smoothgrad_without_noise_is_the_gradient() -> None:
    model, x = _setup()
    maps = SmoothGrad(model, noise=0.0, nb_samples=3, reducer=None).explain(x, 2)
    np.testing.assert_allclose(maps, _gradient(model, x, 2), rtol=1e-12)


@pytest.mark.parametrize(("average", "transform"), [
    ("gradient", lambda g: g), ("absolute", np.abs), ("square", np.square)])
def test_smoothgrad_averages_gradients_at_the_documented_noise(average: str,
                                                               transform: Any) -> None:
    model, x = _setup(n=3)
    maps = SmoothGrad(model, nb_samples=6, noise=0.3, average=average, reducer=None,
                      seed=7).explain(x, 0)
    expected = []
    for i, sample in enumerate(x):
        noisy = sample + 0.3 * _noise(7, i, 6, sample.shape)
        expected.append(transform(_gradient(model, noisy, 0)).mean(axis=0))
    np.testing.assert_allclose(maps, np.array(expected), rtol=1e-10)


def test_relative_noise_scales_with_each_inputs_range() -> None:
    model, x = _setup(n=2)
    x[1] *= 10
    maps = SmoothGrad(model, nb_samples=4, noise=0.1, noise_scale="relative", reducer=None,
                      seed=3).explain(x, 0)
    for i, sample in enumerate(x):
        sigma = 0.1 * (sample.max() - sample.min())
        noisy = sample + sigma * _noise(3, i, 4, sample.shape)
        np.testing.assert_allclose(maps[i], _gradient(model, noisy, 0).mean(axis=0),
                                   rtol=1e-10)


def test_squaregrad_is_mean_of_squared_gradients() -> None:
    model, x = _setup(n=2)
    maps = SquareGrad(model, nb_samples=5, noise=0.2, reducer=None, seed=1).explain(x, 1)
    smooth = SmoothGrad(model, nb_samples=5, noise=0.2, reducer=None, seed=1,
                        average="square").explain(x, 1)
    np.testing.assert_array_equal(maps, smooth)
    assert np.all(maps >= 0)


@pytest.mark.parametrize(("variance_of", "ddof"), [("gradient", 1), ("absolute", 0)])
def test_vargrad_is_the_variance_of_the_gradients(variance_of: str, ddof: int) -> None:
    model, x = _setup(n=2)
    maps = VarGrad(model, nb_samples=7, noise=0.5, variance_of=variance_of, ddof=ddof,
                   reducer=None, seed=2, batch_size=3).explain(x, 1)
    for i, sample in enumerate(x):
        gradients = _gradient(model, sample + 0.5 * _noise(2, i, 7, sample.shape), 1)
        if variance_of == "absolute":
            gradients = np.abs(gradients)
        np.testing.assert_allclose(maps[i], gradients.var(axis=0, ddof=ddof), rtol=1e-8,
                                   atol=1e-15)


def test_vargrad_of_a_linear_model_is_exactly_zero() -> None:
    model, x = _setup("linear_image", n=3)
    maps = VarGrad(model, nb_samples=9, batch_size=4, seed=0).explain(x, 2)
    assert np.all(maps == 0)


@pytest.mark.parametrize("method", [SmoothGrad, SquareGrad, VarGrad, IntegratedGradients])
@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_batch_size_changes_nothing(method: Any, batch_size: int) -> None:
    model, x = _setup(n=3)
    kwargs: dict[str, Any] = {"steps": 11} if method is IntegratedGradients else {
        "nb_samples": 11, "seed": 4}
    reference = method(model, **kwargs).explain(x, 1)
    maps = method(model, batch_size=batch_size, **kwargs).explain(x, 1)
    np.testing.assert_allclose(maps, reference, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("method", [SmoothGrad, IntegratedGradients])
@pytest.mark.parametrize("batch_size", [1, 4, 10, 25])
def test_no_call_exceeds_batch_size_points(method: Any, batch_size: int) -> None:
    model, x = _setup(n=3)
    backend = CountingBackend()
    kwargs = {"steps": 12} if method is IntegratedGradients else {"nb_samples": 12}
    method(model, backend=backend, batch_size=batch_size, **kwargs).explain(x, 1)
    assert max(backend.gradient_batches) <= batch_size
    assert sum(backend.gradient_batches) == 3 * 12


def test_noise_is_drawn_channels_last_for_channels_first_twins() -> None:
    last = NumpyModel(make_spec("cnn", dtype=np.float64))
    first = NumpyModel(make_spec("cnn", layout="channels_first", dtype=np.float64))
    x = np.random.default_rng(0).normal(size=(3, 7, 6, 3))
    maps_last = SmoothGrad(last, nb_samples=5, seed=9).explain(x, 1)
    maps_first = SmoothGrad(first, nb_samples=5, seed=9, channel_axis=1).explain(
        np.moveaxis(x, -1, 1), 1)
    np.testing.assert_allclose(maps_first, maps_last, rtol=1e-10)


def test_seed_makes_noise_reproducible_and_none_draws_fresh_noise() -> None:
    model, x = _setup(n=2)
    seeded = [SmoothGrad(model, nb_samples=3, seed=5).explain(x, 0) for _ in range(2)]
    np.testing.assert_array_equal(*seeded)
    fresh = [SmoothGrad(model, nb_samples=3).explain(x, 0) for _ in range(2)]
    assert not np.array_equal(*fresh)


# --- integrated gradients --------------------------------------------------------------


@pytest.mark.parametrize("name", QUADRATURES)
def test_quadrature_weights_sum_to_one_and_nodes_lie_in_unit_interval(name: str) -> None:
    alphas, weights = quadrature(name, 9)
    total = 8 / 9 if name == "riemann_trapezoid" else 1.0  # Captum's rule, as Captum has it
    assert weights.sum() == pytest.approx(total, abs=1e-12)
    assert np.all((alphas >= 0) & (alphas <= 1))


def test_quadratures_integrate_what_they_should_exactly() -> None:
    cubic = lambda a: 4 * a**3  # noqa: E731 - integral over [0, 1] is 1
    alphas, weights = quadrature("gausslegendre", 2)
    assert np.dot(weights, cubic(alphas)) == pytest.approx(1.0, abs=1e-14)
    alphas, weights = quadrature("trapezoid", 2)
    assert np.dot(weights, 2 * alphas) == pytest.approx(1.0, abs=1e-14)
    alphas, weights = quadrature("riemann_middle", 1)
    assert np.dot(weights, 2 * alphas) == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("name", sorted(set(QUADRATURES) - {"riemann_trapezoid"}))
def test_integrated_gradients_of_a_linear_model_is_input_times_weight(name: str) -> None:
    model, x = _setup("linear_vector", n=3)
    maps = IntegratedGradients(model, quadrature=name, steps=7, baseline_value=0.5).explain(x, 2)
    np.testing.assert_allclose(maps, (x - 0.5) * model.spec.layers[0].weight[:, 2], rtol=1e-10)


@pytest.mark.parametrize(("name", "steps", "tolerance"), [
    ("gausslegendre", 20, 1e-10), ("trapezoid", 400, 1e-5), ("riemann_middle", 400, 1e-5)])
def test_integrated_gradients_completeness(name: str, steps: int, tolerance: float) -> None:
    model, x = _setup("cnn", n=3)
    baseline = np.full(x.shape[1:], 0.25)
    maps = IntegratedGradients(model, steps=steps, quadrature=name, baseline_value=baseline,
                               reducer=None).explain(x, 1)
    expected = model(x)[:, 1] - model(np.broadcast_to(baseline, x.shape))[:, 1]
    np.testing.assert_allclose(maps.reshape(3, -1).sum(axis=1), expected, atol=tolerance)


def test_bad_baseline_shape_is_refused() -> None:
    model, x = _setup()
    with pytest.raises(ValueError, match=r"baseline_value of shape \(2,\) does not broadcast"):
        IntegratedGradients(model, baseline_value=np.zeros(2)).explain(x, 0)


# --- presets and definitions -----------------------------------------------------------


@pytest.mark.parametrize(("method", "preset", "expected"), [
    (Saliency, "xplique", {"reducer": "max", "absolute": True}),
    (Saliency, "captum", {"reducer": None, "absolute": True}),
    (Saliency, "pair", {"reducer": None, "absolute": False}),
    (GradientInput, "captum", {"reducer": None}),
    (SmoothGrad, "xplique", {"nb_samples": 50, "noise": 0.2, "noise_scale": "absolute",
                             "average": "gradient", "reducer": "mean"}),
    (SmoothGrad, "captum", {"nb_samples": 5, "noise": 1.0, "average": "absolute",
                            "reducer": None}),
    (SmoothGrad, "pair", {"nb_samples": 25, "noise": 0.15, "noise_scale": "relative",
                          "average": "square", "reducer": None}),
    (VarGrad, "xplique", {"ddof": 1, "variance_of": "gradient", "reducer": "mean"}),
    (VarGrad, "captum", {"ddof": 0, "variance_of": "absolute", "reducer": None}),
    (IntegratedGradients, "xplique", {"steps": 50, "quadrature": "trapezoid",
                                      "reducer": "mean"}),
    (IntegratedGradients, "captum", {"steps": 50, "quadrature": "gausslegendre",
                                     "reducer": None}),
    (IntegratedGradients, "pair", {"steps": 25, "quadrature": "uniform"}),
])
def test_presets_set_the_libraries_definitions(method: Any, preset: str,
                                               expected: dict[str, Any]) -> None:
    explainer = method(_setup()[0], preset=preset)
    assert {key: getattr(explainer, key) for key in expected} == expected


def test_explicit_arguments_win_over_the_preset() -> None:
    explainer = SmoothGrad(_setup()[0], preset="captum", nb_samples=8, reducer="max")
    assert (explainer.nb_samples, explainer.reducer, explainer.noise) == (8, "max", 1.0)


def test_defaults_are_xpliques() -> None:
    default, xplique = IntegratedGradients(_setup()[0]), IntegratedGradients(
        _setup()[0], preset="xplique")
    assert vars(default).keys() == vars(xplique).keys()
    assert (default.steps, default.quadrature, default.reducer) == (50, "trapezoid", "mean")
    assert Saliency(_setup()[0]).reducer == "max"


@pytest.mark.parametrize(("method", "preset", "match"), [
    (VarGrad, "pair", r"pair has no VarGrad.*pick one of \[xplique, captum\]"),
    (GradientInput, "pair", r"pair has no GradientInput"),
    (Saliency, "shap", r"preset='shap' is not one of \[xplique, captum, pair\]"),
])
def test_unavailable_presets_are_refused(method: Any, preset: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        method(_setup()[0], preset=preset)


@pytest.mark.parametrize(("method", "kwargs", "match"), [
    (SmoothGrad, {"nb_samples": 0}, r"nb_samples=0; pass an int of at least 1"),
    (SmoothGrad, {"noise": -0.1}, r"noise=-0.1; pass a number of at least 0.0"),
    (SmoothGrad, {"noise_scale": "percent"}, r"noise_scale='percent' is not one of"),
    (SmoothGrad, {"average": "median"}, r"average='median' is not one of"),
    (VarGrad, {"nb_samples": 1}, r"nb_samples=1; pass an int of at least 2"),
    (IntegratedGradients, {"quadrature": "simpson"}, r"quadrature='simpson' is not one of"),
    (IntegratedGradients, {"steps": 2.5}, r"steps=2.5; pass an int"),
])
def test_bad_definitions_are_refused(method: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        method(_setup()[0], **kwargs)


def test_sample_offset_continues_the_noise_of_a_larger_set() -> None:
    model, x = _setup(n=5)
    explainer = SmoothGrad(model, nb_samples=3, seed=8)
    whole = explainer.explain(x, 1)
    pieces = [explainer.explain_with_targets(x[start:start + 2], 1, sample_offset=start)[0]
              for start in range(0, 5, 2)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
