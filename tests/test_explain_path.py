"""The one explain path: chunk sizes (auto, explicit, static batch), out-of-memory
back-off, the output spec learned from the user's own chunk, channel axes, pickling.

Maps are compared with the reference model's analytic gradients.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import (
    CallOptions,
    IntegratedGradients,
    Saliency,
    SaliencyWarning,
    SmoothGrad,
)
from agnostic_saliency.backend import BackendBase, as_backend_base, report_cast
from agnostic_saliency.testing import NumpyModel, ReferenceBackend, make_spec


def _cnn(n: int = 7, seed: int = 0) -> tuple[NumpyModel, np.ndarray]:
    spec = make_spec("cnn")
    x = np.random.default_rng(seed).normal(size=(n, *spec.input_shape)).astype(np.float32)
    return NumpyModel(spec), x


def _exact(model: NumpyModel, x: np.ndarray, targets: Any) -> np.ndarray:
    weights = np.eye(model.spec.n_outputs)[np.broadcast_to(targets, len(x))]
    return np.abs(model.input_gradient(x.astype(np.float64), weights)).max(axis=-1)


class StaticBatch(ReferenceBackend):
    """A model exported with a static batch: refuses any other number of samples."""

    name = "static"

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.sizes: list[int] = []

    def _refuse(self, inputs: np.ndarray) -> None:
        self.sizes.append(len(inputs))
        if len(inputs) != self.batch:
            raise RuntimeError(f"expected a batch of {self.batch}, got {len(inputs)}")

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        self._refuse(inputs)
        return super().predict(model, inputs, options)

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: CallOptions, magnitude: Any = None) -> np.ndarray:
        self._refuse(inputs)
        return ReferenceBackend().gradient(model, inputs, targets, operator, options, magnitude)


@pytest.mark.parametrize("targets", [None, 2, np.array([0, 1, 2, 0, 1, 2, 0])])
def test_a_static_batch_model_explains_any_number_of_samples(targets: Any) -> None:
    model, x = _cnn(7)
    backend = StaticBatch(3)
    maps, used = Saliency(model, backend=backend, batch_size=3).explain_with_targets(x, targets)
    assert set(backend.sizes) <= {1, 3}  # a short call is tried once, then padded
    assert backend.sizes.count(1) == 1
    used = np.argmax(model(x), axis=1) if targets is None else targets
    np.testing.assert_allclose(maps, _exact(model, x, used), rtol=1e-5, atol=1e-7)


def test_a_short_call_that_fails_padded_too_reports_the_first_error() -> None:
    model, x = _cnn(4)
    backend = StaticBatch(5)  # refuses 3 and 4 alike
    with pytest.raises(RuntimeError, match="expected a batch of 5, got 3"):
        Saliency(model, backend=backend, batch_size=3).explain(x, 0)


def test_the_output_spec_comes_from_the_users_own_chunk() -> None:
    model, x = _cnn(6)
    backend = StaticBatch(6)  # a probe of two samples would fail
    maps = Saliency(model, backend=backend, batch_size=6).explain(x, 1)
    assert set(backend.sizes) == {6}
    np.testing.assert_allclose(maps, _exact(model, x, 1), rtol=1e-5, atol=1e-7)


class OutOfMemory(ReferenceBackend):
    """Raises its framework's out-of-memory error above ``limit`` samples per call."""

    name = "oom"

    class Error(Exception):
        pass

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes: list[int] = []

    def is_out_of_memory(self, error: BaseException) -> bool:
        return isinstance(error, OutOfMemory.Error)

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: CallOptions, magnitude: Any = None) -> np.ndarray:
        self.sizes.append(len(inputs))
        if len(inputs) > self.limit:
            raise OutOfMemory.Error(f"RESOURCE_EXHAUSTED: {len(inputs)} samples")
        return super().gradient(model, inputs, targets, operator, options, magnitude)


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "ig"])
def test_out_of_memory_halves_the_calls_and_changes_no_map(method: str) -> None:
    model, x = _cnn(9)
    make = {"saliency": lambda b, **k: Saliency(model, backend=b, **k),
            "smoothgrad": lambda b, **k: SmoothGrad(model, backend=b, nb_samples=4, seed=3, **k),
            "ig": lambda b, **k: IntegratedGradients(model, backend=b, steps=4, **k)}[method]
    expected = make("reference", batch_size=None).explain(x, 1)
    backend = OutOfMemory(limit=3)
    explainer = make(backend, batch_size=None)
    with pytest.warns(SaliencyWarning, match=r"out of memory with \d+ samples per model call"):
        maps = explainer.explain(x, 1)
    np.testing.assert_array_equal(maps, expected)
    assert max(explainer.last_batch_sizes) <= 3
    assert all(size <= 3 for size in backend.sizes[backend.sizes.index(3):])


