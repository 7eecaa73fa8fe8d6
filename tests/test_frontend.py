"""Frontend behaviour with the NumPy reference backend: targets, inputs, batching, reductions."""

from __future__ import annotations

import ctypes
import threading
import warnings
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import CallOptions, Saliency, SaliencyWarning, get_backend
from agnostic_saliency.backend import warn
from agnostic_saliency.testing import NumpyModel, make_spec


class CountingBackend:
    """The reference backend, counting the calls it receives and their batch sizes."""

    def __init__(self) -> None:
        self.reference = get_backend("reference")
        self.gradient_batches: list[int] = []
        self.predict_batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reference, name)

    def gradient(self, model: Any, inputs: np.ndarray, targets: Any, operator: Any,
                 options: CallOptions) -> Any:
        self.gradient_batches.append(len(inputs))
        return self.reference.gradient(model, inputs, targets, operator, options)

    def predict(self, model: Any, inputs: np.ndarray, options: CallOptions) -> Any:
        self.predict_batches.append(len(inputs))
        return self.reference.predict(model, inputs, options)


def _cnn(n: int = 5) -> tuple[NumpyModel, np.ndarray]:
    spec = make_spec("cnn")
    x = np.random.default_rng(0).normal(size=(n, 7, 6, 3)).astype(np.float32)
    return NumpyModel(spec), x


def _exact(model: NumpyModel, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    weights = np.eye(model.spec.n_outputs)[targets]
    return model.input_gradient(x.astype(np.float64), weights)


# --- batching --------------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "calls"), [(None, [10]), (1, [1] * 10), (3, [3, 3, 3, 1]),
                                                   (10, [10]), (64, [10])])
def test_backend_calls_follow_batch_size(batch_size: int | None, calls: list[int]) -> None:
    model, x = _cnn(10)
    backend = CountingBackend()
    maps = Saliency(model, backend=backend, batch_size=batch_size).explain(x, 1)
    assert backend.gradient_batches == calls
    expected = np.abs(_exact(model, x, np.ones(10, int))).max(axis=-1)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


def test_output_shape_is_learned_once_per_input_signature_from_the_users_chunk() -> None:
    """No probe of a shape the user did not ask for: the first chunk tells the outputs."""
    model, x = _cnn(4)
    backend = CountingBackend()
    explainer = Saliency(model, backend=backend)
    for _ in range(3):
        explainer.explain(x, 0)
    explainer.explain(x[:, :6], 0)
    assert backend.predict_batches == [4, 4]
    Saliency(model, backend=backend, batch_size=3).explain(x, 0)
    assert backend.predict_batches == [4, 4, 3]


def test_predicted_targets_need_one_forward_pass_per_batch() -> None:
    model, x = _cnn(7)
    backend = CountingBackend()
    maps, used = Saliency(model, backend=backend, batch_size=3).explain_with_targets(x)
    assert backend.predict_batches == [3, 3, 1]
    np.testing.assert_array_equal(used, np.argmax(model(x), axis=1))
    np.testing.assert_allclose(maps, np.abs(_exact(model, x, used)).max(axis=-1), rtol=1e-5)


def test_returned_class_indices_never_alias_the_given_targets() -> None:
    model, x = _cnn(4)
    given = np.array([2, 0, 1, 2], dtype=np.int64)
    view = np.array([9, 2, 0, 1, 2, 9], dtype=np.int64)[1:5]
    for targets in (given, view, given.astype(np.int32), [2, 0, 1, 2]):
        _, used = Saliency(model, backend="reference").explain_with_targets(x, targets)
        assert used is not None and used.dtype == np.int64
        np.testing.assert_array_equal(used, [2, 0, 1, 2])
        if isinstance(targets, np.ndarray):
            assert not np.shares_memory(used, targets)
        used[:] = 0  # the caller's targets stay as they were
    np.testing.assert_array_equal(given, [2, 0, 1, 2])
    np.testing.assert_array_equal(view, [2, 0, 1, 2])


def test_empty_batch_never_calls_the_backend() -> None:
    model, x = _cnn(0)
    backend = CountingBackend()
    for reducer, shape in (("max", (0, 7, 6)), (None, (0, 7, 6, 3))):
        maps = Saliency(model, backend=backend, reducer=reducer).explain(x, 1)
        assert maps.shape == shape and maps.dtype == np.float32
    assert backend.gradient_batches == [] and backend.predict_batches == []


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_bad_batch_size_is_refused(batch_size: Any) -> None:
    with pytest.raises(ValueError, match=r"batch_size=.*pass a positive int .* \"auto\""):
        Saliency(_cnn()[0], batch_size=batch_size)


