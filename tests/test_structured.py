"""Several inputs, side inputs (attention masks) and layer outputs, on the frontend.

The reference backend runs NumPy models and differentiates by central differences
in float64; expected maps are analytic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import GradientInput, IntegratedGradients, Saliency, SmoothGrad
from agnostic_saliency.testing import LayeredModel, ReferenceBackend

RNG = np.random.default_rng(0)
WA = RNG.normal(size=(3, 4, 4, 2))  # classes x image (H, W, C)
WB = RNG.normal(size=(3, 5))  # classes x tabular features


def two_inputs(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """A linear model of an image and a table: class k scores <WA[k], image> + <WB[k], table>."""
    return (np.einsum("nhwc,khwc->nk", image, WA) + table @ WB.T)


def _pair(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    return RNG.normal(size=(n, 4, 4, 2)), RNG.normal(size=(n, 5))


def test_two_inputs_get_their_own_maps_in_the_callers_structure() -> None:
    image, table = _pair()
    targets = np.array([0, 1, 2, 0, 1, 2])
    maps = Saliency(two_inputs, backend="reference").explain((image, table), targets)
    assert isinstance(maps, tuple) and len(maps) == 2
    np.testing.assert_allclose(maps[0], np.abs(WA[targets]).max(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(maps[1], np.abs(WB[targets]), rtol=1e-6)
    listed = Saliency(two_inputs, backend="reference").explain([image, table], targets)
    assert isinstance(listed, list)
    np.testing.assert_allclose(listed[1], maps[1], rtol=1e-12)


def test_a_dict_is_passed_as_keywords_and_attribute_restricts_the_maps() -> None:
    image, table = _pair()
    maps = Saliency(two_inputs, backend="reference", attribute=["table"]).explain(
        {"image": image, "table": table}, 1)
    assert set(maps) == {"image", "table"} and maps["image"] is None
    np.testing.assert_allclose(maps["table"], np.abs(np.broadcast_to(WB[1], table.shape)),
                               rtol=1e-6)


def masked_sum(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scores that read only the unmasked features: class k = sum(mask * x * k+1)."""
    return np.stack([(mask * x).sum(axis=1) * (k + 1) for k in range(3)], axis=1)


@pytest.mark.parametrize("batch_size", [1, 2, 4, None])
def test_side_inputs_follow_every_chunk(batch_size: Any) -> None:
    x = RNG.normal(size=(5, 4))
    mask = (RNG.random(size=(5, 4)) > 0.5).astype(np.int64)
    maps = Saliency(masked_sum, backend="reference", batch_size=batch_size).explain((x, mask), 2)
    assert maps[1] is None
    np.testing.assert_allclose(maps[0], 3.0 * mask, atol=1e-6)


@pytest.mark.parametrize("batch_size", [3, None])
def test_smoothgrad_and_ig_repeat_side_inputs_per_point(batch_size: Any) -> None:
    x = RNG.normal(size=(4, 4))
    mask = (RNG.random(size=(4, 4)) > 0.5).astype(np.int64)
    smooth = SmoothGrad(masked_sum, backend="reference", nb_samples=5, seed=1,
                        batch_size=batch_size).explain((x, mask), 1)
    np.testing.assert_allclose(smooth[0], 2.0 * mask, atol=1e-6)  # linear: noise changes nothing
    ig = IntegratedGradients(masked_sum, backend="reference", steps=4,
                             batch_size=batch_size).explain((x, mask), 1)
    np.testing.assert_allclose(ig[0], 2.0 * mask * x, atol=1e-6)  # completeness per feature


def test_several_floating_inputs_share_one_integration_path() -> None:
    """f(a, b) = sum(a * b): IG on the joint path splits f(x) - f(0) between a and b."""
    def product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(axis=1, keepdims=True)

    a, b = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    maps = IntegratedGradients(product, backend="reference", steps=8, reducer=None,
                               quadrature="gausslegendre").explain((a, b), 0)
    np.testing.assert_allclose(maps[0] + maps[1], 2 * a * b / 2 + 0 * a, atol=1e-6)
    np.testing.assert_allclose((maps[0] + maps[1]).sum(axis=1), (a * b).sum(axis=1),
                               atol=1e-6)