def test_other_errors_are_never_retried() -> None:
    model, x = _cnn(4)
    backend = OutOfMemory(limit=0)
    backend.is_out_of_memory = lambda error: False  # type: ignore[method-assign]
    with pytest.raises(OutOfMemory.Error):
        Saliency(model, backend=backend, batch_size=None).explain(x, 1)
    assert backend.sizes == [4]


def test_one_sample_out_of_memory_is_raised() -> None:
    model, x = _cnn(2)
    with pytest.raises(OutOfMemory.Error), warnings.catch_warnings():
        warnings.simplefilter("ignore", SaliencyWarning)
        Saliency(model, backend=OutOfMemory(limit=0), batch_size=None).explain(x, 1)


class Counting(ReferenceBackend):
    name = "counting"

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: CallOptions, magnitude: Any = None) -> np.ndarray:
        self.sizes.append(len(inputs))
        return super().gradient(model, inputs, targets, operator, options, magnitude)


@pytest.mark.parametrize("budget", [40e3, 400e3, 4e9])
def test_auto_chunks_follow_the_memory_budget_and_change_no_map(budget: float) -> None:
    model, x = _cnn(40)
    backend = Counting()
    explainer = Saliency(model, backend=backend, memory_budget=budget)
    assert explainer.batch_size == "auto"
    for _ in range(2):
        maps = explainer.explain(x, 1)
        np.testing.assert_allclose(maps, _exact(model, x, 1), rtol=1e-5, atol=1e-7)
    sample_bytes = x[0].nbytes
    # The first guess never exceeds the budget at 64 input sizes a sample.
    assert backend.sizes[0] <= max(1, int(budget // (64 * sample_bytes)))
    if budget > 1e9:
        assert backend.sizes == [40, 40]


def test_a_bad_memory_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="memory_budget=-1; pass a number of bytes"):
        Saliency(_cnn()[0], memory_budget=-1)


def test_explicit_channel_axis_reduces_token_embeddings() -> None:
    spec = make_spec("mlp")
    model = NumpyModel(spec)
    x = np.random.default_rng(1).normal(size=(5, 2, 3)).astype(np.float32)  # (N, L, D)

    def flat(inputs: np.ndarray) -> np.ndarray:
        return model(inputs.reshape(len(inputs), -1))

    weights = np.eye(spec.n_outputs)[[1] * 5]
    gradient = model.input_gradient(x.reshape(5, 6).astype(np.float64), weights).reshape(x.shape)
    for reducer in ("sum", "max"):
        maps = Saliency(flat, backend="reference", channel_axis=-1, reducer=reducer).explain(x, 1)
        expected = getattr(np, reducer)(np.abs(gradient), axis=-1)
        assert maps.shape == (5, 2)
        np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    unreduced = Saliency(flat, backend="reference", reducer="sum").explain(x, 1)
    assert unreduced.shape == x.shape  # only an explicit axis reduces non-images


@pytest.mark.parametrize(("default", "shape"), [(-1, (2, 3, 16, 16)), (1, (2, 16, 16, 3))])
def test_every_backend_refuses_an_implausible_default_channel_axis(
        default: int, shape: tuple[int, ...]) -> None:
    backend = ReferenceBackend()
    backend.channel_axis = default
    x = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match=r"cannot tell the channel axis of shape .*channel_axis="):
        Saliency(lambda v: v.reshape(len(v), -1)[:, :2], backend=backend).explain(x, 0)