# --- reductions and channel axis -------------------------------------------------------


@pytest.mark.parametrize("reducer", ["max", "mean", "min", "sum"])
def test_reducer_is_applied_to_abs_gradient(reducer: str) -> None:
    model, x = _cnn()
    maps = Saliency(model, reducer=reducer).explain(x, 2)
    expected = getattr(np, reducer)(np.abs(_exact(model, x, np.full(5, 2))), axis=-1)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


def test_unknown_reducer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"reducer='median' is not one of \[max, mean"):
        Saliency(_cnn()[0], reducer="median")  # type: ignore[arg-type]


def test_channels_first_input_gives_the_map_of_its_channels_last_twin() -> None:
    model, x = _cnn()
    first = NumpyModel(make_spec("cnn", layout="channels_first"))
    maps_last = Saliency(model).explain(x, 1)
    maps_first = Saliency(first, channel_axis=1).explain(np.moveaxis(x, -1, 1), 1)
    np.testing.assert_allclose(maps_first, maps_last, rtol=1e-5, atol=1e-7)


def test_transposing_spatial_axes_transposes_the_map() -> None:
    spec = make_spec("linear_image")
    x = np.random.default_rng(2).normal(size=(3, 6, 5, 3)).astype(np.float32)
    maps = Saliency(NumpyModel(spec), channel_axis=3).explain(x, 1)
    swapped = Saliency(NumpyModel(spec), channel_axis=3, backend="reference")
    assert maps.shape == (3, 6, 5)
    assert swapped.explain(x, 1).shape == (3, 6, 5)


