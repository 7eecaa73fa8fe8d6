"""The conformance suite against the PyTorch backend, and PyTorch's own failure cases."""

from __future__ import annotations

import gc
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from torch_cnn import small_cnn as _cnn

from agnostic_saliency import Saliency, SaliencyWarning, SmoothGrad
from agnostic_saliency.testing import BackendConformanceTests, ModelSpec, make_spec
from agnostic_saliency.testing.builders import build_torch
from agnostic_saliency.testing.composite_builders import (
    torch_embedding_model,
    torch_masked_model,
    torch_product_model,
    torch_static_batch_model,
)
from agnostic_saliency.testing.reference import NumpyModel

torch = pytest.importorskip("torch")


class TestTorchBackend(BackendConformanceTests):
    layout = "channels_first"

    def backend(self) -> str:
        return "torch"

    def build_model(self, spec: ModelSpec) -> Any:
        return build_torch(spec)

    def to_framework(self, array: np.ndarray) -> Any:
        return torch.from_numpy(array.copy())

    def build_static_batch_model(self, spec: ModelSpec, batch: int) -> Any:
        return torch_static_batch_model(spec, batch)

    def build_product_model(self, first: ModelSpec, second: ModelSpec,
                            names: tuple[str, str] | None = None) -> Any:
        return torch_product_model(first, second, names)

    def build_masked_model(self, spec: ModelSpec) -> Any:
        return torch_masked_model(spec)

    def build_embedding_model(self, spec: ModelSpec, table: np.ndarray) -> tuple[Any, Any]:
        return torch_embedding_model(spec, table)


def _state(model: Any) -> dict[str, Any]:
    return {
        "tensors": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
        "grads": {name: None if p.grad is None else p.grad.clone()
                  for name, p in model.named_parameters()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "training": {name: module.training for name, module in model.named_modules()},
        "grad_mode": torch.is_grad_enabled(),
    }


def _assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["grad_mode"] == after["grad_mode"]
    for name, tensor in before["tensors"].items():
        assert torch.equal(tensor, after["tensors"][name]), name
    for name, grad in before["grads"].items():
        other = after["grads"][name]
        assert (grad is None and other is None) or torch.equal(grad, other), name


def _nested() -> tuple[Any, np.ndarray]:
    """An MLP whose layers sit two containers deep: (Sequential(Sequential(ModuleList)))."""
    torch.manual_seed(0)
    inner = torch.nn.ModuleList([torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)])

    class Body(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = inner

        def forward(self, x: Any) -> Any:
            for layer in self.layers:
                x = layer(x)
            return x

    model = torch.nn.Sequential(torch.nn.Sequential(Body())).eval()
    return model, np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)


@pytest.mark.parametrize("change", ["replace", "insert", "setattr"])
def test_a_training_layer_added_deep_in_a_model_is_seen_on_the_next_call(change: str) -> None:
    model, x = _nested()
    explainer = Saliency(model)
    explainer.explain(x, 0)  # the backend now knows the module tree
    layers = model[0][0].layers
    dropout = torch.nn.Dropout(0.5).train()
    if change == "replace":
        layers[1] = dropout
    elif change == "insert":  # ModuleList.insert bypasses PyTorch's registration hooks
        layers.insert(1, dropout)
    else:
        model[0][0].extra = dropout
    with pytest.raises(ValueError, match=r"training mode.*\[0\.0\.(layers\.1|extra) \(Dropout\)\]"):
        explainer.explain(x, 0)


def test_a_layer_replaced_deep_in_a_model_sets_the_computation_dtype() -> None:
    model, x = _nested()
    x = x.astype(np.float64)
    explainer = Saliency(model, reducer=None, absolute=False)
    with pytest.warns(SaliencyWarning, match="they are cast to float32"):
        explainer.explain(x, 0)  # a float32 model
    layers = model[0][0].layers
    for index in (0, 2):  # new float64 layers, with new parameter objects
        old = layers[index]
        fresh = torch.nn.Linear(old.in_features, old.out_features, dtype=torch.float64)
        fresh.load_state_dict({name: value.double() for name, value in old.state_dict().items()})
        layers[index] = fresh.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cast now: the model computes in float64
        maps = explainer.explain(x, 0)
    leaf = torch.from_numpy(x).requires_grad_(True)
    (expected,) = torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-12)


@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "enable_grad"])
def test_grad_mode_of_the_caller_does_not_matter_and_is_restored(context: str) -> None:
    model, x, expected = _cnn()
    with getattr(torch, context)():
        before = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        maps = Saliency(model).explain(x, [0, 1, 2, 1])
        assert (torch.is_grad_enabled(), torch.is_inference_mode_enabled()) == before
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


