"""Our presets reproduce Captum (PyTorch), Xplique (TensorFlow/Keras) and PAIR on the same models.

Noise-based methods are compared with the same noise: the libraries' Gaussian draws
are replaced, for the duration of a test, by ours (``default_rng([seed, sample])``,
drawn channels-last), in the order each library perturbs its inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import (
    GradientInput,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    SquareGrad,
    VarGrad,
)
from agnostic_saliency.testing import make_spec
from agnostic_saliency.testing.builders import build_keras, build_torch

SEED, N = 3, 4
TARGETS = np.array([0, 1, 2, 1])


def _noise(count: int, channels_first: bool) -> np.ndarray:
    """Our noise for N samples of the 'cnn' spec, sample-major, as both libraries repeat."""
    draws = [np.random.default_rng([SEED, i]).standard_normal((count, 7, 6, 3))
             for i in range(N)]
    noise = np.concatenate(draws)
    return np.moveaxis(noise, -1, 1) if channels_first else noise


def _inputs() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N, 7, 6, 3)).astype(np.float32)


# --- Captum ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_case() -> tuple[Any, Any, np.ndarray]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("captum")
    model = build_torch(make_spec("cnn", layout="channels_first"))
    return torch, model, np.ascontiguousarray(np.moveaxis(_inputs(), -1, 1))


def _captum(torch: Any, explainer: Any, x: np.ndarray, **kwargs: Any) -> np.ndarray:
    inputs = torch.from_numpy(x.copy()).requires_grad_(True)
    attributions = explainer.attribute(inputs, target=torch.from_numpy(TARGETS), **kwargs)
    return attributions.detach().numpy()


def test_saliency_matches_captum(torch_case: tuple[Any, Any, np.ndarray]) -> None:
    from captum.attr import Saliency as CaptumSaliency

    torch, model, x = torch_case
    expected = _captum(torch, CaptumSaliency(model), x)
    ours = Saliency(model, preset="captum").explain(x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)


def test_gradient_input_matches_captum(torch_case: tuple[Any, Any, np.ndarray]) -> None:
    from captum.attr import InputXGradient

    torch, model, x = torch_case
    expected = _captum(torch, InputXGradient(model), x)
    ours = GradientInput(model, preset="captum").explain(x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_left",
                                    "riemann_right", "riemann_middle"])
def test_integrated_gradients_matches_captum(torch_case: tuple[Any, Any, np.ndarray],
                                             method: str) -> None:
    from captum.attr import IntegratedGradients as CaptumIG

    torch, model, x = torch_case
    expected = _captum(torch, CaptumIG(model), x, method=method, n_steps=20)
    ours = IntegratedGradients(model, preset="captum", steps=20,
                               quadrature=method).explain(x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("nt_type", "method"), [("smoothgrad", SmoothGrad),
                                                 ("smoothgrad_sq", SquareGrad),
                                                 ("vargrad", VarGrad)])
def test_noise_tunnel_matches_captum_with_the_same_noise(
        torch_case: tuple[Any, Any, np.ndarray], monkeypatch: pytest.MonkeyPatch,
        nt_type: str, method: Any) -> None:
    from captum.attr import NoiseTunnel
    from captum.attr import Saliency as CaptumSaliency

    torch, model, x = torch_case
    noise = torch.from_numpy(_noise(5, channels_first=True))
    monkeypatch.setattr(torch, "normal", lambda mean, std: noise.to(std.dtype) * std)
    expected = _captum(torch, NoiseTunnel(CaptumSaliency(model)), x, nt_type=nt_type,
                       nt_samples=5, stdevs=1.0)
    monkeypatch.undo()
    ours = method(model, preset="captum", seed=SEED).explain(x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)


# --- Xplique --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_case() -> tuple[Any, Any, np.ndarray]:
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("xplique")
    return tf, build_keras(make_spec("cnn")), _inputs()


def _xplique(method: Any, x: np.ndarray) -> np.ndarray:
    one_hot = np.eye(3, dtype=np.float32)[TARGETS]
    return np.asarray(method.explain(x, one_hot))[..., 0]


@pytest.mark.parametrize(("name", "ours"), [("Saliency", Saliency),
                                            ("GradientInput", GradientInput)])
def test_plain_gradient_methods_match_xplique(keras_case: tuple[Any, Any, np.ndarray],
                                              name: str, ours: Any) -> None:
    from xplique import attributions

    _, model, x = keras_case
    expected = _xplique(getattr(attributions, name)(model), x)
    np.testing.assert_allclose(ours(model, preset="xplique").explain(x, TARGETS), expected,
                               rtol=1e-5, atol=1e-7)


def test_integrated_gradients_matches_xplique(keras_case: tuple[Any, Any, np.ndarray]) -> None:
    from xplique.attributions import IntegratedGradients as XpliqueIG

    _, model, x = keras_case
    expected = _xplique(XpliqueIG(model, steps=30, baseline_value=0.2), x)
    ours = IntegratedGradients(model, steps=30, baseline_value=0.2).explain(x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("name", "method"), [("SmoothGrad", SmoothGrad),
                                              ("SquareGrad", SquareGrad),
                                              ("VarGrad", VarGrad)])
def test_gradient_statistics_match_xplique_with_the_same_noise(
        keras_case: tuple[Any, Any, np.ndarray], monkeypatch: pytest.MonkeyPatch,
        name: str, method: Any) -> None:
    from xplique import attributions
    from xplique.attributions.gradient_statistics import gradient_statistic

    tf, model, x = keras_case
    noise = _noise(8, channels_first=False).astype(np.float32)

    def perturb(inputs: Any, count: int, sigma: float) -> Any:
        return tf.repeat(inputs, repeats=count, axis=0) + sigma * tf.constant(noise)

    monkeypatch.setattr(gradient_statistic.GradientStatistic, "_perturb_samples",
                        staticmethod(perturb))
    expected = _xplique(getattr(attributions, name)(model, nb_samples=8, noise=0.2), x)
    ours = method(model, nb_samples=8, seed=SEED).explain(x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)


# --- PAIR (the `saliency` package) ----------------------------------------------------


@pytest.fixture(scope="module")
def pair_case() -> tuple[Any, Any, np.ndarray]:
    core = pytest.importorskip("saliency.core")
    from agnostic_saliency.testing import NumpyModel

    model = NumpyModel(make_spec("cnn", dtype=np.float64))
    return core, model, _inputs().astype(np.float64)


def _call_model(model: Any, target: int) -> Any:
    """PAIR's call_model_function: input gradients of output ``target`` from our reference."""

    def call(batch: np.ndarray, call_model_args: Any = None, expected_keys: Any = None) -> Any:
        from saliency.core import INPUT_OUTPUT_GRADIENTS

        weights = np.zeros((len(batch), 3))
        weights[:, target] = 1
        return {INPUT_OUTPUT_GRADIENTS: model.input_gradient(np.asarray(batch), weights)}

    return call


