"""Keras-specific checks, mixed into the conformance classes of every Keras backend.

They run in the main process for Keras on TensorFlow and in child processes for
Keras on JAX and on PyTorch (see ``keras_suite.py``). Values are compared with the
exact gradients of :mod:`agnostic_saliency.testing`, not only shapes.
"""

from __future__ import annotations

import gc
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import pytest
from agnostic_saliency_keras import trace_count

from agnostic_saliency import Saliency, get_backend
from agnostic_saliency.backend import CallOptions
from agnostic_saliency.messages import SaliencyWarning
from agnostic_saliency.testing import ModelSpec, NumpyModel, make_spec
from agnostic_saliency.testing.composite_builders import (
    keras_embedding_model,
    keras_masked_model,
    keras_product_model,
    keras_static_batch_model,
)
from keras_process.keras_models import (
    CHANNELS_FIRST_SIZE,
    build_channels_first_cnn,
    build_keras_model,
    shared_keras_model,
)

__all__ = ["KerasChecks", "channels_first_batch_norm"]


class KerasChecks:
    """Checks of the Keras backend; mix in before ``BackendConformanceTests``.

    Attributes
    ----------
    framework
        The Keras backend the class is for; the class is skipped on any other.
    traces
        Gradient functions traced for one signature, and in all after a second
        batch size (TensorFlow leaves the batch axis unknown; ``jax.jit``
        specialises on it; PyTorch runs eagerly).
    """

    framework: ClassVar[str] = ""
    traces: ClassVar[tuple[int, int]] = (0, 0)

    # Provided by BackendConformanceTests.
    spec: Any
    inputs: Any
    model: Any
    saliency: Any
    exact_gradient: Any
    one_hot: Any
    assert_close: Any
    resolved_backend: Any

    @pytest.fixture(autouse=True)
    def _on_this_keras_backend(self) -> None:
        import keras

        if keras.backend.backend() != self.framework:
            pytest.skip(f"Keras runs on {keras.backend.backend()!r} in this process, not on "
                        f"{self.framework!r}; set KERAS_BACKEND={self.framework} to run these")

    def build_model(self, spec: ModelSpec) -> Any:
        # Shared between checks, so compiled functions are reused (checks that change a
        # model, count traces or need a model of their own call build_keras_model).
        return shared_keras_model(spec)

    def to_framework(self, array: np.ndarray) -> Any:
        import keras

        return keras.ops.convert_to_tensor(array.copy())

    def build_static_batch_model(self, spec: ModelSpec, batch: int) -> Any:
        return keras_static_batch_model(spec, batch)

    def build_product_model(self, first: ModelSpec, second: ModelSpec,
                            names: tuple[str, str] | None = None) -> Any:
        return keras_product_model(first, second, names)

    def build_masked_model(self, spec: ModelSpec) -> Any:
        return keras_masked_model(spec)

    def build_embedding_model(self, spec: ModelSpec, table: np.ndarray) -> tuple[Any, Any]:
        return keras_embedding_model(spec, table)

    def test_detection_picks_keras_not_the_framework(self) -> None:
        import keras

        model = self.model(self.spec("cnn"))
        assert Saliency(model).backend.name == "keras"
        if keras.backend.backend() == "torch":
            import torch

            # The trap detection must avoid: the torch backend would accept it too.
            assert isinstance(model, torch.nn.Module)
            assert get_backend("torch").can_handle(model)

    def test_dropout_is_inactive(self) -> None:
        spec = self.spec("mlp")
        model, plain = build_keras_model(spec, dropout=0.5), self.model(spec)
        x, targets = self.inputs(spec, n=16), np.array([0, 1, 2, 1] * 4)
        explainer = self.saliency(model, reducer=None, absolute=False)
        maps = explainer.explain(x, targets)
        expected = self.exact_gradient(spec, x, self.one_hot(targets, spec.n_outputs))
        self.assert_close(maps, expected, scale=float(np.abs(expected).max()))
        np.testing.assert_array_equal(explainer.explain(x, targets), maps)
        without = self.saliency(plain, reducer=None, absolute=False).explain(x, targets)
        np.testing.assert_allclose(maps, without, rtol=1e-6, atol=1e-7)
        predicted = self.resolved_backend().predict(model, x, CallOptions())
        self.assert_close(predicted, NumpyModel(spec)(x.astype(np.float64)))

    def test_equal_shapes_trace_once(self) -> None:
        spec = self.spec("cnn")
        explainer, x = self.saliency(build_keras_model(spec)), self.inputs(spec, n=4)
        before = trace_count()
        maps = [explainer.explain(x, target) for target in (0, 1, 2, 1)]
        assert trace_count() - before == self.traces[0]
        expected = np.abs(self.exact_gradient(spec, x, self.one_hot(np.full(4, 2), 3)))
        self.assert_close(maps[2], expected.max(axis=-1), scale=float(expected.max()))
        explainer.explain(self.inputs(spec, n=3), 1)
        explainer.explain(x, 0)
        assert trace_count() - before == self.traces[1]

    def test_weights_set_after_the_first_call_are_used(self) -> None:
        spec, other = self.spec("linear_vector"), self.spec("linear_vector", seed=5)
        model, x = build_keras_model(spec), self.inputs(spec)

        def operator(model: Any, inputs: Any, targets: Any) -> Any:
            return model(inputs)[:, 1]

        by_target, by_operator = self.saliency(model), self.saliency(model, operator=operator)
        for current in (spec, other, spec):
            dense = current.layers[0]
            model.layers[0].set_weights([dense.weight, dense.bias])
            expected = np.broadcast_to(np.abs(dense.weight[:, 1]), x.shape)
            self.assert_close(by_target.explain(x, 1), expected)
            self.assert_close(by_operator.explain(x), expected)

    def test_concurrent_explain_equals_sequential(self) -> None:
        spec = self.spec("cnn")
        explainer = self.saliency(build_keras_model(spec))  # new: first compiles race
        batches = [self.inputs(spec, n=3, seed=seed) for seed in range(8)]

        def explain(index: int) -> np.ndarray:
            return explainer.explain(batches[index], index % 3)

        with ThreadPoolExecutor(max_workers=4) as pool:
            concurrent = list(pool.map(explain, range(len(batches))))
        for index, maps in enumerate(concurrent):
            np.testing.assert_allclose(maps, explain(index), rtol=1e-6, atol=1e-7)
            weights = self.one_hot(np.full(3, index % 3), 3)
            expected = np.abs(self.exact_gradient(spec, batches[index], weights)).max(axis=-1)
            self.assert_close(maps, expected, scale=float(expected.max()))

    def test_output_selector_picks_one_output_of_a_dict(self) -> None:
        import keras

        spec = self.spec("mlp")
        inputs = keras.Input(spec.input_shape)
        logits = build_keras_model(spec)(inputs)
        model = keras.Model(inputs, {"logits": logits, "scaled": logits * 2.0})
        x, targets = self.inputs(spec), np.array([0, 1, 2, 1, 0])
        outputs = self.resolved_backend().predict(model, x, CallOptions())
        assert isinstance(outputs, dict) and sorted(outputs) == ["logits", "scaled"]
        np.testing.assert_allclose(outputs["scaled"], 2 * outputs["logits"], rtol=1e-6)
        maps = self.saliency(model, output_selector=lambda out: out["scaled"], reducer=None,
                             absolute=False).explain(x, targets)
        expected = 2 * self.exact_gradient(spec, x, self.one_hot(targets, 3))
        self.assert_close(maps, expected, scale=float(np.abs(expected).max()))
        with pytest.raises(TypeError, match="keys \\['logits', 'scaled'\\]"):
            self.saliency(model).explain(x, targets)

    def test_operator_gets_targets_as_tensors(self) -> None:
        import keras

        spec = self.spec("mlp")
        model, x, targets = self.model(spec), self.inputs(spec), np.array([2, 0, 1, 1, 2])

        def operator(model: Any, inputs: Any, targets: Any) -> Any:
            assert keras.ops.is_tensor(targets)
            return keras.ops.take_along_axis(model(inputs), targets[:, None], axis=1)[:, 0]

        maps = self.saliency(model, operator=operator).explain(x, targets)
        self.assert_close(maps, self.saliency(model).explain(x, targets))

    def test_operator_with_wrong_shape_is_refused(self) -> None:
        spec = self.spec("mlp")
        explainer = self.saliency(self.model(spec), operator=lambda m, x, t: m(x))
        with pytest.raises(ValueError, match=r"operator returned scores of shape \(5, 3\)"):
            explainer.explain(self.inputs(spec))

    def test_model_failure_names_the_input_shape(self) -> None:
        backend, model = self.resolved_backend(), self.model(self.spec("mlp"))
        x = np.zeros((2, 5), np.float32)
        with pytest.raises(ValueError, match=r"model failed on inputs of shape \(2, 5\)"):
            backend.predict(model, x, CallOptions())
        with pytest.raises(ValueError, match=r"model failed on inputs of shape \(2, 5\)"):
            backend.gradient(model, x, np.ones((2, 3), np.float32), None, CallOptions())

    def test_float64_inputs_are_cast_to_a_float32_model_with_a_warning(self) -> None:
        spec = self.spec("cnn")
        x = self.inputs(spec, dtype=np.float64)
        with pytest.warns(SaliencyWarning, match="inputs are float64 but the model computes "
                                                 "in float32"):
            maps = self.saliency(self.model(spec)).explain(x, 1)
        expected = np.abs(self.exact_gradient(spec, x, self.one_hot(np.ones(5, int), 3)))
        assert maps.dtype == np.float64
        self.assert_close(maps, expected.max(axis=-1), scale=float(expected.max()))

    def test_float16_inputs_give_float32_maps(self) -> None:
        spec = self.spec("mlp")
        x = self.inputs(spec, dtype=np.float16)
        maps = self.saliency(self.model(spec), absolute=False).explain(x, 2)
        assert maps.dtype == np.float32
        expected = self.exact_gradient(spec, x.astype(np.float32), self.one_hot(np.full(5, 2), 3))
        self.assert_close(maps, expected)

    @pytest.mark.parametrize("with_operator", [False, True])
    def test_unbuilt_subclassed_model_without_a_training_argument(self, with_operator: bool
                                                                 ) -> None:
        import keras

        kernel = np.random.default_rng(7).normal(size=(6, 3)).astype(np.float32)
        constant = keras.initializers.Constant(kernel)

        class Net(keras.Model):
            def __init__(self) -> None:
                super().__init__()
                self.dense = keras.layers.Dense(3, kernel_initializer=constant)

            def call(self, inputs: Any) -> Any:  # no `training`: it must not be passed
                return self.dense(inputs)

        model, x = Net(), self.inputs(self.spec("mlp"))
        if with_operator:  # no predict first: the backend builds the model itself
            explainer = self.saliency(model, operator=lambda m, x, t: m(x)[:, 2],
                                      absolute=False)
            maps = explainer.explain(x)
        else:
            maps = self.saliency(model, absolute=False).explain(x, 2)
        self.assert_close(maps, np.broadcast_to(kernel[:, 2], x.shape))

    def test_score_independent_of_the_input(self) -> None:
        import keras

        spec = self.spec("mlp")
        explainer = self.saliency(self.model(spec),
                                  operator=lambda m, x, t: keras.ops.ones_like(x[:, 0]))
        if keras.backend.backend() == "jax":  # JAX answers zeros, never None
            with pytest.warns(SaliencyWarning, match="identically zero"):
                maps = explainer.explain(self.inputs(spec))
            np.testing.assert_array_equal(maps, 0)
        else:
            with pytest.raises(RuntimeError, match="with respect to the input is None"):
                explainer.explain(self.inputs(spec))

    def test_the_cache_does_not_keep_models_alive(self) -> None:
        spec = self.spec("mlp")
        model = build_keras_model(spec)
        self.saliency(model).explain(self.inputs(spec), 1)
        reference = weakref.ref(model)
        del model
        gc.collect()
        assert reference() is None

    def test_out_of_memory_is_raised_as_it_is_and_recognised(self) -> None:
        """An allocation failure is not the model's fault: it reaches the frontend as
        the framework raised it (to retry with smaller chunks), not as a model error."""
        backend, x = self.resolved_backend(), np.ones((2, 3), np.float32)
        with pytest.raises(Exception) as caught:
            backend.gradient(_greedy_layer(), x, np.ones((2, 3), np.float32), None,
                             CallOptions())
        assert backend.is_out_of_memory(caught.value), repr(caught.value)
        assert not isinstance(caught.value, ValueError)
        assert backend.is_out_of_memory(MemoryError())
        assert not backend.is_out_of_memory(ValueError("RESOURCE_EXHAUSTED"))

    # --- channels-first images (issue 25 item 1) --------------------------------------

    def _channels_first(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """A channels-first ``Conv2D`` model, targets ``[0, 1, 2, 1, 0]``, inputs
        ``(5, 3, 9, 8)`` and the exact signed gradient."""
        spec = make_spec("cnn", layout="channels_first")
        x = np.random.default_rng(1).normal(size=(5, 3, *CHANNELS_FIRST_SIZE)).astype(np.float32)
        targets = np.array([0, 1, 2, 1, 0])
        exact = self.exact_gradient(spec, x, self.one_hot(targets, spec.n_outputs))
        return build_channels_first_cnn(spec), targets, x, exact

    def test_model_channel_axis_comes_from_the_layers(self) -> None:
        import keras

        backend = self.resolved_backend()
        first = build_channels_first_cnn(make_spec("cnn", layout="channels_first"))
        last = build_keras_model(self.spec("cnn"))
        assert backend.model_channel_axis(first, 4) == 1
        assert backend.model_channel_axis(last, 4) == -1
        assert backend.model_channel_axis(build_keras_model(self.spec("mlp")), 4) is None
        assert backend.model_channel_axis(first, 2) is None  # no channels in a vector
        nested = keras.Sequential([keras.Input((3, *CHANNELS_FIRST_SIZE)), first])
        assert backend.model_channel_axis(nested, 4) == 1
        moved = keras.Sequential([keras.Input((*CHANNELS_FIRST_SIZE, 3)),
                                  keras.layers.Permute((3, 1, 2)), first])
        assert backend.model_channel_axis(moved, 4) is None  # its layers see another layout

    def test_channels_first_conv_gradient_is_exact(self) -> None:
        from agnostic_saliency_keras import KerasBackend

        model, targets, x, exact = self._channels_first()
        # XLA: TensorFlow's CPU kernels have no NCHW convolution; XLA's do.
        backend = KerasBackend(jit_compile=True)
        gradient = backend.gradient(model, x, targets, None, CallOptions())
        scale = float(np.abs(exact).max())
        self.assert_close(gradient, exact, scale=scale)
        self.assert_close(np.abs(gradient).max(axis=1), np.abs(exact).max(axis=1), scale=scale)

    def test_channels_first_maps_end_to_end(self) -> None:
        """LEAD VERIFIES AFTER MERGE: needs the frontend to ask
        ``backend.model_channel_axis(model, x.ndim)`` when no ``channel_axis`` is given;
        fails before that (the maps are then reduced over the last axis).

        TensorFlow's CPU kernels have no NCHW convolution, so on Keras' TensorFlow
        backend the channels-first model is a ``BatchNormalization(axis=1)`` network.
        """
        if self.framework == "tensorflow":
            model, targets, x, exact = channels_first_batch_norm()
        else:
            model, targets, x, exact = self._channels_first()
        maps = Saliency(model).explain(x, targets)
        assert maps.shape == (x.shape[0], *x.shape[2:])
        self.assert_close(maps, np.abs(exact).max(axis=1), scale=float(np.abs(exact).max()))


def channels_first_batch_norm() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """``BatchNormalization(axis=1)``, ``Flatten``, ``Dense`` on ``(5, 3, 7, 6)`` inputs, with
    targets and the exact signed gradient: each dense column, reshaped to ``(3, 7, 6)``,
    times each channel's ``gamma / sqrt(variance + epsilon)``."""
    import keras

    rng = np.random.default_rng(3)
    gamma, beta = rng.uniform(0.5, 2.0, 3), rng.normal(size=3)
    mean, variance = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    weight, bias = rng.normal(size=(3 * 7 * 6, 3)) / 10, rng.normal(size=3)
    model = keras.Sequential([keras.Input((3, 7, 6)), keras.layers.BatchNormalization(axis=1),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    norm = model.layers[0]
    norm.set_weights([value.astype(np.float32) for value in (gamma, beta, mean, variance)])
    model.layers[-1].set_weights([weight.astype(np.float32), bias.astype(np.float32)])
    x = np.random.default_rng(1).normal(size=(5, 3, 7, 6)).astype(np.float32)
    targets = np.array([0, 1, 2, 1, 0])
    scale = gamma / np.sqrt(variance + norm.epsilon)
    exact = weight[:, targets].T.reshape(5, 3, 7, 6) * scale[None, :, None, None]
    return model, targets, x, exact


def _greedy_layer() -> Any:
    """A Keras layer whose forward sorts 2**38 copies of its input: no host has the memory."""
    import keras

    class Greedy(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            copies = keras.ops.reshape(keras.ops.tile(x, (1 << 38, 1)), (-1,))
            return x * 2.0 + keras.ops.max(keras.ops.sort(copies))

    return Greedy()