def test_inference_tensors_are_accepted() -> None:
    model, x, expected = _cnn()
    with torch.inference_mode():
        inputs = torch.from_numpy(x).clone()
    maps = Saliency(model).explain(inputs, [0, 1, 2, 1])
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


def test_parameters_grads_flags_and_buffers_are_unchanged_even_after_an_error() -> None:
    model, x, _ = _cnn()
    model.add_module("norm", torch.nn.BatchNorm1d(3).eval())
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[0].bias.requires_grad_(False)
    before = _state(model)
    Saliency(model).explain(x, 1)
    _assert_same_state(before, _state(model))
    with pytest.raises(ValueError, match="target 7 out of range"):
        Saliency(model).explain(x, 7)
    with pytest.raises(ValueError, match="model failed on inputs of shape"):
        Saliency(model).explain(x[:, :2], 1)
    _assert_same_state(before, _state(model))


class _InPlace(torch.nn.Module):
    """Normalises its input in place and uses an in-place ReLU."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x: Any) -> Any:
        x.sub_(0.5).mul_(2.0)
        return self.inner(self.relu(x))


def test_in_place_operations_in_forward_work_and_never_touch_the_input() -> None:
    model, x, _ = _cnn()
    wrapped = _InPlace(model).eval()
    original = x.copy()
    maps = Saliency(wrapped, reducer=None, absolute=False).explain(x, 1)
    np.testing.assert_array_equal(x, original)
    inner_gradient = Saliency(model, reducer=None, absolute=False).explain(
        np.maximum(2 * (x - 0.5), 0), 1)
    np.testing.assert_allclose(maps, 2 * inner_gradient * (x > 0.5), rtol=1e-5, atol=1e-7)
    tensor = torch.from_numpy(x.copy())
    Saliency(wrapped).explain(tensor, 1)
    np.testing.assert_array_equal(tensor.numpy(), original)


class _Detached(torch.nn.Module):
    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Any) -> Any:
        return self.inner(x.detach())


def test_detached_forward_is_an_error_not_a_zero_map() -> None:
    model, x, _ = _cnn()
    with pytest.raises(RuntimeError, match="gradient of the target score .* is None"):
        Saliency(_Detached(model).eval()).explain(x, 1)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with pytest.raises(RuntimeError, match="is None"):
        Saliency(_Detached(model).eval()).explain(x, 1)


def test_model_returning_a_dict_names_its_keys_and_the_selector_fixes_it() -> None:
    model, x, expected = _cnn()

    class Outputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: Any) -> Any:
            return {"logits": self.inner(x), "features": x}

    wrapped = Outputs().eval()
    with pytest.raises(TypeError, match=r"a dict with keys \['features', 'logits'\].*"
                                        r"output_selector"):
        Saliency(wrapped).explain(x, 1)
    maps = Saliency(wrapped, output_selector=lambda out: out["logits"]).explain(x, [0, 1, 2, 1])
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


def test_float64_inputs_to_a_float32_model_warn_and_keep_float64() -> None:
    model, x, expected = _cnn()
    with pytest.warns(SaliencyWarning, match="inputs are float64 but the model computes in "
                                             "float32") as record:
        maps = Saliency(model).explain(x.astype(np.float64), [0, 1, 2, 1])
    assert {w.filename for w in record if w.category is SaliencyWarning} == {__file__}
    assert maps.dtype == np.float64
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(RuntimeError, match="computes in float32.*strict=True"):
        Saliency(model, strict=True).explain(x.astype(np.float64), [0, 1, 2, 1])


def test_weights_that_do_not_match_the_outputs_name_both_shapes() -> None:
    """The backward pass starts from the weights, so their shape must be the outputs'."""
    from agnostic_saliency_torch import TorchBackend

    from agnostic_saliency.backend import CallOptions

    model, x, expected = _cnn()
    weights = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    backend = TorchBackend()
    gradient = backend.gradient(model, x, weights, None, CallOptions())
    np.testing.assert_allclose(np.abs(gradient).max(axis=1), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"targets of shape \(4, 2\) do not match the "
                                         r"model's outputs \(4, 3\)"):
        backend.gradient(model, x, weights[:, :2], None, CallOptions())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_maps_without_channels_are_the_exact_absolute_gradient(dtype: type) -> None:
    torch.manual_seed(0)
    dense = torch.nn.Linear(784, 10).to(torch.float64 if dtype == np.float64 else torch.float32)
    x = np.random.default_rng(0).normal(size=(64, 784)).astype(dtype)
    targets = np.arange(64) % 10
    maps = Saliency(dense.eval()).explain(x, targets)
    expected = np.abs(dense.weight.detach().numpy()[targets])  # d (W x + b)[t] / dx = W[t]
    assert maps.dtype == dtype and maps.flags.writeable and not np.shares_memory(maps, x)
    np.testing.assert_array_equal(maps, expected)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_models_give_finite_float32_maps(dtype: str) -> None:
    model, x, expected = _cnn()
    model = model.to(getattr(torch, dtype))
    maps = Saliency(model).explain(x, [0, 1, 2, 1])
    assert maps.dtype == np.float32 and np.all(np.isfinite(maps))
    np.testing.assert_allclose(maps, expected, rtol=0.05, atol=0.02 * expected.max())


