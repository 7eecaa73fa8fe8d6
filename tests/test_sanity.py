"""Sanity checks: model randomisation and random logit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from metrics_cases import build_nnx, image_spec, images, linear_spec, targets

from agnostic_saliency import Saliency
from agnostic_saliency._metrics import spearman, ssim, top_k_overlap
from agnostic_saliency.sanity import glorot_weights, model_randomization, random_logit
from agnostic_saliency.testing.builders import build_keras, build_torch


def _torch_case() -> tuple[Any, np.ndarray]:
    return build_torch(image_spec().for_layout("channels_first")), images().transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def reports() -> dict[str, Any]:
    """The cascading report of the same model in PyTorch, Keras and Flax NNX."""
    torch_model, x_first = _torch_case()
    cases = {"torch": (torch_model, x_first), "keras": (build_keras(image_spec()), images()),
             "jax": (build_nnx(image_spec()), images())}
    return {name: model_randomization(Saliency(model), x, targets(), seed=3)
            for name, (model, x) in cases.items()}


@pytest.mark.parametrize("framework", ["keras", "jax"])
def test_the_same_model_gives_the_same_report_in_every_framework(
        reports: dict[str, Any], framework: str) -> None:
    ours, reference = reports[framework], reports["torch"]
    assert len(ours.layers) == len(reference.layers) == 3
    for measure in ("spearman", "ssim", "top_k_overlap"):
        np.testing.assert_allclose(getattr(ours, measure), getattr(reference, measure),
                                   rtol=1e-5, atol=1e-5)


def test_randomised_maps_lose_their_resemblance(reports: dict[str, Any]) -> None:
    summary = reports["torch"].summary()
    assert reports["torch"].layers == ("6", "2", "0")  # output first
    assert np.all(summary["spearman"] < 0.9)
    assert summary["spearman"][-1] < summary["spearman"][0] + 0.2


def test_the_users_model_is_never_changed() -> None:
    import torch

    model, x = _torch_case()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = model_randomization(Saliency(model), x, targets(), cascade=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert report.spearman.shape == (3, len(x))


def test_linear_model_report_is_the_correlation_of_the_weight_columns() -> None:
    """Saliency of a linear model is |W[:, c]| whatever the input: the report is the
    similarity of the original column to the randomised one, drawn as documented."""
    spec = linear_spec()
    model = build_torch(spec)
    x = np.random.default_rng(0).normal(size=(6, 12)).astype(np.float32)
    t = np.array([0, 1, 2, 0, 1, 2])
    report = model_randomization(Saliency(model), x, t, seed=7, top_k=0.25)
    weight, bias = spec.dense(0).weight, spec.dense(0).bias
    random_weight = glorot_weights("0", [weight, bias], np.random.default_rng([7, 0]))[0]
    original = np.abs(weight[:, t].T)
    randomised = np.abs(random_weight.astype(np.float32)[:, t].T)
    np.testing.assert_allclose(report.spearman[0], spearman(original, randomised), atol=1e-6)
    np.testing.assert_allclose(report.ssim[0], ssim(original, randomised), atol=1e-6)
    np.testing.assert_allclose(report.top_k_overlap[0],
                               top_k_overlap(original, randomised, 0.25))


def test_independent_and_cascading_agree_on_the_top_layer() -> None:
    model, x = _torch_case()
    cascade = model_randomization(Saliency(model), x, targets(), seed=1)
    alone = model_randomization(Saliency(model), x, targets(), seed=1, cascade=False)
    np.testing.assert_allclose(alone.spearman[0], cascade.spearman[0])
    assert not np.allclose(alone.spearman[-1], cascade.spearman[-1])


def test_random_logit_compares_the_maps_of_two_classes() -> None:
    spec = linear_spec()
    x = np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32)
    t = np.arange(40) % 3
    report = random_logit(Saliency(build_torch(spec)), x, t, seed=4)
    assert np.all(report.off_classes != t) and set(report.off_classes) == {0, 1, 2}
    weight = np.abs(spec.dense(0).weight)
    np.testing.assert_allclose(report.ssim, ssim(weight[:, t].T, weight[:, report.off_classes].T),
                               atol=1e-6)
    same = random_logit(Saliency(build_keras(spec)), x, np.eye(3)[t], seed=4)
    np.testing.assert_allclose(same.ssim, report.ssim, atol=1e-6)


def test_layers_that_do_not_exist_are_named() -> None:
    model, x = _torch_case()
    with pytest.raises(ValueError, match="'nope'.*'0'"):
        model_randomization(Saliency(model), x, targets(), layers=["nope"])


def test_a_backend_without_layer_listing_says_so() -> None:
    from agnostic_saliency.testing.builders import build_jax_function

    with pytest.raises(NotImplementedError, match="Flax NNX"):
        model_randomization(Saliency(build_jax_function(image_spec()), backend="jax"),
                            images(), targets())


@pytest.mark.parametrize("framework", ["torch", "keras", "jax"])
def test_layer_weights_are_the_specs_in_the_canonical_layout(framework: str) -> None:
    from agnostic_saliency.registry import resolve_backend

    spec = image_spec()
    build = {"torch": lambda: build_torch(spec.for_layout("channels_first")),
             "keras": lambda: build_keras(spec), "jax": lambda: build_nnx(spec)}[framework]
    model = build()
    backend = resolve_backend(model)
    listed = backend.layer_weights(model)
    expected = [list(vars(layer).values()) for layer in spec.layers if vars(layer)]
    assert len(listed) == len(expected)
    for (_, ours), theirs in zip(listed, expected, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
    name, weights = listed[0]
    changed = backend.with_layer_weights(model, {name: [w + 1 for w in weights]})
    np.testing.assert_array_equal(backend.layer_weights(changed)[0][1][0], weights[0] + 1)
    np.testing.assert_array_equal(backend.layer_weights(model)[0][1][0], weights[0])
    with pytest.raises(ValueError, match="shape"):
        backend.with_layer_weights(model, {name: [w.T for w in weights]})
