"""The conformance suite against the TensorFlow backend, plus TensorFlow-specific checks.

Three kinds of model run the suite: a ``tf.Module`` holding ``tf.Variable`` weights,
a plain Python function of TensorFlow ops (passed with ``backend="tensorflow"``),
and a ``tf.function`` wrapping the module. All are channels-last.
"""

from __future__ import annotations

import gc
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import pytest

from agnostic_saliency import Saliency, SaliencyWarning, get_backend, messages
from agnostic_saliency.backend import CallOptions
from agnostic_saliency.cache import BoundedCache as LRUCache
from agnostic_saliency.cache import ObjectKey
from agnostic_saliency.testing import BackendConformanceTests, ModelSpec, NumpyModel
from agnostic_saliency.testing.models import (
    Dense,
    make_spec,
)

tf = pytest.importorskip("tensorflow")

from agnostic_saliency_tensorflow import TensorFlowBackend, trace_count  # noqa: E402

from agnostic_saliency.testing.builders import (  # noqa: E402
    build_tensorflow,
    build_tensorflow_function,
)
from agnostic_saliency.testing.composite_builders import (  # noqa: E402
    tensorflow_masked_model,
    tensorflow_static_batch_model,
)

build_tensorflow_model = build_tensorflow


# --- the conformance suite --------------------------------------------------------------


class TestTensorFlowBackend(BackendConformanceTests):
    layout = "channels_last"

    def backend(self) -> str:
        return "tensorflow"

    def build_model(self, spec: ModelSpec) -> Any:
        return build_tensorflow_model(spec)

    def to_framework(self, array: np.ndarray) -> Any:
        return tf.constant(array)

    def build_static_batch_model(self, spec: ModelSpec, batch: int) -> Any:
        return tensorflow_static_batch_model(self.build_model(spec), spec, batch)

    def build_masked_model(self, spec: ModelSpec) -> Any:
        return tensorflow_masked_model(self.build_model(spec))


class TestTensorFlowFunction(TestTensorFlowBackend):
    """A plain Python function of TensorFlow ops: not detectable, ``backend=`` required."""

    detectable = False
    expected_failures: ClassVar[dict[str, str]] = {
        "test_pickled_explainer_gives_identical_maps":
            "a lambda closing over tensors cannot be pickled (deep copies are checked)",
    }

    def build_model(self, spec: ModelSpec) -> Any:
        return build_tensorflow_function(spec)


class TestTensorFlowTfFunction(TestTensorFlowBackend):
    """A ``tf.function`` wrapping the module: detected, and nested in the backend's trace."""

    expected_failures: ClassVar[dict[str, str]] = dict.fromkeys(
        ["test_deep_copied_explainer_gives_identical_maps",
         "test_pickled_explainer_gives_identical_maps"],
        "a called tf.function holds traced graphs (FuncGraph), which TensorFlow can "
        "neither deep-copy nor pickle")

    def build_model(self, spec: ModelSpec) -> Any:
        return tf.function(build_tensorflow_model(spec))


# --- TensorFlow-specific checks ---------------------------------------------------------


def _backend() -> TensorFlowBackend:
    backend = get_backend("tensorflow")
    assert isinstance(backend, TensorFlowBackend)
    return backend


def _inputs(spec: ModelSpec, n: int, seed: int = 1, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *spec.input_shape)).astype(dtype)


def _exact(spec: ModelSpec, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return NumpyModel(spec.cast(np.float64)).input_gradient(x.astype(np.float64), weights)


def test_can_handle_modules_and_tensorflow_callables_only() -> None:
    backend, spec = _backend(), make_spec("mlp")
    assert backend.can_handle(build_tensorflow_model(spec))
    assert backend.can_handle(tf.function(build_tensorflow_function(spec)))
    assert not backend.can_handle(build_tensorflow_function(spec))
    assert not backend.can_handle(np.zeros(3))
    assert not backend.can_handle(NumpyModel(spec))


def test_to_numpy_converts_tensors_variables_and_16_bit_floats() -> None:
    backend = _backend()
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(backend.to_numpy(tf.constant(values)), values)
    np.testing.assert_array_equal(backend.to_numpy(tf.Variable(values)), values)
    half = backend.to_numpy(tf.constant(values, dtype=tf.bfloat16))
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half, values)
    assert backend.to_numpy([1.0, 2.0]).tolist() == [1.0, 2.0]


