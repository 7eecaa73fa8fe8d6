"""The conformance suite every backend runs, ours and anyone's.

Subclass :class:`BackendConformanceTests` in a test module, name the subclass
``Test...`` so pytest collects it, and implement two methods::

    class TestMyBackend(BackendConformanceTests):
        layout = "channels_last"          # or "channels_first" (PyTorch)

        def backend(self):
            return get_backend("mine")

        def build_model(self, spec):
            ...  # build spec.layers in your framework, return the model

Checks compare values, not only shapes: exact gradients of the model zoo in
:mod:`agnostic_saliency.testing.models`, finite differences of the backend's own
predictions, and invariants (targets, batching, layouts, dtypes, side effects).
A check that a backend cannot pass goes into ``expected_failures`` with a reason;
it then runs as a strict ``xfail``, so fixing it is noticed.

Every check runs inside the backend's ``full_precision()`` when it has one, so a
GPU's reduced-precision float32 math (TF32) does not blur the float32 tolerances;
set ``use_full_precision = False`` to check a backend at its framework's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

import numpy as np
import pytest

from agnostic_saliency import Saliency, get_backend, list_backends
from agnostic_saliency.backend import (
    MAGNITUDE_REDUCERS,
    Backend,
    BackendBase,
    CallOptions,
    as_backend_base,
)
from agnostic_saliency.testing.models import Dense, Layout, ModelSpec, make_spec
from agnostic_saliency.testing.reference import NumpyModel

__all__ = ["BackendConformanceTests"]


class BackendConformanceTests:
    """Base class of a backend's conformance tests (not collected itself).

    Attributes
    ----------
    layout
        Layout of image inputs the built models consume.
    supports_float64
        Whether the backend computes in float64 for float64 inputs and models.
    detectable
        Whether models built by :meth:`build_model` are detected without ``backend=``.
    rtol, atol
        Tolerances of float32 comparisons.
    expected_failures
        ``{"test_name": "reason"}`` for checks known to fail, run as strict xfail.
    use_full_precision
        Whether each check runs inside the backend's ``full_precision()`` context
        (where it has one): TF32 and similar reduced-precision math off.
    """

    layout: ClassVar[Layout] = "channels_last"
    supports_float64: ClassVar[bool] = True
    detectable: ClassVar[bool] = True
    rtol: ClassVar[float] = 1e-4
    atol: ClassVar[float] = 1e-6
    expected_failures: ClassVar[dict[str, str]] = {}
    use_full_precision: ClassVar[bool] = True

    # --- to implement ---------------------------------------------------------------

    def backend(self) -> Backend | str:
        """The backend under test, or its registered name."""
        raise NotImplementedError

    def build_model(self, spec: ModelSpec) -> Any:
        """Build ``spec.layers`` in the framework for inputs of ``spec.input_shape``."""
        raise NotImplementedError

    def to_framework(self, array: np.ndarray) -> Any:
        """Convert an array to the framework's tensor type (default: keep NumPy)."""
        return array

    # --- helpers --------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _expected_failure(self, request: pytest.FixtureRequest) -> None:
        name = request.node.originalname if hasattr(request.node, "originalname") else ""
        reason = self.expected_failures.get(name)
        if reason:
            request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))

    @pytest.fixture(autouse=True)
    def _full_precision(self) -> Iterator[None]:
        full_precision = getattr(self.resolved_backend(), "full_precision", None)
        if not (self.use_full_precision and callable(full_precision)):
            yield
            return
        with full_precision():
            yield

    def resolved_backend(self) -> BackendBase:
        backend = self.backend()
        return get_backend(backend) if isinstance(backend, str) else as_backend_base(backend)

    def spec(self, name: str, dtype: type = np.float32, seed: int = 0) -> ModelSpec:
        return make_spec(name, layout=self.layout, dtype=dtype, seed=seed)

    def model(self, spec: ModelSpec) -> Any:
        return self.build_model(spec)

    def inputs(self, spec: ModelSpec, n: int = 5, seed: int = 1,
               dtype: type = np.float32) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.normal(size=(n, *spec.input_shape)).astype(dtype)

    def saliency(self, model: Any, **kwargs: Any) -> Saliency:
        return Saliency(model, backend=self.resolved_backend(), **kwargs)

    def exact_gradient(self, spec: ModelSpec, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
        exact = spec.cast(np.float64)
        return NumpyModel(exact).input_gradient(x.astype(np.float64), weights)

    def one_hot(self, targets: np.ndarray, n_outputs: int) -> np.ndarray:
        return np.eye(n_outputs)[targets]

    def assert_close(self, actual: np.ndarray, expected: np.ndarray, scale: float = 1.0
                     ) -> None:
        np.testing.assert_allclose(actual, expected, rtol=self.rtol,
                                   atol=self.atol * max(scale, 1.0))

    def channel_axis(self) -> int:
        return 1 if self.layout == "channels_first" else -1

    def to_layout(self, canonical: np.ndarray) -> np.ndarray:
        """Move the channels of a channels-last image array to this backend's layout."""
        return np.moveaxis(canonical, -1, 1) if self.layout == "channels_first" else canonical

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
