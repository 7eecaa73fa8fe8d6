"""Checks of invariants: targets in every form, batching, layouts, dtypes, input
kinds and side effects."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agnostic_saliency.backend import CallOptions
from agnostic_saliency.testing.conformance._base import SuiteBase

__all__ = ["InvariantChecks"]


class InvariantChecks(SuiteBase):
    """Targets, batching and layout, dtypes, input kinds and side effects."""

    # --- targets --------------------------------------------------------------------

    def test_one_hot_targets_equal_index_targets(self) -> None:
        spec = self.spec("cnn")
        explainer, x = self.saliency(self.model(spec)), self.inputs(spec)
        targets = np.array([2, 0, 1, 1, 2])
        by_index = explainer.explain(x, targets)
        by_one_hot = explainer.explain(x, self.one_hot(targets, spec.n_outputs))
        self.assert_close(by_one_hot, by_index)

    def test_weight_targets_are_linear_in_the_weights(self) -> None:
        spec = self.spec("mlp")
        explainer = self.saliency(self.model(spec), absolute=False)
        x = self.inputs(spec)
        weights = np.random.default_rng(4).normal(size=(len(x), spec.n_outputs))
        combined = explainer.explain(x, weights)
        per_class = [explainer.explain(x, k) for k in range(spec.n_outputs)]
        expected = sum(weights[:, k, None] * per_class[k] for k in range(spec.n_outputs))
        self.assert_close(combined, expected, scale=float(np.abs(expected).max()))

    def test_int_target_broadcasts_to_every_sample(self) -> None:
        spec = self.spec("mlp")
        explainer, x = self.saliency(self.model(spec)), self.inputs(spec)
        self.assert_close(explainer.explain(x, 2), explainer.explain(x, np.full(len(x), 2)))

    def test_no_targets_explain_the_predicted_class(self) -> None:
        spec = self.spec("mlp")
        model, x = self.model(spec), self.inputs(spec, n=8)
        explainer = self.saliency(model)
        predicted = np.argmax(self.resolved_backend().predict(model, x, CallOptions()), axis=1)
        maps, used = explainer.explain_with_targets(x)
        assert used is not None
        np.testing.assert_array_equal(used, predicted)
        self.assert_close(maps, explainer.explain(x, predicted))

    def test_regression_model_needs_no_target(self) -> None:
        spec = self.spec("regression")
        maps = self.saliency(self.model(spec)).explain(self.inputs(spec))
        expected = np.abs(np.broadcast_to(spec.dense(0).weight[:, 0], (5, 5)))
        self.assert_close(maps, expected)

    def test_different_targets_give_their_own_weights(self) -> None:
        spec = self.spec("linear_vector")
        explainer, x = self.saliency(self.model(spec)), self.inputs(spec)
        first, second = explainer.explain(x, 0), explainer.explain(x, 1)
        weight = spec.dense(0).weight
        self.assert_close(first, np.broadcast_to(np.abs(weight[:, 0]), first.shape))
        self.assert_close(second, np.broadcast_to(np.abs(weight[:, 1]), second.shape))
        assert not np.allclose(first, second)

    # --- batching and layout --------------------------------------------------------

    @pytest.mark.parametrize("batch_size", [1, 3, 7])
    def test_batch_size_does_not_change_maps(self, batch_size: int) -> None:
        spec = self.spec("cnn")
        model, x = self.model(spec), self.inputs(spec, n=7)
        targets = np.array([0, 1, 2, 0, 1, 2, 0])
        whole = self.saliency(model).explain(x, targets)
        batched = self.saliency(model, batch_size=batch_size).explain(x, targets)
        np.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-7)

    def test_samples_are_explained_independently(self) -> None:
        spec = self.spec("cnn")
        explainer, x = self.saliency(self.model(spec)), self.inputs(spec)
        targets = np.array([0, 1, 2, 0, 1])
        batched = explainer.explain(x, targets)
        single = np.concatenate([explainer.explain(x[i:i + 1], targets[i:i + 1])
                                 for i in range(len(x))])
        np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-7)

    def test_permuting_samples_permutes_maps(self) -> None:
        spec = self.spec("mlp")
        explainer, x = self.saliency(self.model(spec)), self.inputs(spec)
        targets, order = np.array([0, 1, 2, 0, 1]), np.array([4, 2, 0, 3, 1])
        maps = explainer.explain(x, targets)
        np.testing.assert_allclose(explainer.explain(x[order], targets[order]), maps[order],
                                   rtol=1e-5, atol=1e-7)

    def test_explicit_default_channel_axis_matches_default(self) -> None:
        spec = self.spec("cnn")
        model, x = self.model(spec), self.inputs(spec)
        explicit = self.saliency(model, channel_axis=self.channel_axis()).explain(x, 0)
        np.testing.assert_array_equal(explicit, self.saliency(model).explain(x, 0))

    def test_empty_batch_returns_empty_maps(self) -> None:
        spec = self.spec("cnn")
        maps = self.saliency(self.model(spec)).explain(self.inputs(spec, n=0), 0)
        assert maps.shape == (0, 7, 6)

    # --- dtypes, input kinds and side effects ---------------------------------------

    def test_float32_inputs_give_float32_maps(self) -> None:
        spec = self.spec("cnn")
        maps = self.saliency(self.model(spec)).explain(self.inputs(spec), 0)
        assert maps.dtype == np.float32 and maps.flags.c_contiguous and maps.flags.writeable

    def test_float64_inputs_give_float64_maps(self) -> None:
        dtype = np.float64 if self.supports_float64 else np.float32
        spec = self.spec("cnn", dtype=dtype)
        x = self.inputs(spec, dtype=np.float64)
        maps = self.saliency(self.model(spec)).explain(x, 1)
        assert maps.dtype == np.float64
        expected = np.abs(self.exact_gradient(spec, x, self.one_hot(np.ones(5, int), 3)))
        expected = expected.max(axis=self.channel_axis())
        self.assert_close(maps, expected, scale=float(expected.max()))

    def test_framework_tensors_read_only_and_strided_inputs_agree(self) -> None:
        spec = self.spec("cnn")
        explainer, x = self.saliency(self.model(spec)), self.inputs(spec, n=4)
        expected = explainer.explain(x, 1)
        read_only = x.copy()
        read_only.flags.writeable = False
        reversed_view = x[::-1].copy()[::-1]
        for variant in (self.to_framework(x), read_only, reversed_view):
            np.testing.assert_array_equal(explainer.explain(variant, 1), expected)

    def test_inputs_and_model_are_left_unchanged(self) -> None:
        spec = self.spec("cnn")
        model, x = self.model(spec), self.inputs(spec)
        backend, original = self.resolved_backend(), x.copy()
        before = backend.predict(model, x, CallOptions())
        maps = self.saliency(model).explain(x, 2)
        np.testing.assert_array_equal(x, original)
        np.testing.assert_array_equal(backend.predict(model, x, CallOptions()), before)
        assert not np.shares_memory(maps, x)

    def test_repeated_calls_are_deterministic(self) -> None:
        spec = self.spec("cnn")
        explainer, x = self.saliency(self.model(spec)), self.inputs(spec)
        np.testing.assert_array_equal(explainer.explain(x, 1), explainer.explain(x, 1))

    @pytest.mark.parametrize(("name", "reducer", "absolute"),
                             [("mlp", "max", True), ("cnn", "max", True), ("cnn", None, False)])
    def test_later_calls_of_one_signature_give_the_same_maps(self, name: str,
                                                              reducer: str | None,
                                                              absolute: bool) -> None:
        """Calls after the first with the same input shape and class indices take the
        frontend's short way: the same exact maps, each a new array, and the same
        refusal of non-finite inputs and of class indices out of range (checked while
        a dispatching backend computes)."""
        spec = self.spec(name)
        model, x = self.model(spec), self.inputs(spec)
        explainer = self.saliency(model, reducer=reducer, absolute=absolute)
        targets = np.array([0, 1, 2, 1, 0])
        expected = self.exact_gradient(spec, x, self.one_hot(targets, spec.n_outputs))
        expected = np.abs(expected) if absolute else expected
        if reducer is not None and x.ndim == 4:
            expected = expected.max(axis=self.channel_axis())
        maps = [explainer.explain(x, targets) for _ in range(3)]
        for found in maps:
            self.assert_close(found, expected, scale=float(np.abs(expected).max()))
        np.testing.assert_array_equal(maps[1], maps[0])
        np.testing.assert_array_equal(maps[2], maps[0])
        assert not np.shares_memory(maps[1], maps[2]) and not np.shares_memory(maps[2], x)
        for bad in (spec.n_outputs, -1):  # a backend may clamp or wrap them: never silently
            wrong = targets.copy()
            wrong[2] = bad
            with pytest.raises(ValueError, match=rf"target {bad} out of range"):
                explainer.explain(x, wrong)
        x[3].flat[0] = np.nan
        with pytest.raises(ValueError, match=r"1 non-finite values \(first at sample 3"):
            explainer.explain(x, targets)

    def test_maps_are_finite_non_negative_and_not_trivial(self) -> None:
        spec = self.spec("cnn")
        maps = self.saliency(self.model(spec)).explain(self.inputs(spec, n=6))
        assert np.all(np.isfinite(maps)) and np.all(maps >= 0)
        assert math.prod(maps.shape) and np.all(maps.reshape(len(maps), -1).max(axis=1) > 0)