def test_keras_model_forced_onto_this_backend_is_explained() -> None:
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras runs on another framework in this process")
    spec = make_spec("mlp", dtype=np.float64)
    dense = [layer for layer in spec.layers if isinstance(layer, Dense)]
    model = keras.Sequential([keras.Input((6,), dtype="float64"),
                              keras.layers.Dense(8, activation="tanh", dtype="float64"),
                              keras.layers.Dense(3, dtype="float64")])
    model.set_weights([value for layer in dense for value in (layer.weight, layer.bias)])
    assert Saliency(model).backend.name == "keras"  # the Keras backend is asked first
    x = _inputs(spec, 4)  # float32 inputs, up-cast to the float64 variables: nothing lost
    with warnings.catch_warnings():
        warnings.simplefilter("error", messages.SaliencyWarning)
        maps = Saliency(model, backend="tensorflow", absolute=False, strict=True).explain(x, 2)
    np.testing.assert_allclose(maps, _exact(spec, x, np.eye(3)[[2] * 4]), rtol=1e-5,
                               atol=1e-7)


def test_loaded_saved_model_is_detected_and_computes_in_its_variables_dtype(
        tmp_path: Any) -> None:
    spec = make_spec("mlp")

    class Served(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = build_tensorflow_model(spec)

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32)])
        def __call__(self, x: Any) -> Any:
            return self.inner(x)

    tf.saved_model.save(Served(), str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))  # an AutoTrackable, not a tf.Module
    explainer = Saliency(loaded, absolute=False)
    assert explainer.backend.name == "tensorflow"
    x = _inputs(spec, 3, dtype=np.float64)
    with pytest.warns(messages.SaliencyWarning, match="cast to float32"):
        maps = explainer.explain(x, 0)
    np.testing.assert_allclose(maps, _exact(spec, x, np.eye(3)[[0] * 3]), rtol=1e-5, atol=1e-6)


def test_no_retrace_for_repeated_calls_or_new_batch_sizes() -> None:
    backend, spec = _backend(), make_spec("cnn")
    model, x = build_tensorflow_model(spec), _inputs(spec, 8)
    weights = np.eye(3, dtype=np.float32)[np.arange(8) % 3]
    before = trace_count()
    for _ in range(10):
        gradient = backend.gradient(model, x, weights, None, CallOptions())
    assert trace_count() - before == 1
    np.testing.assert_allclose(gradient, _exact(spec, x, weights), rtol=1e-4, atol=1e-6)
    for n in (1, 3, 5, 8):
        gradient = backend.gradient(model, x[:n], weights[:n], None, CallOptions())
        np.testing.assert_allclose(gradient, _exact(spec, x[:n], weights[:n]), rtol=1e-4,
                                   atol=1e-6)
    assert trace_count() - before == 1


def test_explain_traces_once_per_computation_whatever_the_batch_size() -> None:
    spec = make_spec("mlp")
    explainer = Saliency(build_tensorflow_model(spec), reducer=None, absolute=False)
    x = _inputs(spec, 9)
    before = trace_count()
    explainer.explain(x, 1)  # one forward trace (output spec) and one gradient trace
    assert trace_count() - before == 2
    for n in (1, 4, 9):
        maps = explainer.explain(x[:n], np.arange(n) % 3)
        expected = _exact(spec, x[:n], np.eye(3)[np.arange(n) % 3])
        np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    assert trace_count() - before == 2


