"""What an explainer works out once per input signature (its layout: channel axis,
map shape and dtype, the backend's capabilities) follows what it depends on."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency import Saliency, get_backend
from agnostic_saliency.testing import NumpyModel, make_spec


class _ChannelsFirst:
    """The reference backend with a channels-first convention and one-hot targets."""

    channel_axis = 1
    class_index_targets = False

    def __getattr__(self, name: str) -> Any:
        return getattr(get_backend("reference"), name)


def _linear() -> tuple[NumpyModel, np.ndarray, np.ndarray]:
    """A linear model of 90 inputs, on images whose axes 1 and 3 both pass for channels,
    and its exact input gradient for class 1 (the same for every sample)."""
    model = NumpyModel(make_spec("linear_image"))
    x = np.random.default_rng(0).normal(size=(2, 3, 10, 3)).astype(np.float32)
    weights = np.zeros((2, model.spec.n_outputs))
    weights[:, 1] = 1
    gradient = model.input_gradient(x.astype(np.float64), weights)
    return model, x, np.abs(gradient)


def test_a_replaced_backend_brings_its_own_channel_axis() -> None:
    model, x, magnitude = _linear()
    explainer = Saliency(model, backend="reference")
    np.testing.assert_allclose(explainer.explain(x, 1), magnitude.max(axis=3), rtol=1e-6)
    explainer.backend = _ChannelsFirst()  # type: ignore[assignment]
    np.testing.assert_allclose(explainer.explain(x, 1), magnitude.max(axis=1), rtol=1e-6)


def test_changed_settings_are_followed_on_the_next_call() -> None:
    model, x, magnitude = _linear()
    explainer = Saliency(model, backend="reference")
    explainer.explain(x, 1)
    explainer.reducer = "sum"
    np.testing.assert_allclose(explainer.explain(x, 1), magnitude.sum(axis=3), rtol=1e-6)
    explainer.channel_axis = 1
    np.testing.assert_allclose(explainer.explain(x, 1), magnitude.sum(axis=1), rtol=1e-6)
    explainer.reducer = None
    np.testing.assert_allclose(explainer.explain(x, 1), magnitude, rtol=1e-6)
    np.testing.assert_allclose(explainer.explain(x.astype(np.float64), 1), magnitude,
                               rtol=1e-12)


def test_layouts_and_output_specs_stay_bounded_over_many_batch_sizes() -> None:
    model = NumpyModel(make_spec("mlp"))
    explainer = Saliency(model, backend="reference")
    x = np.random.default_rng(1).normal(size=(100, 6)).astype(np.float32)
    for n in range(1, 100):
        explainer.explain(x[:n], 0)
    assert 0 < len(explainer._layouts) <= 64
    assert explainer.explain(x[:1], 0).shape == (1, 6)  # an evicted signature comes back
