"""Several inputs, side inputs and layer outputs on the PyTorch backend.

Expected maps come from ``torch.autograd.grad`` written out by hand per input, from
closed forms of linear models, and from the completeness of Integrated Gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from agnostic_saliency import GradientInput, IntegratedGradients, Saliency, SmoothGrad

N = 5


class ImageTable(nn.Module):
    """An image (N, 3, 6, 6) and a table (N, 5), mixed non-linearly into 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.table = nn.Linear(5, 4)
        self.head = nn.Linear(12, 3)

    def forward(self, image: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        a = torch.tanh(self.conv(image)).mean(dim=(2, 3))
        b = torch.tanh(self.table(table))
        return self.head(torch.cat([a, b, a * b], dim=1))


class KeywordOnly(ImageTable):
    """The same model, called with keyword arguments only."""

    def forward(self, *, image: torch.Tensor, table: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(image, table)


def _model(cls: type[ImageTable] = ImageTable, dtype: torch.dtype = torch.float32) -> Any:
    torch.manual_seed(0)
    return cls().to(dtype).eval()


def _pair(dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(N, 3, 6, 6)).astype(dtype), rng.normal(size=(N, 5)).astype(dtype)


TARGETS = np.array([0, 1, 2, 1, 0])


def _autograd(model: Any, image: np.ndarray, table: np.ndarray, keywords: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
    """The gradients of each sample's target logit by hand, per input."""
    a = torch.tensor(image, requires_grad=True)
    b = torch.tensor(table, requires_grad=True)
    out = model(image=a, table=b) if keywords else model(a, b)
    score = out[torch.arange(N), torch.as_tensor(TARGETS)].sum()
    ga, gb = torch.autograd.grad(score, [a, b])
    return ga.numpy(), gb.numpy()


@pytest.mark.parametrize("batch_size", [1, 2, None])
def test_two_positional_inputs_match_autograd(batch_size: Any) -> None:
    model, (image, table) = _model(), _pair()
    ga, gb = _autograd(model, image, table)
    maps = Saliency(model, batch_size=batch_size).explain((image, table), TARGETS)
    assert isinstance(maps, tuple) and maps[0].shape == (N, 6, 6) and maps[1].shape == (N, 5)
    np.testing.assert_allclose(maps[0], np.abs(ga).max(axis=1), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(maps[1], np.abs(gb), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("batch_size", [1, 2, None])
def test_a_dict_is_passed_as_keywords_and_matches_autograd(batch_size: Any) -> None:
    model, (image, table) = _model(KeywordOnly), _pair()
    ga, gb = _autograd(model, image, table, keywords=True)
    inputs = {"image": torch.from_numpy(image), "table": torch.from_numpy(table)}
    maps = Saliency(model, batch_size=batch_size).explain(inputs, TARGETS)
    assert set(maps) == {"image", "table"}
    np.testing.assert_allclose(maps["image"], np.abs(ga).max(axis=1), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(maps["table"], np.abs(gb), rtol=1e-5, atol=1e-8)
    only = Saliency(model, attribute="table", batch_size=batch_size).explain(inputs, TARGETS)
    assert only["image"] is None
    np.testing.assert_allclose(only["table"], np.abs(gb), rtol=1e-5, atol=1e-8)


def test_maps_do_not_depend_on_the_batch_size() -> None:
    model, (image, table) = _model(), _pair()
    maps = [GradientInput(model, batch_size=size, reducer=None).explain((image, table), TARGETS)
            for size in (1, 2, N)]
    for other in maps[1:]:
        for entry, expected in zip(other, maps[0], strict=True):
            np.testing.assert_allclose(entry, expected, rtol=1e-5, atol=1e-7)
    ga, gb = _autograd(model, image, table)
    np.testing.assert_allclose(maps[0][0], ga * image, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(maps[0][1], gb * table, rtol=1e-5, atol=1e-8)


class Masked(nn.Module):
    """Reads only the unmasked features: tanh((x * mask) W1) W2, or (x * mask) W1 linear."""

    def __init__(self, linear: bool) -> None:
        super().__init__()
        self.linear = linear
        self.first = nn.Linear(6, 3 if linear else 8, bias=False)
        self.second = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert mask.dtype == torch.int64  # side inputs keep their dtype
        hidden = self.first(x * mask)
        return hidden if self.linear else self.second(torch.tanh(hidden))


def _masked_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(N, 6)).astype(np.float32)
    mask = (rng.random(size=(N, 6)) > 0.4).astype(np.int64)
    mask[:, 0] = 1
    return x, mask


@pytest.mark.parametrize("batch_size", [3, None])
def test_smoothgrad_and_ig_with_a_side_input(batch_size: Any) -> None:
    torch.manual_seed(0)
    model = Masked(linear=True).eval()
    x, mask = _masked_inputs()
    weights = model.first.weight.detach().numpy()  # (3, 6)
    smooth = SmoothGrad(model, nb_samples=4, seed=0, batch_size=batch_size).explain(
        (x, mask), 2)
    assert smooth[1] is None
    np.testing.assert_allclose(smooth[0], weights[2] * mask, rtol=1e-5, atol=1e-7)
    ig = IntegratedGradients(model, steps=4, batch_size=batch_size).explain((x, mask), 2)
    np.testing.assert_allclose(ig[0], weights[2] * mask * x, rtol=1e-5, atol=1e-7)


def test_smoothgrad_of_a_non_linear_model_is_zero_exactly_where_masked() -> None:
    torch.manual_seed(0)
    model = Masked(linear=False).eval()
    x, mask = _masked_inputs()
    maps = [SmoothGrad(model, nb_samples=6, seed=3, batch_size=size).explain((x, mask), 1)[0]
            for size in (1, 4, None)]
    assert np.all(maps[0][mask == 0] == 0) and np.all(maps[0][mask == 1] != 0)
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], rtol=1e-5, atol=1e-7)


def test_ig_with_several_floating_inputs_is_complete() -> None:
    """Sum of both inputs' attributions = f(x) - f(0) (one joint path, float64)."""
    model, (image, table) = _model(dtype=torch.float64), _pair(np.float64)
    maps = IntegratedGradients(model, steps=32, reducer=None, quadrature="gausslegendre",
                               batch_size=16).explain((image, table), TARGETS)
    total = maps[0].sum(axis=(1, 2, 3)) + maps[1].sum(axis=1)
    with torch.no_grad():
        at_x = model(torch.from_numpy(image), torch.from_numpy(table)).numpy()
        at_0 = model(torch.zeros(N, 3, 6, 6, dtype=torch.float64),
                     torch.zeros(N, 5, dtype=torch.float64)).numpy()
    expected = (at_x - at_0)[np.arange(N), TARGETS]
    np.testing.assert_allclose(total, expected, rtol=1e-7, atol=1e-9)


class Tokens(nn.Module):
    """Token ids -> embeddings (the layer) -> masked mean -> 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.embed(ids)) * mask[..., None]
        return self.head(hidden.sum(dim=1))


def _tokens() -> tuple[Any, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 11, size=(N, 7))
    mask = np.ones((N, 7), np.int64)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    return Tokens().eval(), ids, mask


@pytest.mark.parametrize("batch_size", [1, 2, None])
def test_a_layer_output_is_replaced_and_differentiated(batch_size: Any) -> None:
    model, ids, mask = _tokens()
    maps = Saliency(model, layer=model.embed, reducer=None, batch_size=batch_size).explain(
        (ids, mask), TARGETS)
    embedded = torch.tanh(model.embed.weight.detach()[ids])
    # d score / d embedding = (1 - tanh^2) * mask * head row of the target.
    head = model.head.weight.detach()[TARGETS]  # (N, 4)
    expected = (1 - embedded ** 2) * torch.as_tensor(mask)[..., None] * head[:, None, :]
    np.testing.assert_allclose(maps, np.abs(expected.numpy()), rtol=1e-5, atol=1e-8)


def test_a_layer_that_returns_a_tuple_gives_its_first_tensor() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.linear(x), x

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden, _ = self.pair(x)
            return self.head(hidden)

    torch.manual_seed(0)
    model = Model().eval()
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    maps = GradientInput(model, layer=model.pair, reducer=None).explain(x, 1)
    hidden = model.pair.linear(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(maps, hidden * model.head.weight.detach().numpy()[1],
                               rtol=1e-5, atol=1e-8)


def test_layer_problems_are_named() -> None:
    model, ids, mask = _tokens()
    with pytest.raises(ValueError, match="not one of the Tokens's modules"):
        Saliency(model, layer=nn.Embedding(11, 4)).explain((ids, mask), 0)
    with pytest.raises(TypeError, match="layer= must be a torch.nn.Module"):
        Saliency(model, layer="embed").explain((ids, mask), 0)
    unused = nn.Linear(2, 2)
    model.unused = unused
    with pytest.raises(ValueError, match="did not run when the model ran"):
        Saliency(model, layer=unused).explain((ids, mask), 0)


def test_a_layer_that_runs_twice_is_refused() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(torch.tanh(self.linear(x)))

    model = Twice().eval()
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="ran 2 times in one forward pass"):
        Saliency(model, layer=model.linear).explain(x, 0)


def test_a_model_that_fails_names_the_call() -> None:
    model, (image, table) = _model(), _pair()
    with pytest.raises(ValueError, match=r"model failed when called as model\(picture="):
        Saliency(model).explain({"picture": image, "table": table}, 0)


def test_an_operator_with_several_inputs_is_refused() -> None:
    model, (image, table) = _model(), _pair()

    def operator(model: Any, inputs: Any, targets: Any) -> Any:
        return model(*inputs)[:, 0]

    with pytest.raises(TypeError, match="operator= with several inputs"):
        Saliency(model, operator=operator).explain((image, table), 0)


def test_reading_a_layer_stops_the_forward_pass_there() -> None:
    from agnostic_saliency_torch import TorchBackend

    from agnostic_saliency._structure import ModelInputs
    from agnostic_saliency.backend import CallOptions

    model, ids, mask = _tokens()
    calls: list[int] = []
    handle = model.head.register_forward_hook(lambda *_: calls.append(1))
    try:
        inputs = ModelInputs("tuple", (0, 1), {0: ids, 1: mask}, (), {}, model.embed)
        read = TorchBackend().layer_output(model, inputs, CallOptions())
    finally:
        handle.remove()
    assert calls == []  # the head never ran
    np.testing.assert_array_equal(read, model.embed.weight.detach().numpy()[ids])
