"""Checks of exact values: the zoo's gradients, finite differences of ``predict``,
the raw ``gradient`` contract, and properties every correct map has."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import Saliency, get_backend, list_backends
from agnostic_saliency.backend import MAGNITUDE_REDUCERS, BackendBase, CallOptions
from agnostic_saliency.testing.conformance._base import SuiteBase
from agnostic_saliency.testing.models import Dense, make_spec
from agnostic_saliency.testing.reference import NumpyModel

__all__ = ["ValueChecks"]


class ValueChecks(SuiteBase):
    """Registry and detection, exact values, and reference-free properties."""

    # --- registry and detection -----------------------------------------------------

    def test_backend_is_registered_instance(self) -> None:
        backend = self.resolved_backend()
        assert backend.name in list_backends()
        assert get_backend(backend.name) is backend

    def test_detection_picks_this_backend(self) -> None:
        model = self.model(self.spec("mlp"))
        if self.detectable:
            assert Saliency(model).backend is self.resolved_backend()
        else:  # plain functions: detection must refuse and name the fix
            with pytest.raises(TypeError, match="backend="):
                Saliency(model)

    # --- exact values ---------------------------------------------------------------

    def test_linear_vector_map_is_abs_weight_column(self) -> None:
        spec = self.spec("linear_vector")
        x, targets = self.inputs(spec), np.array([0, 1, 2, 3, 1])
        maps = self.saliency(self.model(spec)).explain(x, targets)
        weight = spec.dense(0).weight
        self.assert_close(maps, np.abs(weight[:, targets].T))

    def test_linear_image_map_is_channel_max_of_weights(self) -> None:
        spec = self.spec("linear_image")
        x, targets = self.inputs(spec), np.array([3, 0, 1, 2, 3])
        maps = self.saliency(self.model(spec)).explain(x, targets)
        canonical = make_spec("linear_image").dense(1).weight.reshape(6, 5, 3, -1)
        expected = np.abs(canonical[..., targets]).max(axis=2).transpose(2, 0, 1)
        assert maps.shape == (5, 6, 5)
        self.assert_close(maps, expected)

    def test_reducer_none_keeps_channels_in_input_layout(self) -> None:
        spec = self.spec("linear_image")
        x, targets = self.inputs(spec), np.array([3, 0, 1, 2, 3])
        maps = self.saliency(self.model(spec), reducer=None).explain(x, targets)
        canonical = make_spec("linear_image").dense(1).weight.reshape(6, 5, 3, -1)
        expected = self.to_layout(np.abs(canonical[..., targets]).transpose(3, 0, 1, 2))
        assert maps.shape == x.shape
        self.assert_close(maps, expected)

    @pytest.mark.parametrize("reducer", ["max", "mean", "min", "sum"])
    def test_reducers_reduce_the_channel_axis(self, reducer: str) -> None:
        spec = self.spec("cnn")
        model, x = self.model(spec), self.inputs(spec)
        full = self.saliency(model, reducer=None).explain(x, 1)
        maps = self.saliency(model, reducer=reducer).explain(x, 1)
        expected = getattr(np, reducer)(full, axis=self.channel_axis())
        self.assert_close(maps, expected, scale=float(np.abs(expected).max()))

    @pytest.mark.parametrize("name", ["mlp", "cnn", "cnn_flatten"])
    def test_signed_gradient_matches_exact_gradient(self, name: str) -> None:
        spec = self.spec(name)
        x, targets = self.inputs(spec), np.array([0, 1, 2, 1, 0])
        maps = self.saliency(self.model(spec), reducer=None, absolute=False).explain(x, targets)
        expected = self.exact_gradient(spec, x, self.one_hot(targets, spec.n_outputs))
        self.assert_close(maps, expected, scale=float(np.abs(expected).max()))

    def test_gradient_matches_finite_differences_of_predict(self) -> None:
        dtype = np.float64 if self.supports_float64 else np.float32
        spec = self.spec("mlp", dtype=dtype)
        model, backend = self.model(spec), self.resolved_backend()
        x = self.inputs(spec, n=3, dtype=dtype)
        weights = self.one_hot(np.array([2, 0, 1]), spec.n_outputs).astype(dtype)
        gradient = backend.gradient(model, x, weights, None, CallOptions())
        step = 1e-6 if dtype == np.float64 else 1e-2
        numeric = np.zeros_like(x, dtype=np.float64)
        for index in np.ndindex(x.shape):
            upper, lower = x.copy(), x.copy()
            upper[index] += step
            lower[index] -= step
            difference = (np.sum(backend.predict(model, upper, CallOptions()) * weights)
                          - np.sum(backend.predict(model, lower, CallOptions()) * weights))
            numeric[index] = difference / (upper[index] - lower[index])
        tolerance = 1e-6 if dtype == np.float64 else 2e-3
        np.testing.assert_allclose(gradient, numeric, rtol=tolerance, atol=tolerance)

    def test_raw_gradient_contract(self) -> None:
        # gradient() and start_gradient()() give NumPy.
        spec = self.spec("cnn")
        model, x = self.model(spec), self.inputs(spec)
        weights = np.random.default_rng(3).normal(size=(len(x), spec.n_outputs))
        arguments = (model, x, weights.astype(np.float32), None, CallOptions())
        backend = self.resolved_backend()
        gradients = [backend.gradient(*arguments), backend.start_gradient(*arguments)()]
        expected = self.exact_gradient(spec, x, weights)
        for gradient in gradients:
            assert isinstance(gradient, np.ndarray) and gradient.shape == x.shape
            assert np.issubdtype(gradient.dtype, np.floating)
            self.assert_close(gradient, expected, scale=float(np.abs(expected).max()))
        if backend.magnitude_maps:
            self.check_magnitude_maps(arguments, expected)

    def check_magnitude_maps(self, arguments: tuple[Any, ...], expected: np.ndarray) -> None:
        """A backend with ``magnitude_maps`` returns ``reducer(|gradient|)`` when asked."""
        backend = self.resolved_backend()  # its gradient takes ``magnitude=``
        axis = self.channel_axis() % expected.ndim
        reducers = backend.magnitude_maps
        assert set(reducers) <= set(MAGNITUDE_REDUCERS), (
            f"magnitude_maps={reducers!r}; expected some of {MAGNITUDE_REDUCERS}")
        for reducer in reducers:
            magnitude = np.abs(expected)
            if reducer is not None:
                magnitude = getattr(np, reducer)(magnitude, axis=axis)
            model, x, weights, operator, options = arguments
            asked: Any = (reducer, axis)
            results = [backend.gradient(model, x, weights, operator, options, magnitude=asked),
                       backend.start_gradient(model, x, weights, operator, options,
                                              magnitude=asked)()]
            for result in results:
                assert isinstance(result, np.ndarray) and result.shape == magnitude.shape
                assert np.issubdtype(result.dtype, np.floating)
                self.assert_close(result, magnitude, scale=float(magnitude.max()))

    def test_writeable_answers_are_handed_over(self) -> None:
        """A writeable gradient (or magnitude map) is the caller's: the backend never
        writes to it again, and it shares no memory with the inputs (see
        :meth:`Backend.gradient`): the frontend returns it as the maps."""
        spec = self.spec("mlp")
        model, x = self.model(spec), self.inputs(spec, n=6)
        weights = np.eye(spec.n_outputs, dtype=np.float32)[np.arange(len(x)) % spec.n_outputs]
        backend: Any = self.resolved_backend()
        asked: list[dict[str, Any]] = [{}]
        asked += [{"magnitude": (None, 1)}] if None in backend.magnitude_maps else []
        for extra in asked:
            answer = partial(backend.gradient, model, x, weights, None, CallOptions(), **extra)
            first, second = answer(), answer()
            if not first.flags.writeable:
                continue
            assert not np.shares_memory(first, second) and not np.shares_memory(first, x)
            expected = second.copy()
            first[...] = np.nan
            np.testing.assert_array_equal(second, expected)
            np.testing.assert_array_equal(answer(), expected)

    @pytest.mark.parametrize("targets", [None, 1])
    def test_non_finite_inputs_are_refused(self, targets: int | None) -> None:
        spec = self.spec("cnn")
        model, x = self.model(spec), self.inputs(spec)
        x[2, 0, 0, 0], x[4, 1, 1, 0] = np.nan, -np.inf
        with pytest.raises(ValueError, match=r"2 non-finite values \(first at sample 2"):
            self.saliency(model).explain(x, targets)

    def test_targets_reach_the_backend_in_its_declared_form(self) -> None:
        # Class indices (N,) for a backend that declares `class_index_targets`, else
        # one-hot weight rows; either way the map is the exact gradient.
        spec = self.spec("cnn")
        model, x = self.model(spec), self.inputs(spec)
        backend = self.resolved_backend()
        recorder = _TargetRecorder(backend)
        targets = np.array([2, 0, 1, 1, 2])
        maps = Saliency(model, backend=recorder, reducer=None, absolute=False).explain(x, targets)
        kinds = {received.dtype.kind for received in recorder.received}
        assert kinds == ({"i"} if backend.class_index_targets else {"f"})
        expected = self.exact_gradient(spec, x, self.one_hot(targets, spec.n_outputs))
        self.assert_close(maps, expected, scale=float(np.abs(expected).max()))

    def test_predict_matches_reference_forward(self) -> None:
        spec = self.spec("cnn")
        model, x = self.model(spec), self.inputs(spec)
        outputs = self.resolved_backend().predict(model, x, CallOptions())
        expected = NumpyModel(spec.cast(np.float64))(x.astype(np.float64))
        assert isinstance(outputs, np.ndarray) and outputs.shape == (len(x), spec.n_outputs)
        self.assert_close(outputs, expected)

    def test_operator_scales_the_selected_output(self) -> None:
        spec = self.spec("mlp")
        model, x = self.model(spec), self.inputs(spec)

        def operator(model: Any, inputs: Any, targets: Any) -> Any:
            return model(inputs)[:, 1] * 3.0

        maps = self.saliency(model, operator=operator).explain(x)
        expected = 3.0 * np.abs(self.exact_gradient(spec, x, self.one_hot(np.ones(5, int), 3)))
        np.testing.assert_allclose(maps, expected, rtol=1e-3, atol=1e-4)

    # --- properties every correct map has (reference-free) --------------------------

    def test_ignored_inputs_get_exactly_zero_for_every_target(self) -> None:
        spec = self.spec("mlp")
        first = spec.dense(0)
        weight = first.weight.copy()
        weight[[1, 4]] = 0.0
        spec = replace(spec, layers=(Dense(weight, first.bias), *spec.layers[1:]))
        explainer, x = self.saliency(self.model(spec)), self.inputs(spec)
        for target in range(spec.n_outputs):
            maps = explainer.explain(x, target)
            assert np.all(maps[:, [1, 4]] == 0) and np.all(maps[:, [0, 2, 3, 5]] > 0)

    def test_duplicate_samples_get_identical_maps(self) -> None:
        spec = self.spec("cnn")
        explainer = self.saliency(self.model(spec))
        x = self.inputs(spec, n=3)[[0, 1, 0, 2, 0]]
        maps = explainer.explain(x, np.array([1, 2, 1, 0, 1]))
        np.testing.assert_allclose(maps[2], maps[0], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(maps[4], maps[0], rtol=1e-6, atol=1e-8)

    @pytest.mark.parametrize(("scale", "shift"), [(1.0, 5.0), (-1.0, 0.0), (2.5, -1.0)])
    def test_affine_score_changes_scale_the_map_by_abs_factor(self, scale: float,
                                                              shift: float) -> None:
        spec = self.spec("mlp")
        model, x = self.model(spec), self.inputs(spec)

        def operator(model: Any, inputs: Any, targets: Any) -> Any:
            return model(inputs)[:, 2] * scale + shift

        maps = self.saliency(model, operator=operator).explain(x)
        expected = abs(scale) * self.saliency(model).explain(x, 2)
        np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


class _TargetRecorder(BackendBase):
    """A backend that records the targets its ``gradient`` gets, then delegates."""

    def __init__(self, backend: BackendBase) -> None:
        self._backend = backend
        self.name, self.modules = backend.name, backend.modules
        self.channel_axis = backend.channel_axis
        self.class_index_targets = backend.class_index_targets
        self.received: list[np.ndarray] = []

    def to_numpy(self, array: Any) -> np.ndarray:
        return self._backend.to_numpy(array)

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        return self._backend.predict(model, inputs, options)

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: CallOptions, magnitude: Any = None) -> Any:
        self.received.append(np.asarray(targets))
        return self._backend.gradient(model, inputs, targets, operator, options)