def test_saliency_matches_pair(pair_case: tuple[Any, Any, np.ndarray]) -> None:
    core, model, x = pair_case
    expected = np.stack([core.GradientSaliency().GetMask(sample, _call_model(model, int(t)))
                         for sample, t in zip(x, TARGETS, strict=True)])
    np.testing.assert_allclose(Saliency(model, preset="pair").explain(x, TARGETS), expected,
                               rtol=1e-10)


def test_integrated_gradients_matches_pair(pair_case: tuple[Any, Any, np.ndarray]) -> None:
    core, model, x = pair_case
    expected = np.stack([core.IntegratedGradients().GetMask(sample, _call_model(model, int(t)))
                         for sample, t in zip(x, TARGETS, strict=True)])
    ours = IntegratedGradients(model, preset="pair").explain(x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)


def test_smoothgrad_matches_pair_with_the_same_noise(
        pair_case: tuple[Any, Any, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    core, model, x = pair_case
    draws = iter(_noise(25, channels_first=False))
    monkeypatch.setattr(core.base.np.random, "normal",
                        lambda mean, stdev, shape: stdev * next(draws))
    expected = np.stack([core.GradientSaliency().GetSmoothedMask(
        sample, _call_model(model, int(t))) for sample, t in zip(x, TARGETS, strict=True)])
    monkeypatch.undo()
    ours = SmoothGrad(model, preset="pair", seed=SEED).explain(x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-9)