def test_model_kwargs_are_constants_and_per_sample_arrays_are_refused() -> None:
    x = RNG.normal(size=(4, 4))

    def scaled(values: np.ndarray, *, scale: float = 1.0) -> np.ndarray:
        return masked_sum(values, np.ones_like(values)) * scale

    maps = Saliency(scaled, backend="reference", model_kwargs={"scale": -2.0}).explain((x,), 0)
    np.testing.assert_allclose(maps[0], np.full((4, 4), 2.0), atol=1e-6)
    with pytest.raises(ValueError, match=r"model_kwargs\['scale'\] has shape \(4, 4\)"):
        Saliency(scaled, backend="reference", model_kwargs={"scale": x}).explain((x,), 0)


EMBEDDING = RNG.normal(size=(7, 3))  # 7 tokens, hidden 3
HEAD = RNG.normal(size=(3, 2))  # hidden -> 2 classes


def _token_model() -> LayeredModel:
    def embed(ids: np.ndarray) -> np.ndarray:
        return EMBEDDING[ids]

    def head(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.einsum("nld,dk,nl->nk", hidden, HEAD, mask)

    return LayeredModel(embed, head)


def _tokens(n: int = 5, length: int = 6) -> tuple[np.ndarray, np.ndarray]:
    ids = RNG.integers(0, 7, size=(n, length))
    mask = np.ones((n, length), np.int64)
    mask[1, 4:] = 0  # padding
    mask[3, 2:] = 0
    return ids, mask


@pytest.mark.parametrize("batch_size", [1, 2, None])
def test_token_saliency_through_the_embedding_layer(batch_size: Any) -> None:
    model = _token_model()
    ids, mask = _tokens()
    maps = Saliency(model, backend="reference", layer=model.embed,
                    batch_size=batch_size).explain((ids, mask), 1)
    assert maps.shape == (5, 6)
    expected = np.linalg.norm(HEAD[:, 1]) * mask  # l2 over the hidden axis
    np.testing.assert_allclose(maps, expected, atol=1e-6)
    assert np.all(maps[mask == 0] == 0)


def test_gradient_input_and_ig_live_in_the_layers_space() -> None:
    model = _token_model()
    ids, mask = _tokens()
    hidden = EMBEDDING[ids]
    gi = GradientInput(model, backend="reference", layer=model.embed, reducer="sum").explain(
        (ids, mask), 0)
    np.testing.assert_allclose(gi, (hidden @ HEAD[:, 0]) * mask, atol=1e-6)
    ig = IntegratedGradients(model, backend="reference", layer=model.embed, steps=5,
                             reducer="sum").explain((ids, mask), 0)
    np.testing.assert_allclose(ig.sum(axis=1), model(ids, mask)[:, 0], atol=1e-6)


def test_output_names_an_entry_of_a_dict_output() -> None:
    def as_dict(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"logits": masked_sum(x, np.ones_like(x)), "hidden": x}

    x = RNG.normal(size=(3, 4))
    maps = Saliency(as_dict, backend="reference", output="logits").explain(x, 2)
    np.testing.assert_allclose(maps, np.full((3, 4), 3.0), atol=1e-6)
    with pytest.raises(ValueError, match="output='logits' and output_selector="):
        Saliency(as_dict, backend="reference", output="logits", output_selector=len)


def test_a_backend_without_structured_inputs_says_so() -> None:
    class Plain(ReferenceBackend):
        name = "plain"
        structured_inputs = False
        layer_outputs = False

    image, table = _pair()
    with pytest.raises(TypeError, match="backend 'plain' does not support several inputs"):
        Saliency(two_inputs, backend=Plain()).explain((image, table), 0)
    model = _token_model()
    with pytest.raises(TypeError, match="does not support"):
        Saliency(model, backend=Plain(), layer=model.embed).explain(_tokens(), 0)


def test_entries_must_share_the_batch_axis_and_be_attributable() -> None:
    with pytest.raises(ValueError, match="do not share a batch axis"):
        Saliency(masked_sum, backend="reference").explain(
            (np.ones((3, 4)), np.ones((2, 4), np.int64)), 0)
    with pytest.raises(TypeError, match="no floating entry of the inputs to attribute"):
        Saliency(masked_sum, backend="reference").explain(
            (np.ones((3, 4), np.int64), np.ones((3, 4), np.int64)), 0)
    with pytest.raises(ValueError, match="attribute='nope' names no inputs entry"):
        Saliency(two_inputs, backend="reference", attribute="nope").explain(
            {"image": _pair()[0], "table": _pair()[1]}, 0)
