"""The same text model's weights give the same token maps in every framework.

One architecture (``text_same_weights``: embedding, a masked mean pooling with a
per-token tanh layer or a masked self-attention block, a dense head), written by hand
as a ``torch.nn.Module``, a Keras 3 functional model (on TensorFlow here, on JAX and
PyTorch in a child process each) and a Flax NNX module, with one set of seeded NumPy
weights. ``Saliency``, ``GradientInput`` and ``IntegratedGradients`` with ``layer=``
the embedding give token maps ``(N, L)`` that must equal, within 1e-5 of the largest
score, each other and a float64 NumPy oracle: the closed-form gradient of the pooling
variant, central differences of the attention variant. A plain JAX function, given
the embeddings as an input (the documented route for functions), must agree too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from keras_process.children import child_env
from text_same_weights import (
    HIDDEN,
    METHODS,
    TARGETS,
    VARIANTS,
    VOCAB,
    expected_maps,
    explain_all,
    forward,
    method_options,
    tokens,
    weights,
)

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
pytest.importorskip("keras")

TESTS = Path(__file__).resolve().parent
TOLERANCE = 1e-5  # of the largest |score| of the expected map
CHILD_BACKENDS = ("jax", "torch")


class TorchText(torch.nn.Module):  # type: ignore[misc]
    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.mix = torch.nn.Linear(HIDDEN, HIDDEN)
        self.query, self.key, self.value = (torch.nn.Linear(HIDDEN, HIDDEN, bias=False)
                                            for _ in range(3))
        self.head = torch.nn.Linear(HIDDEN, 3)
        params = weights()
        with torch.no_grad():  # torch.nn.Linear keeps (out, in): the transposed kernels
            self.embed.weight.copy_(torch.from_numpy(params["embedding"]))
            for name in ("mix", "head"):
                getattr(self, name).weight.copy_(torch.from_numpy(params[f"{name}_kernel"].T))
                getattr(self, name).bias.copy_(torch.from_numpy(params[f"{name}_bias"]))
            for name in ("query", "key", "value"):
                getattr(self, name).weight.copy_(torch.from_numpy(params[name].T))
        self.eval()

    def forward(self, ids: Any, mask: Any) -> Any:
        hidden = self.embed(ids)
        if self.variant == "pool":
            per_token = torch.tanh(self.mix(hidden))
        else:
            scores = self.query(hidden) @ self.key(hidden).transpose(1, 2) / HIDDEN ** 0.5
            scores = scores.masked_fill(mask[:, None, :] == 0, -1e9)
            per_token = hidden + torch.softmax(scores, dim=-1) @ self.value(hidden)
        share = mask[..., None].to(hidden.dtype)
        return self.head((per_token * share).sum(dim=1) / share.sum(dim=1))


class FlaxText(nnx.Module):  # type: ignore[misc]
    def __init__(self, variant: str) -> None:
        params = weights()

        def given(name: str) -> Any:  # an initializer returning the shared weights
            return lambda key, shape, dtype: jax.numpy.asarray(params[name], dtype)

        rngs = nnx.Rngs(0)
        self.variant = variant
        self.embed = nnx.Embed(VOCAB, HIDDEN, embedding_init=given("embedding"), rngs=rngs)
        # nnx.Linear keeps (in, out), as the NumPy weights
        self.mix = nnx.Linear(HIDDEN, HIDDEN, kernel_init=given("mix_kernel"),
                              bias_init=given("mix_bias"), rngs=rngs)
        self.query, self.key, self.value = (
            nnx.Linear(HIDDEN, HIDDEN, use_bias=False, kernel_init=given(name), rngs=rngs)
            for name in ("query", "key", "value"))
        self.head = nnx.Linear(HIDDEN, 3, kernel_init=given("head_kernel"),
                               bias_init=given("head_bias"), rngs=rngs)

    def __call__(self, ids: Any, mask: Any) -> Any:
        jnp = jax.numpy
        hidden = self.embed(ids)
        if self.variant == "pool":
            per_token = jnp.tanh(self.mix(hidden))
        else:
            scores = self.query(hidden) @ self.key(hidden).transpose(0, 2, 1) / HIDDEN ** 0.5
            scores = jnp.where(mask[:, None, :] == 1, scores, -1e9)
            per_token = hidden + jax.nn.softmax(scores, axis=-1) @ self.value(hidden)
        share = mask[..., None].astype(hidden.dtype)
        return self.head((per_token * share).sum(axis=1) / share.sum(axis=1))


def _plain_jax_maps() -> dict[str, np.ndarray]:
    """A function of the embeddings (looked up by hand), the mask a side input."""
    import agnostic_saliency

    params = weights()
    ids, mask = tokens()
    embedded = params["embedding"][ids]
    maps = {}
    for variant in VARIANTS:
        def head(hidden: Any, mask: Any, variant: str = variant) -> Any:
            return forward(jax.numpy, params, hidden, mask, variant)

        for method, (name, arguments) in method_options().items():
            explainer = getattr(agnostic_saliency, name)(head, backend="jax", channel_axis=-1,
                                                         **arguments)
            values, nothing = explainer.explain((embedded, mask), TARGETS)
            assert nothing is None  # the mask is not attributed
            maps[f"{variant}/{method}"] = np.asarray(values)
    return maps


def _start_keras_child(backend: str, out: Path) -> subprocess.Popen[str]:
    env = child_env(backend)
    return subprocess.Popen(
        [sys.executable, "-m", "keras_process.keras_text_maps", str(out)], cwd=TESTS, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """Framework -> ``"variant/method"`` -> token maps ``(N, L)``."""
    folder = tmp_path_factory.mktemp("keras_text")
    children = {backend: _start_keras_child(backend, folder / f"{backend}.npz")
                for backend in CHILD_BACKENDS}  # they run while this process computes
    ids, mask = tokens()
    from keras_process.keras_text_maps import all_maps

    results = {
        "torch": explain_all(TorchText, lambda model: model.embed,
                             (torch.from_numpy(ids), torch.from_numpy(mask)), backend="torch"),
        "flax_nnx": explain_all(FlaxText, lambda model: model.embed, (ids, mask),
                                backend="jax"),
        "jax_function": _plain_jax_maps(),
        "keras_tensorflow": all_maps(),
    }
    for backend, child in children.items():
        output, _ = child.communicate(timeout=600)
        assert child.returncode == 0, f"Keras on {backend}:\n{output[-6000:]}"
        with np.load(folder / f"{backend}.npz") as saved:
            assert str(saved["backend"]) == backend
            results[f"keras_{backend}"] = {key: saved[key] for key in saved.files
                                           if key != "backend"}
    return results


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_framework_gives_the_oracles_token_maps(
        maps: dict[str, dict[str, np.ndarray]], variant: str, method: str) -> None:
    expected = expected_maps(variant)[method]
    scale = float(np.abs(expected).max())
    assert scale > 0
    for framework, by_key in maps.items():
        values = by_key[f"{variant}/{method}"]
        assert values.shape == expected.shape and values.dtype == np.float32, framework
        error = float(np.abs(values - expected).max()) / scale
        assert error <= TOLERANCE, f"{framework}: {error:.2e} of the largest score off"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_frameworks_agree_with_each_other(
        maps: dict[str, dict[str, np.ndarray]], variant: str, method: str) -> None:
    first, *others = maps
    reference = maps[first][f"{variant}/{method}"]
    scale = float(np.abs(reference).max())
    for framework in others:
        error = float(np.abs(maps[framework][f"{variant}/{method}"] - reference).max()) / scale
        assert error <= TOLERANCE, f"{framework} vs {first}: {error:.2e}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_padded_tokens_get_exactly_zero_and_real_tokens_do_not(
        maps: dict[str, dict[str, np.ndarray]], variant: str) -> None:
    _, mask = tokens()
    assert maps.keys() == {"torch", "flax_nnx", "jax_function", "keras_tensorflow",
                           "keras_jax", "keras_torch"}
    for framework, by_key in maps.items():
        for method in METHODS:
            values = by_key[f"{variant}/{method}"]
            assert np.all(values[mask == 0] == 0), f"{framework} {method}"
        assert np.all(by_key[f"{variant}/saliency"][mask == 1] > 0), framework
