"""PyTorch models as users bring them: training mode, ``torch.export`` programs, memory
layouts, and a ResNet-style network against Captum."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import CallOptions, Saliency, SaliencyWarning, get_backend

torch = pytest.importorskip("torch")
nn = torch.nn


def _autograd_map(model: Any, x: np.ndarray, targets: list[int], channels_last: bool = False
                  ) -> np.ndarray:
    """|d output[i, targets[i]] / d x|, channels kept, by plain autograd on the tensor."""
    tensor = torch.from_numpy(x.copy())
    if channels_last:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    tensor.requires_grad_(True)
    outputs = model(tensor)
    (grad,) = torch.autograd.grad(outputs[torch.arange(len(x)), targets].sum(), tensor)
    return np.abs(grad.numpy())


def _mlp(*middle: Any) -> Any:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), *middle, nn.Tanh(), nn.Linear(8, 3))


def _rows(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)


# --- training mode ------------------------------------------------------------------


def test_training_mode_refusal_names_exactly_the_modules_that_depend_on_it() -> None:
    model = _mlp(nn.Dropout(0.5), nn.BatchNorm1d(8), nn.LayerNorm(8)).train()
    with pytest.raises(ValueError, match=r"training mode.*: \[1 \(Dropout\), 2 \(BatchNorm1d\)\];"
                                         r".*Call model\.eval\(\) first or pass "
                                         r"allow_training_mode=True"):
        Saliency(model).explain(_rows(), 1)
    assert all(module.training for module in model.modules())


@pytest.mark.parametrize("layer", [
    nn.LSTM(8, 8, num_layers=2, dropout=0.2), nn.GRU(8, 8, num_layers=2, dropout=0.2),
    nn.MultiheadAttention(8, 2, dropout=0.1), nn.RReLU(), nn.AlphaDropout(0.2),
    nn.InstanceNorm1d(8, track_running_stats=True), nn.LazyBatchNorm1d()])
def test_each_mode_dependent_torch_module_is_refused(layer: Any) -> None:
    model = nn.Sequential(nn.Linear(6, 8), layer).train()
    with pytest.raises(ValueError, match=rf"\[1 \({type(layer).__name__}\)\]"):
        get_backend("torch").predict(model, _rows(), CallOptions())  # refused before it runs


@pytest.mark.parametrize("middle", [
    (), (nn.Dropout(0.0),), (nn.BatchNorm1d(8, track_running_stats=False),),
    (nn.Unflatten(1, (2, 4)), nn.InstanceNorm1d(2), nn.Flatten()),
    (nn.LayerNorm(8), nn.Identity())], ids=[
    "linear", "dropout-0", "batch-norm-without-running-stats", "instance-norm", "layer-norm"])
def test_torch_modules_that_ignore_the_mode_are_explained_in_training_mode(middle: Any) -> None:
    model = _mlp(*middle).train()
    x = _rows()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps = Saliency(model, reducer=None).explain(x, [0, 1, 2, 1])
    np.testing.assert_allclose(maps, _autograd_map(model, x, [0, 1, 2, 1]), rtol=1e-6,
                               atol=1e-7)
    assert all(module.training for module in model.modules())


class _Gate(nn.Module):
    """A module of the user's own: its forward reads ``self.training``."""

    def forward(self, x: Any) -> Any:
        return x * 0.5 if self.training else x


def test_a_custom_module_in_training_mode_warns_with_its_name_and_is_explained() -> None:
    model = _mlp(_Gate()).train()
    x = _rows()
    with pytest.warns(SaliencyWarning, match=r"your own classes.*: \[1 \(_Gate\)\]\. "
                                             r"Call model\.eval\(\)") as record:
        maps = Saliency(model, reducer=None).explain(x, [0, 1, 2, 1])
    assert {w.filename for w in record if w.category is SaliencyWarning} == {__file__}
    np.testing.assert_allclose(maps, _autograd_map(model, x, [0, 1, 2, 1]), rtol=1e-6)
    with pytest.raises(RuntimeError, match=r"\[1 \(_Gate\)\].*strict=True"):
        Saliency(model, strict=True).explain(x, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Saliency(model, allow_training_mode=True).explain(x, 1)
        Saliency(model.eval()).explain(x, 1)


def test_a_torchscript_model_in_training_mode_is_refused_by_its_modules_classes() -> None:
    scripted = torch.jit.script(_mlp(nn.Dropout(0.5)).eval()).train()
    with pytest.raises(ValueError, match=r"\[1 \(Dropout\)\]"):
        Saliency(scripted).explain(_rows(), 1)
    np.testing.assert_allclose(Saliency(scripted.eval()).explain(_rows(), 1),
                               np.abs(_autograd_map(scripted, _rows(), [1] * 4)), rtol=1e-6)


# --- torch.export and the meta device -------------------------------------------------


def _normalised_cnn() -> Any:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(4 * 5 * 4, 3)).eval()