class DeclaresChannelsFirst(ReferenceBackend):
    name = "declares"

    def model_channel_axis(self, model: Any, ndim: int) -> int | None:
        return 1 if ndim == 4 else None


def test_a_channel_axis_the_model_declares_is_used() -> None:
    last = NumpyModel(make_spec("cnn", dtype=np.float64))
    first = NumpyModel(make_spec("cnn", layout="channels_first", dtype=np.float64))
    x = np.random.default_rng(2).normal(size=(3, *last.spec.input_shape))
    expected = Saliency(last, backend="reference").explain(x, 1)
    maps = Saliency(first, backend=DeclaresChannelsFirst()).explain(
        np.ascontiguousarray(np.moveaxis(x, -1, 1)), 1)
    np.testing.assert_allclose(maps, expected, rtol=1e-10)


@pytest.mark.parametrize("copier", [lambda e: pickle.loads(pickle.dumps(e)), copy.deepcopy])
def test_explainers_pickle_and_copy_with_identical_maps(copier: Any) -> None:
    model, x = _cnn(5)
    for explainer in (Saliency(model), SmoothGrad(model, nb_samples=3, seed=1),
                      IntegratedGradients(model, steps=5)):
        before = explainer.explain(x, 2)
        copied = copier(explainer)
        assert copied.backend.name == "reference"
        np.testing.assert_array_equal(copied.explain(x, 2), before)


def test_sample_ids_key_the_noise() -> None:
    model, x = _cnn(6)
    explainer = SmoothGrad(model, nb_samples=3, seed=9)
    whole = explainer.explain(x, 1)
    ids = np.array([5, 4, 3, 2, 1, 0])
    reversed_maps, _ = explainer.explain_with_targets(x[::-1], 1, sample_ids=ids)
    np.testing.assert_array_equal(reversed_maps[::-1], whole)
    with pytest.raises(ValueError, match=r"sample_ids of shape \(2,\).*for 6 inputs"):
        explainer.explain_with_targets(x, 1, sample_ids=[0, 1])


@pytest.mark.parametrize("inputs", [
    [np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)],
    (np.ones((2, 3), np.float32), np.ones((2, 1), np.float32)),
    {"image": np.ones((2, 3), np.float32)},
])
def test_several_inputs_are_never_stacked_into_a_batch(inputs: Any) -> None:
    class OneArray(ReferenceBackend):
        name = "one-array"
        structured_inputs = False

    with pytest.raises(TypeError, match="does not support several inputs"):
        Saliency(NumpyModel(make_spec("mlp")), backend=OneArray()).explain(inputs, 0)


def test_a_generator_is_sent_to_the_dataset_api() -> None:
    batches = (np.ones((2, 6), np.float32) for _ in range(2))
    with pytest.raises(TypeError, match="explain_dataset"):
        Saliency(NumpyModel(make_spec("mlp"))).explain(batches, 0)


def test_an_up_cast_is_no_lower_precision() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report_cast("float32", "float64")
    with pytest.warns(SaliencyWarning, match="lower precision"):
        report_cast("float64", "float32")


def test_a_plugin_without_the_base_class_is_wrapped_with_its_declarations() -> None:
    class Plugin:
        name, modules, priority, channel_axis = "plain", ("x",), 0, -1
        class_index_targets = True
        magnitude_maps = ("max",)

        def can_handle(self, model: Any) -> bool:
            return False

        def to_numpy(self, array: Any) -> np.ndarray:
            return np.asarray(array)

        def predict(self, model: Any, inputs: np.ndarray, options: Any) -> Any:
            return model(inputs)

        def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                     options: Any) -> np.ndarray:  # no magnitude keyword
            return ReferenceBackend().gradient(model, inputs, targets, operator, options)

    wrapped = as_backend_base(Plugin())
    assert isinstance(wrapped, BackendBase) and wrapped.class_index_targets
    assert wrapped.magnitude_maps == ()  # its gradient cannot take them
    model, x = _cnn(3)
    np.testing.assert_allclose(Saliency(model, backend=Plugin()).explain(x, 1),
                               _exact(model, x, 1), rtol=1e-5, atol=1e-7)
