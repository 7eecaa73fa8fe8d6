"""Property tests of the frontend (Hypothesis), against the exact NumPy reference backend."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agnostic_saliency import Saliency
from agnostic_saliency.testing import NumpyModel
from agnostic_saliency.testing.models import Dense, Flatten, ModelSpec

REDUCERS = {"max": np.max, "mean": np.mean, "min": np.min, "sum": np.sum}


@st.composite
def linear_image_problems(draw: st.DrawFn) -> dict:
    n = draw(st.integers(0, 6))
    height, width, channels = (draw(st.integers(1, 5)) for _ in range(3))
    classes = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(height * width * channels, classes))
    spec = ModelSpec("linear", (Flatten(), Dense(weight, rng.normal(size=classes))),
                     (height, width, channels))
    targets = draw(arrays(np.int64, n, elements=st.integers(0, classes - 1)))
    layout = draw(st.sampled_from(["channels_last", "channels_first"]))
    return {"spec": spec.for_layout(layout), "canonical": spec, "targets": targets,
            "x": rng.normal(size=(n, *spec.for_layout(layout).input_shape)),
            "batch_size": draw(st.one_of(st.none(), st.integers(1, 7))),
            "reducer": draw(st.sampled_from([None, "max", "mean", "min", "sum"]))}


@settings(max_examples=60, deadline=None)
@given(linear_image_problems())
def test_linear_model_map_is_reduced_abs_weight_row(problem: dict) -> None:
    spec, x, targets = problem["spec"], problem["x"], problem["targets"]
    axis = 1 if spec.layout == "channels_first" else 3
    maps = Saliency(NumpyModel(spec), batch_size=problem["batch_size"], channel_axis=axis,
                    reducer=problem["reducer"]).explain(x, targets)
    weight = problem["canonical"].layers[1].weight
    rows = np.abs(weight[:, targets].T).reshape(len(x), *problem["canonical"].canonical_shape)
    if spec.layout == "channels_first":
        rows = np.moveaxis(rows, -1, 1)
    expected = rows if problem["reducer"] is None else REDUCERS[problem["reducer"]](rows,
                                                                                      axis=axis)
    assert maps.shape == expected.shape
    np.testing.assert_allclose(maps, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(linear_image_problems())
def test_permuting_samples_permutes_maps(problem: dict) -> None:
    spec, x, targets = problem["spec"], problem["x"], problem["targets"]
    axis = 1 if spec.layout == "channels_first" else 3
    order = np.random.default_rng(len(x)).permutation(len(x))
    explainer = Saliency(NumpyModel(spec), channel_axis=axis, batch_size=problem["batch_size"])
    np.testing.assert_array_equal(explainer.explain(x[order], targets[order]),
                                  explainer.explain(x, targets)[order])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(1, 9), st.integers(0, 2**16))
def test_weight_targets_equal_weighted_sum_of_class_maps(n: int, features: int,
                                                         seed: int) -> None:
    rng = np.random.default_rng(seed)
    spec = ModelSpec("linear", (Dense(rng.normal(size=(features, 3)), np.zeros(3)),),
                     (features,))
    x, weights = rng.normal(size=(n, features)), rng.normal(size=(n, 3))
    signed = Saliency(NumpyModel(spec), absolute=False).explain(x, weights)
    np.testing.assert_allclose(signed, weights @ spec.layers[0].weight.T, rtol=1e-12,
                               atol=1e-12)