@pytest.mark.parametrize("form", ["program", "module"])
def test_exported_programs_and_their_modules_are_explained_as_the_model(form: str) -> None:
    model = _normalised_cnn()
    x = np.random.default_rng(1).normal(size=(2, 3, 7, 6)).astype(np.float32)
    program = torch.export.export(model, (torch.from_numpy(x),))  # a static batch of 2
    exported = program if form == "program" else program.module()
    maps = Saliency(exported, reducer=None).explain(x, [2, 0])
    np.testing.assert_allclose(maps, _autograd_map(model, x, [2, 0]), rtol=1e-5, atol=1e-7)
    predicted = model(torch.from_numpy(x)).argmax(1).tolist()
    np.testing.assert_allclose(Saliency(exported, reducer=None).explain(x),
                               _autograd_map(model, x, predicted), rtol=1e-5, atol=1e-7)


def test_weights_built_on_the_meta_device_name_the_cause_and_the_fix() -> None:
    with torch.device("meta"):
        model = _mlp(nn.Dropout(0.1))  # in training mode too: the weights come first
    with pytest.raises(ValueError, match=r"\[0\.weight, 0\.bias, 3\.weight, 3\.bias\] are on "
                                         r"the 'meta' device.*init_empty_weights.*to_empty"):
        Saliency(model).explain(_rows(), 1)


# --- memory layout --------------------------------------------------------------------


class _Recorder(nn.Module):
    """A convolution and a head; records whether its input was channels-last."""

    def __init__(self, flat_memory: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4 * 5 * 4, 3)
        self.direct = nn.Linear(3 * 7 * 6, 3)
        self.flat_memory = flat_memory
        self.channels_last: list[bool] = []

    def forward(self, x: Any) -> Any:
        self.channels_last.append(not x.is_contiguous())
        features = torch.tanh(self.conv(x))
        if self.flat_memory:  # reads the memory as if it were NCHW, whatever the strides
            n = len(x)
            features = features.as_strided((n, features[0].numel()),
                                           (features[0].numel(), 1))
            return self.head(features) + self.direct(x.view(n, -1))
        return self.head(features.flatten(1))


def test_a_model_that_reads_nchw_memory_gets_plain_autograds_map_exactly() -> None:
    model = _Recorder(flat_memory=True).eval()
    x = np.random.default_rng(2).normal(size=(3, 3, 7, 6)).astype(np.float32)
    maps = Saliency(model, reducer=None).explain(x, [0, 2, 1])
    assert model.channels_last == [False] * len(model.channels_last)
    np.testing.assert_array_equal(maps, _autograd_map(model, x, [0, 2, 1]))


def test_channels_last_weights_make_the_model_get_channels_last_inputs() -> None:
    model = _Recorder().eval().to(memory_format=torch.channels_last)
    x = np.random.default_rng(2).normal(size=(3, 3, 7, 6)).astype(np.float32)
    maps = Saliency(model, reducer=None).explain(x, [0, 2, 1])
    assert model.channels_last and all(model.channels_last)
    expected = _autograd_map(model, x, [0, 2, 1], channels_last=True)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


# --- a ResNet-style network against Captum ------------------------------------------


class _Block(nn.Module):
    """A ResNet basic block: two 3x3 convolutions with batch norm, and the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Any) -> Any:
        return torch.relu(self.body(x) + self.shortcut(x))


def _resnet() -> Any:
    """ResNet-18's shape (a 7x7 stem, max pooling, four stages of two blocks), narrower;
    its batch norms hold non-trivial running statistics."""
    torch.manual_seed(0)
    widths = (4, 8, 16, 32)
    layers: list[Any] = [nn.Conv2d(3, 4, 7, 2, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1)]
    for stage, width in enumerate(widths):
        cin = widths[max(stage - 1, 0)]
        layers += [_Block(cin, width, 1 if stage == 0 else 2), _Block(width, width, 1)]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_captum_preset_equals_captum_saliency_on_a_resnet() -> None:
    from captum.attr import Saliency as CaptumSaliency

    model = _resnet()
    x = np.random.default_rng(3).normal(size=(2, 3, 224, 224)).astype(np.float32)
    targets = [3, 7]
    expected = CaptumSaliency(model).attribute(torch.from_numpy(x.copy()),
                                                target=targets, abs=True)
    maps = Saliency(model, preset="captum").explain(x, targets)
    assert maps.shape == (2, 3, 224, 224) and float(np.abs(maps).max()) > 0
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-5,
                               atol=1e-6 * float(np.abs(maps).max()))


# --- out of memory --------------------------------------------------------------------


class _OutOfMemory(nn.Module):
    def forward(self, x: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_errors_reach_the_frontend_as_they_are() -> None:
    backend = get_backend("torch")
    assert backend.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert backend.is_out_of_memory(MemoryError())
    assert not backend.is_out_of_memory(RuntimeError("CUDA error: device-side assert"))
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate"):
        backend.gradient(_OutOfMemory().eval(), _rows(), np.zeros(4, int), None, CallOptions())
