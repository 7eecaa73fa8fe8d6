"""Our metrics with preset="quantus" give Quantus's numbers on a PyTorch model.

- PixelFlipping is deterministic: equal curves and areas.
- FaithfulnessCorrelation draws its subsets with ``np.random.choice``: our ``rng="legacy"``
  setting draws the same subsets from ``RandomState(seed)`` in Quantus's order, so with
  ``np.random.seed(seed)`` before Quantus the numbers are equal.
- MPRT re-initialises layers with ``torch.manual_seed`` and ``reset_parameters``, which a
  NumPy draw cannot reproduce: the test hands our ``model_randomization`` the weights
  Quantus draws (its ``init`` argument) and checks the deterministic rest (order of the
  cascade, which layers, absolute maps, Spearman per sample).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from metrics_cases import image_spec, images, pixel_maps, targets

from agnostic_saliency import Saliency
from agnostic_saliency.metrics import Deletion, MuFidelity
from agnostic_saliency.registry import get_backend
from agnostic_saliency.sanity import model_randomization
from agnostic_saliency.testing.builders import build_torch

quantus = pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def case() -> tuple[Any, np.ndarray]:
    return build_torch(image_spec().for_layout("channels_first")), images().transpose(0, 3, 1, 2)


@pytest.mark.parametrize("maps", ["pixel", "input"])
def test_pixel_flipping_matches_quantus(case: tuple[Any, np.ndarray], maps: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Quantus 0.6 integrates with np.trapz, which NumPy 2.4 removed (np.trapezoid stays).
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    model, x = case
    a = pixel_maps() if maps == "pixel" else np.random.default_rng(3).normal(size=x.shape)
    reference = quantus.PixelFlipping(features_in_step=8, disable_warnings=True)
    curves = np.asarray(reference(model=model, x_batch=x, y_batch=targets(),
                                  a_batch=a[:, None] if maps == "pixel" else a,
                                  channel_first=True, device="cpu"))
    metric = Deletion(model, preset="quantus", features_per_step=8)
    ours = metric.curve(x, targets(), a)
    np.testing.assert_allclose(ours.scores, curves, rtol=1e-5, atol=1e-6)
    areas = quantus.PixelFlipping(features_in_step=8, disable_warnings=True,
                                  return_auc_per_sample=True)(
        model=model, x_batch=x, y_batch=targets(), a_batch=a[:, None] if maps == "pixel" else a,
        channel_first=True, device="cpu")
    np.testing.assert_allclose(ours.areas, areas, rtol=1e-5, atol=1e-6)
    assert np.ptp(curves) > 0.05  # the curves move: the comparison checks something


def test_faithfulness_correlation_matches_quantus_with_the_same_subsets(
        case: tuple[Any, np.ndarray]) -> None:
    model, x = case
    a = pixel_maps()
    reference = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=32,
                                                return_aggregate=False, disable_warnings=True)
    np.random.seed(11)  # noqa: NPY002 - Quantus draws from NumPy's global generator
    expected = reference(model=model, x_batch=x, y_batch=targets(), a_batch=a[:, None],
                         channel_first=True, device="cpu")
    metric = MuFidelity(model, preset="quantus", nb_samples=20, subset_size=32, seed=11,
                        batch_size=7)
    np.testing.assert_allclose(metric.evaluate_per_sample(x, targets(), a), expected,
                               rtol=1e-5, atol=1e-6)
    assert np.ptp(expected) > 0.05


def _quantus_draws(model: Any, seed: int) -> Any:
    """``init`` for our test: the weights Quantus's MPRT gives each layer."""
    import torch

    backend = get_backend("torch")
    modules = dict(model.named_modules())

    def init(name: str, weights: list[np.ndarray], rng: np.random.Generator
             ) -> list[np.ndarray]:
        module = copy.deepcopy(modules[name])
        torch.manual_seed(seed + 1)
        module.reset_parameters()
        return backend.layer_weights(module)[0][1]

    return init


def test_model_randomization_matches_quantus_mprt_given_its_weights(
        case: tuple[Any, np.ndarray]) -> None:
    model, x = case

    def explain(model: Any, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        return Saliency(model).explain(inputs, targets)[:, None]

    reference = quantus.MPRT(seed=42, disable_warnings=True)
    expected = reference(model=model, x_batch=x, y_batch=targets(), a_batch=None,
                         explain_func=explain, channel_first=True, device="cpu")
    ours = model_randomization(Saliency(model), x, targets(), init=_quantus_draws(model, 42))
    assert ours.layers == tuple(name for name in expected if name != "original")
    for row, name in enumerate(ours.layers):
        np.testing.assert_allclose(ours.spearman[row], expected[name], rtol=1e-5, atol=1e-6)