def test_concurrent_calls_equal_sequential_calls() -> None:
    model, x, _ = _cnn()
    explainers = [Saliency(model), SmoothGrad(model, nb_samples=4, seed=1)]
    sequential = [explainer.explain(x, 1) for explainer in explainers] * 4
    barrier = threading.Barrier(8)

    def work(index: int) -> np.ndarray:
        barrier.wait()
        return explainers[index % 2].explain(x, 1)

    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(work, range(8)))
    for got, want in zip(concurrent, sequential, strict=True):
        np.testing.assert_array_equal(got, want)


class _ViewFlatten(torch.nn.Module):
    """An old-style CNN that flattens with ``.view``, which fails on channels-last tensors."""

    def __init__(self, conv: Any, dense: Any) -> None:
        super().__init__()
        self.conv, self.dense = conv, dense

    def forward(self, x: Any) -> Any:
        features = torch.tanh(self.conv(x))
        return self.dense(features.view(features.shape[0], -1))


def test_model_that_cannot_take_channels_last_inputs_still_gets_exact_maps() -> None:
    spec = make_spec("cnn_flatten", layout="channels_first")
    sequential = build_torch(spec)
    model = _ViewFlatten(sequential[0], sequential[3]).eval()
    x = np.random.default_rng(1).normal(size=(3, 2, 5, 4)).astype(np.float32)
    weights = np.eye(3)[[0, 1, 2]]
    expected = NumpyModel(spec.cast(np.float64)).input_gradient(x.astype(np.float64), weights)
    for _ in range(2):
        maps = Saliency(model, reducer=None, absolute=False).explain(x, [0, 1, 2])
        np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


class _CudnnLikeFailure(torch.autograd.Function):
    """Fails in backward exactly as cuDNN's RNN does for a model in eval mode."""

    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        return x * 1.0

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        raise RuntimeError("cudnn RNN backward can only be called in training mode")


def test_cudnn_rnn_backward_failure_says_how_to_fix_it_without_train_mode() -> None:
    model, x, _ = _cnn()

    class Recurrent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: Any) -> Any:
            return self.inner(_CudnnLikeFailure.apply(x))

    wrapped = Recurrent().eval()
    with pytest.raises(RuntimeError, match=r"cudnn.flags\(enabled=False\).*do not switch"):
        Saliency(wrapped).explain(x, 1)
    assert not any(module.training for module in wrapped.modules())


def test_weights_on_the_meta_device_are_refused_with_their_names_and_the_fix() -> None:
    model, x, _ = _cnn()
    model[-1].to("meta")  # as if built under torch.device("meta") and never loaded
    with pytest.raises(ValueError, match=r"weights \[4\.weight, 4\.bias\] are on the 'meta' "
                                         r"device.*never loaded.*model\.to_empty\(device=.*"
                                         r"load_state_dict\(state_dict, assign=True\)"):
        Saliency(model).explain(x, 1)


def test_compile_option_gives_the_eager_maps_and_leaves_the_model_alone() -> None:
    from agnostic_saliency_torch import TorchBackend

    model, x, expected = _cnn()
    before = _state(model)
    backend = TorchBackend(compile={"backend": "aot_eager"})  # no C++ toolchain needed
    explainer = Saliency(model, backend=backend)
    for _ in range(2):
        np.testing.assert_allclose(explainer.explain(x, [0, 1, 2, 1]), expected,
                                   rtol=1e-4, atol=1e-6)
    assert len(backend._runners) == 1  # compiled once, reused
    assert getattr(model, "_compiled_call_impl", None) is None  # not compiled in place
    after = _state(model)
    assert before["requires_grad"] == after["requires_grad"] and after["grads"] == before["grads"]


@pytest.mark.parametrize("value", ["yes", 1.0, None])
def test_compile_option_is_validated(value: Any) -> None:
    from agnostic_saliency_torch import TorchBackend

    with pytest.raises(TypeError, match=r"TorchBackend\(compile=.*pass False, True, or a dict"):
        TorchBackend(compile=value)


def test_a_model_explained_and_dropped_is_freed() -> None:
    model, x, _ = _cnn()
    Saliency(model).explain(x, 1)
    Saliency(model).explain(x[:, :, :, :5], 0)  # another input shape: nothing more is kept
    freed = weakref.ref(model)
    del model
    gc.collect()
    assert freed() is None