def test_implausible_default_channel_axis_is_refused() -> None:
    channels_first_backend = _ChannelsFirst()
    x = np.zeros((2, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"cannot tell the channel axis of shape \(2, 32, 32, 3\)"
                                         r".*pass channel_axis="):
        Saliency(NumpyModel(make_spec("cnn")), backend=channels_first_backend).explain(x, 0)


@pytest.mark.parametrize("axis", [0, 4, -5])
def test_out_of_range_channel_axis_is_refused(axis: int) -> None:
    model, x = _cnn()
    with pytest.raises(ValueError, match=rf"channel_axis={axis} is out of range for inputs"):
        Saliency(model, channel_axis=axis).explain(x, 0)


class _ChannelsFirst:
    channel_axis = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(get_backend("reference"), name)


def test_non_image_inputs_keep_their_shape() -> None:
    spec = make_spec("mlp")
    x = np.random.default_rng(3).normal(size=(4, 6)).astype(np.float32)
    maps = Saliency(NumpyModel(spec), reducer="max").explain(x, 0)
    weights = np.eye(3)[np.zeros(4, int)]
    np.testing.assert_allclose(maps, np.abs(NumpyModel(spec).input_gradient(x, weights)),
                               rtol=1e-6)


# --- targets ---------------------------------------------------------------------------


def test_length_one_targets_broadcast() -> None:
    model, x = _cnn()
    explainer = Saliency(model)
    np.testing.assert_array_equal(explainer.explain(x, [2]), explainer.explain(x, 2))


@pytest.mark.parametrize(("targets", "error", "match"), [
    (3, ValueError, r"target 3 out of range for a model with 3 outputs \(valid: 0..2\)"),
    (-1, ValueError, r"target -1 out of range.*negative indices are not accepted"),
    ([0, 1], ValueError, r"got 2 targets for 5 inputs"),
    (np.zeros((5, 4)), ValueError, r"2-D targets of shape \(5, 4\) do not match.*\(5, 3\)"),
    (np.zeros((5, 3, 1)), ValueError, r"targets of shape \(5, 3, 1\); pass an int"),
    (1.5, TypeError, r"targets of dtype float64 are not class indices"),
    (np.array([True, False, True, True, False]), TypeError, r"dtype bool are not class indices"),
    ("cat", TypeError, r"dtype <U3 are not class indices"),
    (np.full((5, 3), np.nan), ValueError, r"output weights\) contain NaN or Inf"),
])
def test_bad_targets_are_refused_before_the_gradient(targets: Any, error: type,
                                                     match: str) -> None:
    model, x = _cnn()
    backend = CountingBackend()
    with pytest.raises(error, match=match):
        Saliency(model, backend=backend).explain(x, targets)
    assert backend.gradient_batches == []


def test_integral_float_targets_are_accepted() -> None:
    model, x = _cnn()
    explainer = Saliency(model)
    np.testing.assert_array_equal(explainer.explain(x, np.full(5, 2.0)), explainer.explain(x, 2))


def test_regression_model_refuses_a_class_target() -> None:
    spec = make_spec("regression")
    x = np.ones((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"targets=1 given for a model with one output"):
        Saliency(NumpyModel(spec)).explain(x, 1)
    Saliency(NumpyModel(spec)).explain(x, 0)


def test_one_dimensional_output_is_a_single_score() -> None:
    spec = make_spec("regression")

    def squeezed(x: np.ndarray) -> np.ndarray:
        return NumpyModel(spec)(x)[:, 0]

    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    maps = Saliency(squeezed, backend="reference").explain(x)
    np.testing.assert_allclose(maps, np.abs(np.broadcast_to(spec.layers[0].weight[:, 0], (3, 5))),
                               rtol=1e-4)


def test_operator_receives_the_raw_targets_of_its_batch() -> None:
    model, x = _cnn(6)
    seen: list[Any] = []

    def operator(model: Any, inputs: np.ndarray, targets: Any) -> np.ndarray:
        seen.append(targets)
        return model(inputs)[np.arange(len(inputs)), targets.astype(int)]

    targets = np.array([0, 1, 2, 0, 1, 2])
    maps = Saliency(model, operator=operator, batch_size=4).explain(x, targets)
    np.testing.assert_allclose(maps, np.abs(_exact(model, x, targets)).max(axis=-1), rtol=1e-3,
                               atol=1e-5)
    assert any(np.array_equal(t, targets[:4]) for t in seen)
    assert any(np.array_equal(t, targets[4:]) for t in seen)


def test_operator_must_return_one_score_per_sample() -> None:
    model, x = _cnn()
    with pytest.raises(ValueError, match=r"operator returned scores of shape \(5, 3\).*\(5,\)"):
        Saliency(model, operator=lambda m, inputs, t: m(inputs)).explain(x)


# --- inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("inputs", "error", "match"), [
    (np.zeros((2, 6), np.uint8), TypeError, r"inputs have dtype uint8; saliency needs floating"),
    (np.zeros((2, 6), np.int64), TypeError, r"dtype int64.*token ids"),
    (np.zeros((2, 6), bool), TypeError, r"dtype bool; saliency needs floating"),
    (np.zeros(6, np.float32), ValueError, r"inputs of shape \(6,\) have no batch axis"),
    ("text", TypeError, r"inputs have dtype <U4|cannot be read as an array"),
])
def test_bad_inputs_are_refused(inputs: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Saliency(NumpyModel(make_spec("mlp"))).explain(inputs, 0)


def test_non_finite_inputs_are_refused_with_count_and_sample() -> None:
    x = np.ones((4, 6), np.float32)
    x[2, 1], x[3, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"inputs contain 2 non-finite values \(first at sample 2"):
        Saliency(NumpyModel(make_spec("mlp"))).explain(x, 0)


def test_large_finite_inputs_whose_sum_overflows_are_accepted() -> None:
    x = np.full((2, 7), 1e38, np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(x.sum())
    maps = Saliency(NumpyModel(make_spec("linear_vector"))).explain(x, 0)
    np.testing.assert_allclose(maps[0], np.abs(make_spec("linear_vector").layers[0].weight[:, 0]))


def test_inputs_are_never_modified_and_maps_are_new_arrays() -> None:
    model, x = _cnn()
    original = x.copy()
    maps = Saliency(model, reducer=None).explain(x, 0)
    np.testing.assert_array_equal(x, original)
    assert not np.shares_memory(maps, x) and maps.flags.writeable


def test_float16_inputs_give_float32_maps() -> None:
    model, x = _cnn()
    maps = Saliency(model).explain(x.astype(np.float16), 0)
    assert maps.dtype == np.float32


# --- backend answers -------------------------------------------------------------------


class AnsweringBackend:
    """The reference backend, but ``gradient`` returns ``answer(inputs)``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def __getattr__(self, name: str) -> Any:
        return getattr(get_backend("reference"), name)

    def gradient(self, model: Any, inputs: np.ndarray, *args: Any) -> Any:
        return self.answer(inputs)


@pytest.mark.parametrize(("answer", "error", "match"), [
    (lambda x: None, RuntimeError, r"gradient of the target score.*is None"),
    (lambda x: x[:, :-1], RuntimeError, r"returned a gradient of shape \(5, 5\) for inputs"),
    (lambda x: x.tolist(), RuntimeError, r"returned a gradient of shape list"),
    (lambda x: x.astype(np.int32), RuntimeError, r"returned a gradient of dtype int32"),
    (lambda x: np.where(np.arange(len(x))[:, None] == 3, np.nan, x), FloatingPointError,
     r"saliency is NaN or Inf for samples \[3\]"),
])
def test_malformed_backend_answers_are_errors(answer: Any, error: type, match: str) -> None:
    x = np.ones((5, 6), np.float32)
    with pytest.raises(error, match=match):
        Saliency(NumpyModel(make_spec("mlp")), backend=AnsweringBackend(answer)).explain(x, 0)


def test_zero_maps_warn_and_strict_raises() -> None:
    x = np.ones((4, 6), np.float32)

    def answer(inputs: np.ndarray) -> np.ndarray:
        gradient = np.ones_like(inputs)
        gradient[[1, 3]] = 0
        return gradient

    backend = AnsweringBackend(answer)
    with pytest.warns(SaliencyWarning, match=r"identically zero for samples \[1, 3\]") as record:
        Saliency(NumpyModel(make_spec("mlp")), backend=backend).explain(x, 0)
    assert {w.filename for w in record if w.category is SaliencyWarning} == {__file__}
    with pytest.raises(RuntimeError, match=r"identically zero for samples \[1, 3\]"):
        Saliency(NumpyModel(make_spec("mlp")), backend=backend, strict=True).explain(x, 0)


def _memory_of(array: np.ndarray) -> np.ndarray:
    """A writeable array on ``array``'s (float32) memory that NumPy does not own and
    that is no view of another NumPy array, as a tensor's memory handed over by a
    backend is (here the memory is seen through a ctypes pointer)."""
    pointer = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    view = np.ctypeslib.as_array(pointer, shape=array.shape)
    assert view.flags.writeable and not view.flags.owndata
    assert not isinstance(view.base, np.ndarray)
    return view


@pytest.mark.parametrize("absolute", [True, False])
def test_maps_never_share_memory_with_the_inputs_or_the_backends_answer(
        absolute: bool) -> None:
    """``f(x) = |x|^2 / 2`` has the gradient ``x``: whether a backend answers with the
    inputs' own memory or with memory it keeps, the maps are a new array."""
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    given = x.copy()
    kept: list[np.ndarray] = []

    def own_memory(inputs: np.ndarray) -> np.ndarray:
        kept.append(_memory_of(inputs.copy()))
        return kept[-1]

    model = NumpyModel(make_spec("mlp"))
    for answer in (_memory_of, own_memory):
        maps = Saliency(model, backend=AnsweringBackend(answer), absolute=absolute,
                        preset="captum").explain(x, 0)
        assert not np.shares_memory(maps, x)
        assert not kept or not np.shares_memory(maps, kept[-1])
        np.testing.assert_array_equal(x, given)
        np.testing.assert_array_equal(maps, np.abs(given) if absolute else given)


@pytest.mark.parametrize("absolute", [True, False])
@pytest.mark.parametrize(("n", "batch_size"), [(1, None), (3, 1), (3, 2)])
def test_one_row_chunks_check_every_value(n: int, batch_size: int | None,
                                          absolute: bool) -> None:
    """Chunks of one sample take a shortcut (one sum of squares per chunk): NaN, Inf,
    zero, a denormal and a huge gradient (its square overflows) in the last sample are
    still reported, or accepted, exactly."""
    x = np.ones((n, 6), np.float32)
    x[-1] = 2  # marks the last sample in whichever chunk it comes

    def explainer(value: float) -> Saliency:
        def answer(inputs: np.ndarray) -> np.ndarray:
            gradient = np.full_like(inputs, 0.5)
            last_rows = inputs[:, 0] == 2
            gradient[last_rows] = 0
            gradient[last_rows, 3] = value
            return gradient

        return Saliency(NumpyModel(make_spec("mlp")), backend=AnsweringBackend(answer),
                        batch_size=batch_size, absolute=absolute, reducer=None)

    last = [n - 1]
    for value in (np.nan, np.inf, -np.inf):
        with pytest.raises(FloatingPointError, match=rf"NaN or Inf for samples \{last}"):
            explainer(value).explain(x, 0)
    with pytest.warns(SaliencyWarning, match=rf"identically zero for samples \{last}"):
        explainer(0.0).explain(x, 0)
    tiny = np.float32(1e-45)  # a denormal: its square is 0, its peak is not
    huge = np.float32(3e38)  # finite: its square is not
    for value in (tiny, huge):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            maps = explainer(-value).explain(x, 0)
        assert maps[-1, 3] == (value if absolute else -value)


def test_probability_outputs_warn() -> None:
    spec = make_spec("mlp")

    def softmax_model(x: np.ndarray) -> np.ndarray:
        logits = NumpyModel(spec)(x)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    with pytest.warns(SaliencyWarning, match="look like probabilities") as record:
        Saliency(softmax_model, backend="reference").explain(np.ones((2, 6), np.float32), 0)
    assert {w.filename for w in record if w.category is SaliencyWarning} == {__file__}
    with pytest.raises(RuntimeError, match="look like probabilities.*strict=True"):
        Saliency(softmax_model, backend="reference", strict=True).explain(
            np.ones((2, 6), np.float32), 0)


class _Warning:
    """The reference backend, warning through the plugin API on every gradient."""

    def __getattr__(self, name: str) -> Any:
        return getattr(get_backend("reference"), name)

    def gradient(self, *args: Any) -> Any:
        warn("a backend's doubt about the map")
        return get_backend("reference").gradient(*args)


def test_strict_turns_backend_warnings_into_errors_in_its_own_calls_only() -> None:
    model, x = NumpyModel(make_spec("mlp")), np.ones((3, 6), np.float32)
    lenient = Saliency(model, backend=_Warning())
    strict = Saliency(model, backend=_Warning(), strict=True)
    with pytest.warns(SaliencyWarning, match="backend's doubt"):
        expected = lenient.explain(x, 1)
    with pytest.raises(RuntimeError, match="backend's doubt.*strict=True"):
        strict.explain(x, 1)
    with pytest.warns(SaliencyWarning, match="backend's doubt"):  # the setting was restored
        np.testing.assert_array_equal(lenient.explain(x, 1), expected)
    with pytest.warns(SaliencyWarning, match="outside"):  # no call running: never strict
        warn("outside any call")


def test_strict_setting_is_per_thread() -> None:
    model, x = NumpyModel(make_spec("mlp")), np.ones((3, 6), np.float32)
    lenient = Saliency(model, backend=_Warning())
    strict = Saliency(model, backend=_Warning(), strict=True)
    inside_strict = threading.Event()
    release = threading.Event()

    class _Blocking(_Warning):
        def gradient(self, *args: Any) -> Any:  # holds the strict call open
            inside_strict.set()
            release.wait(10)
            return super().gradient(*args)

    strict.backend = _Blocking()
    errors: list[BaseException] = []

    def run_strict() -> None:
        try:
            strict.explain(x, 1)
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=run_strict)
    thread.start()
    assert inside_strict.wait(10)
    with pytest.warns(SaliencyWarning, match="backend's doubt"):  # not an error here
        lenient.explain(x, 1)
    release.set()
    thread.join(10)
    assert len(errors) == 1 and "strict=True" in str(errors[0])


@pytest.mark.parametrize(("output", "match"), [
    (lambda y: (y, y), r"returned a tuple of 2 items, not a single tensor; pass output_selector"),
    (lambda y: {"logits": y, "hidden": y}, r"a dict with keys \['hidden', 'logits'\]"),
    (lambda y: y[:1], r"model output of shape \(1, 3\) for a batch of 2"),
    (lambda y: y[:, :, None], r"model output of shape \(2, 3, 1\)"),
])
def test_outputs_that_are_not_one_tensor_are_reported(output: Any, match: str) -> None:
    spec = make_spec("mlp")

    def model(x: np.ndarray) -> Any:
        return output(NumpyModel(spec)(x))

    with pytest.raises((TypeError, ValueError), match=match):
        Saliency(model, backend="reference").explain(np.ones((2, 6), np.float32), 0)


def test_output_selector_picks_the_tensor() -> None:
    spec = make_spec("mlp")

    def model(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"logits": NumpyModel(spec)(x), "hidden": x}

    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    maps = Saliency(model, backend="reference",
                    output_selector=lambda out: out["logits"]).explain(x, 1)
    expected = Saliency(NumpyModel(spec)).explain(x, 1)
    np.testing.assert_allclose(maps, expected, rtol=1e-3, atol=1e-5)
