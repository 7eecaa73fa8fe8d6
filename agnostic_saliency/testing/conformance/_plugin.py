"""Checks a plugin's models meet in users' hands: an ambiguous channel axis, explainers
that are pickled or deep-copied (Ray, multiprocessing), and models with a static batch."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest

from agnostic_saliency.backend import CallOptions
from agnostic_saliency.testing.conformance._base import SuiteBase

__all__ = ["PluginChecks"]

#: The batch of the static-batch model; it explains fewer samples, and a last chunk to pad.
STATIC_BATCH = 4


class PluginChecks(SuiteBase):
    """Channel-axis ambiguity, pickling and static batches."""

    # --- channel axis ---------------------------------------------------------------

    def test_ambiguous_channel_axis_is_refused_then_explicit_axes_reduce(self) -> None:
        """Eight channels on 3 x 3 images: the default axis (8 entries) is refused, as
        the other candidate (3 entries) looks like channels, unless the model declares
        its channel axis (``model_channel_axis``, a Keras layer's ``data_format``);
        ``channel_axis=`` then reduces exactly the axis it names."""
        spec = self.spec("wide_channels")
        model, x = self.model(spec), self.inputs(spec)
        targets, backend = np.array([0, 1, 2, 1, 0]), self.resolved_backend()
        weights = self.one_hot(targets, spec.n_outputs)
        magnitude = np.abs(self.exact_gradient(spec, x, weights))
        declared = backend.model_channel_axis(model, x.ndim)
        if declared is None:
            with pytest.raises(ValueError, match=r"cannot tell the channel axis of shape "
                                                 r"\(5, .*\).*pass channel_axis="):
                self.saliency(model).explain(x, targets)
        else:  # the model's own word is trusted
            assert declared % x.ndim == self.channel_axis() % x.ndim
            maps = self.saliency(model).explain(x, targets)
            self.assert_close(maps, magnitude.max(axis=declared), scale=float(magnitude.max()))
        own = np.abs(backend.gradient(model, x, weights.astype(x.dtype), None, CallOptions()))
        for axis in (1, 2, -1):
            maps = self.saliency(model, channel_axis=axis).explain(x, targets)
            expected = magnitude.max(axis=axis)
            assert maps.shape == expected.shape
            self.assert_close(maps, expected, scale=float(expected.max()))
            np.testing.assert_allclose(maps, own.max(axis=axis), rtol=1e-5, atol=1e-7)

    # --- pickling -------------------------------------------------------------------

    def _explained(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        spec = self.spec("cnn")
        explainer = self.saliency(self.model(spec))
        x, targets = self.inputs(spec, n=4), np.array([0, 1, 2, 1])
        return explainer, x, targets, explainer.explain(x, targets)

    def test_deep_copied_explainer_gives_identical_maps(self) -> None:
        explainer, x, targets, maps = self._explained()
        twin = copy.deepcopy(explainer)
        assert twin is not explainer and twin.backend.name == explainer.backend.name
        np.testing.assert_array_equal(twin.explain(x, targets), maps)
        np.testing.assert_array_equal(explainer.explain(x, targets), maps)

    def test_pickled_explainer_gives_identical_maps(self) -> None:
        """A model that cannot pickle (a closure, a jitted function) lists this check in
        ``expected_failures`` with the reason; deep copies are checked anyway."""
        explainer, x, targets, maps = self._explained()
        twin = pickle.loads(pickle.dumps(explainer))
        assert twin.backend.name == explainer.backend.name
        np.testing.assert_array_equal(twin.explain(x, targets), maps)

    # --- static batch ---------------------------------------------------------------

    @pytest.mark.parametrize("n", [2, 7])
    def test_static_batch_model_explains_any_number_of_samples(self, n: int) -> None:
        """With ``batch_size=B`` a model that takes only batches of B gets a padded last
        chunk, whose padding rows are dropped: the maps equal the unchunked ones."""
        spec = self.spec("cnn")
        model, x = self.build_static_batch_model(spec, STATIC_BATCH), self.inputs(spec, n=n)
        targets = np.arange(n) % spec.n_outputs
        with pytest.raises(Exception):  # noqa: B017 (the model refuses n, however it can)
            self.saliency(model, batch_size=None).explain(x, targets)
        explainer = self.saliency(model, batch_size=STATIC_BATCH, reducer=None, absolute=False)
        unchunked = self.saliency(self.model(spec), batch_size=None, reducer=None,
                                  absolute=False).explain(x, targets)
        expected = self.exact_gradient(spec, x, self.one_hot(targets, spec.n_outputs))
        for _ in range(2):  # the second call pads at once
            maps = explainer.explain(x, targets)
            assert maps.shape == x.shape and explainer.last_batch_sizes == [STATIC_BATCH]
            self.assert_close(maps, expected, scale=float(np.abs(expected).max()))
            np.testing.assert_allclose(maps, unchunked, rtol=1e-5, atol=1e-7)
        reduced = self.saliency(model, batch_size=STATIC_BATCH).explain(x, targets)
        np.testing.assert_allclose(reduced, np.abs(unchunked).max(axis=self.channel_axis()),
                                   rtol=1e-5, atol=1e-7)