def test_operator_targets_are_tensors_and_new_values_do_not_retrace() -> None:
    spec = make_spec("mlp")
    model, x = build_tensorflow_model(spec), _inputs(spec, 6)

    def operator(model: Any, inputs: Any, targets: Any) -> Any:
        assert tf.is_tensor(targets) and targets.dtype == tf.int64
        return tf.gather(model(inputs), targets, batch_dims=1)

    explainer = Saliency(model, operator=operator, absolute=False)
    before = trace_count()
    for targets in (np.array([0, 1, 2, 0, 1, 2]), np.array([2, 2, 1, 1, 0, 0])):
        maps = explainer.explain(x, targets)
        np.testing.assert_allclose(maps, _exact(spec, x, np.eye(3)[targets]), rtol=1e-4,
                                   atol=1e-6)
    assert trace_count() - before == 1


def test_operator_with_wrong_score_shape_is_refused() -> None:
    spec = make_spec("mlp")
    model, x = build_tensorflow_model(spec), _inputs(spec, 4)
    explainer = Saliency(model, operator=lambda model, inputs, targets: model(inputs))
    with pytest.raises(ValueError, match=r"operator returned scores of shape \(4, 3\)"):
        explainer.explain(x)


@pytest.mark.parametrize("leak", ["numpy", "ignores_input"])
def test_disconnected_forward_gives_the_none_gradient_error(leak: str) -> None:
    spec = make_spec("linear_vector")
    weight, bias = (tf.constant(value) for value in vars(spec.layers[0]).values())

    class Leaky(tf.Module):
        def __call__(self, x: Any) -> Any:
            if leak == "numpy":  # leaves TensorFlow: works eagerly, breaks the tape
                return tf.constant(x.numpy() @ weight.numpy() + bias.numpy())
            return tf.zeros((tf.shape(x)[0], 4)) + bias

    with pytest.raises(RuntimeError, match="does not depend on the input"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", SaliencyWarning)  # the numpy leak also runs eagerly
        Saliency(Leaky()).explain(_inputs(spec, 3), 1)


def test_untraceable_forward_runs_eagerly_with_exact_gradients() -> None:
    spec = make_spec("mlp")
    inner = build_tensorflow_model(spec)

    class PythonLoop(tf.Module):
        def __call__(self, x: Any) -> Any:  # Python loop over the (unknown) batch size
            return tf.stack([inner(x[i:i + 1])[0] for i in range(int(x.shape[0]))])

    model, x = PythonLoop(), _inputs(spec, 5)
    with pytest.warns(SaliencyWarning,
                      match=r"could not be traced.*TypeError: .*runs eagerly") as record:
        maps = Saliency(model, absolute=False).explain(x, np.array([0, 1, 2, 1, 0]))
    assert {w.filename for w in record if w.category is SaliencyWarning} == {__file__}
    np.testing.assert_allclose(maps, _exact(spec, x, np.eye(3)[[0, 1, 2, 1, 0]]), rtol=1e-4,
                               atol=1e-6)


def test_model_failure_names_the_input_shape() -> None:
    spec = make_spec("mlp")
    model = build_tensorflow_model(spec)
    with pytest.raises(ValueError, match=r"model failed on inputs of shape \(2, 5\)"):
        _backend().predict(model, np.zeros((2, 5), np.float32), CallOptions())


def test_structured_outputs_need_a_selector() -> None:
    spec = make_spec("mlp")
    inner = build_tensorflow_model(spec)

    def model(x: Any) -> Any:
        return {"logits": inner(x), "hidden": x}

    x = _inputs(spec, 4)
    outputs = _backend().predict(model, x, CallOptions())
    assert sorted(outputs) == ["hidden", "logits"]
    np.testing.assert_array_equal(outputs["hidden"], x)
    with pytest.raises(TypeError, match=r"dict with keys \['hidden', 'logits'\]"):
        Saliency(model, backend="tensorflow").explain(x, 1)
    maps = Saliency(model, backend="tensorflow", output_selector=lambda out: out["logits"],
                    absolute=False).explain(x, 1)
    np.testing.assert_allclose(maps, _exact(spec, x, np.eye(3)[[1] * 4]), rtol=1e-4,
                               atol=1e-6)


def test_float64_model_gives_float64_maps_equal_to_the_reference() -> None:
    spec = make_spec("cnn_flatten", dtype=np.float64)
    x = _inputs(spec, 4, dtype=np.float64)
    targets = np.array([0, 2, 1, 2])
    maps = Saliency(build_tensorflow_model(spec), reducer=None, absolute=False).explain(
        x, targets)
    assert maps.dtype == np.float64
    np.testing.assert_allclose(maps, _exact(spec, x, np.eye(3)[targets]), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_inputs_give_float32_gradients(dtype: str) -> None:
    spec = make_spec("mlp")
    x = tf.cast(tf.constant(_inputs(spec, 4)), dtype).numpy()
    weights = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 16-bit inputs are cast to the variables' dtype silently
        gradient = _backend().gradient(build_tensorflow_model(spec), x, weights, None,
                                       CallOptions())
    assert gradient.dtype == np.float32
    exact = _exact(spec, x.astype(np.float64), weights)
    np.testing.assert_allclose(gradient, exact, rtol=1e-5, atol=1e-6)


def test_concurrent_explains_equal_sequential_results() -> None:
    spec = make_spec("cnn")
    explainer = Saliency(build_tensorflow_model(spec), reducer=None, absolute=False)
    batches = [_inputs(spec, n, seed=n) for n in (2, 3, 4, 5, 6, 7, 8, 9)]
    barrier = threading.Barrier(4)

    def explain(x: np.ndarray) -> np.ndarray:
        if len(x) < 6:
            barrier.wait()  # the first four start together, and trace concurrently
        return explainer.explain(x, 1)

    before = trace_count()
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(explain, batches))
    assert trace_count() - before == 2
    for x, maps in zip(batches, concurrent, strict=True):
        np.testing.assert_array_equal(maps, explainer.explain(x, 1))
        np.testing.assert_allclose(maps, _exact(spec, x, np.eye(3)[[1] * len(x)]),
                                   rtol=1e-4, atol=1e-6)


def test_cached_functions_do_not_keep_models_alive() -> None:
    spec = make_spec("mlp")
    model = build_tensorflow_model(spec)
    Saliency(model).explain(_inputs(spec, 3), 0)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_cache_is_bounded_and_least_recently_used() -> None:
    cache: LRUCache[str] = LRUCache(maxsize=2)
    cache.get_or_create("a", lambda: "A")
    cache.get_or_create("b", lambda: "B")
    assert cache.get_or_create("a", lambda: "new") == "A"  # "a" is now the most recent
    cache.get_or_create("c", lambda: "C")
    assert len(cache) == 2
    assert cache.get_or_create("b", lambda: "rebuilt") == "rebuilt"


def test_object_keys_compare_by_identity_and_die_with_their_object() -> None:
    class Equal:
        def __eq__(self, other: object) -> bool:  # equal to everything, unhashable
            return True

        def method(self) -> None:
            pass

    first, second = Equal(), Equal()
    assert ObjectKey(first) == ObjectKey(first) and ObjectKey(first) != ObjectKey(second)
    assert ObjectKey(first.method) == ObjectKey(first.method)
    key = ObjectKey(second)
    del second
    gc.collect()
    assert not key.alive and key.get() is None and key != key


def test_out_of_memory_is_raised_as_it_is_and_recognised() -> None:
    """An allocation failure is not the model's fault: it reaches the frontend unwrapped
    (to retry with smaller chunks), and ``is_out_of_memory`` says what it is."""

    @tf.autograph.experimental.do_not_convert
    def greedy(x: Any) -> Any:  # sorts 2**38 copies of the batch: no host has that memory
        copies = tf.reshape(tf.tile(x, [1 << 38, 1]), [-1])
        return x * 2.0 + tf.reduce_max(tf.sort(copies))

    backend, x = _backend(), np.ones((2, 3), np.float32)
    with pytest.raises(tf.errors.ResourceExhaustedError) as caught:
        backend.gradient(greedy, x, np.ones((2, 3), np.float32), None, CallOptions())
    assert backend.is_out_of_memory(caught.value)
    assert backend.is_out_of_memory(MemoryError())
    assert not backend.is_out_of_memory(ValueError("OOM when allocating"))
