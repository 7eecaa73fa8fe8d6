"""NoiseTunnel: analytic values on the reference backend, Captum's NoiseTunnel on the same
noisy inputs (PyTorch), and the same maps from JAX as from PyTorch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from test_frontend import CountingBackend

from agnostic_saliency import GradientInput, IntegratedGradients, Saliency, SmoothGrad
from agnostic_saliency.methods import NoiseTunnel, VarGrad
from agnostic_saliency.testing import NumpyModel, make_spec
from agnostic_saliency.testing.builders import build_jax_function, build_torch

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")
AGGREGATE = {"smoothgrad": lambda a: a.mean(axis=0),
             "smoothgrad_sq": lambda a: np.square(a).mean(axis=0),
             "vargrad": lambda a: a.var(axis=0)}


def _noise(seed: int, index: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """Our documented noise: one stream per sample id, drawn channels-last."""
    return np.random.default_rng([seed, index]).standard_normal((count, *shape))


def _setup(name: str, n: int = 3) -> tuple[NumpyModel, np.ndarray]:
    spec = make_spec(name, dtype=np.float64)
    return NumpyModel(spec), np.random.default_rng(0).normal(size=(n, *spec.input_shape))


# --- reference backend: analytic values ------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_tunnel_over_ig_of_a_linear_model_is_analytic(kind: str) -> None:
    """IG of a linear model is (x - baseline) * w exactly, at every noisy copy."""
    model, x = _setup("linear_vector")
    weight = model.spec.layers[0].weight[:, 2]
    tunnel = NoiseTunnel(IntegratedGradients(model, steps=4, baseline_value=0.5),
                         nb_samples=7, noise=0.3, kind=kind, seed=11)
    maps = tunnel.explain(x, 2)
    for i, sample in enumerate(x):
        copies = sample + 0.3 * _noise(11, i, 7, sample.shape)
        np.testing.assert_allclose(maps[i], AGGREGATE[kind]((copies - 0.5) * weight),
                                   rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
def test_tunnel_over_gradient_input_uses_each_copys_gradient(kind: str) -> None:
    model, x = _setup("cnn")
    tunnel = NoiseTunnel(GradientInput(model, reducer=None), nb_samples=5, noise=0.4,
                         kind=kind, seed=2, batch_size=4)
    maps = tunnel.explain(x, np.array([0, 2, 1]))
    for i, (sample, target) in enumerate(zip(x, [0, 2, 1], strict=True)):
        copies = sample + 0.4 * _noise(2, i, 5, sample.shape)
        weights = np.zeros((5, 3))
        weights[:, target] = 1
        expected = AGGREGATE[kind](copies * model.input_gradient(copies, weights))
        np.testing.assert_allclose(maps[i], expected, rtol=1e-9, atol=1e-14)


def test_tunnel_over_saliency_is_smoothgrad_and_vargrad_with_the_same_noise() -> None:
    model, x = _setup("cnn")
    tunnel = NoiseTunnel(Saliency(model, reducer=None), nb_samples=6, noise=0.3, seed=7)
    smooth = SmoothGrad(model, nb_samples=6, noise=0.3, seed=7, average="absolute",
                        reducer=None)
    np.testing.assert_allclose(tunnel.explain(x, 1), smooth.explain(x, 1), rtol=1e-12)
    signed = NoiseTunnel(Saliency(model, absolute=False, reducer=None), nb_samples=6,
                         noise=0.3, seed=7, kind="vargrad")
    var = VarGrad(model, nb_samples=6, noise=0.3, seed=7, ddof=0, reducer=None)
    np.testing.assert_allclose(signed.explain(x, 1), var.explain(x, 1), rtol=1e-9,
                               atol=1e-15)


def test_reducer_applies_to_the_combined_attributions() -> None:
    model, x = _setup("cnn")
    kept = NoiseTunnel(GradientInput(model, reducer=None), nb_samples=3, seed=1,
                       kind="smoothgrad_sq").explain(x, 0)
    summed = NoiseTunnel(GradientInput(model, reducer="sum"), nb_samples=3, seed=1,
                         kind="smoothgrad_sq").explain(x, 0)
    np.testing.assert_allclose(summed, kept.sum(axis=-1), rtol=1e-12)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 40])
def test_no_call_exceeds_batch_size_points_and_results_do_not_change(batch_size: int) -> None:
    model, x = _setup("cnn")
    backend = CountingBackend()
    ig = IntegratedGradients(model, steps=5, reducer=None, backend=backend)
    maps = NoiseTunnel(ig, nb_samples=4, seed=3, kind="vargrad",
                       batch_size=batch_size).explain(x, 1)
    assert max(backend.gradient_batches) <= batch_size
    assert sum(backend.gradient_batches) == 3 * 4 * 5
    whole = NoiseTunnel(IntegratedGradients(model, steps=5, reducer=None), nb_samples=4,
                        seed=3, kind="vargrad").explain(x, 1)
    np.testing.assert_allclose(maps, whole, rtol=1e-9, atol=1e-15)
    assert ig.batch_size == "auto"  # the wrapped explainer is left as it was


MEMORY_SCRIPT = textwrap.dedent("""
    import numpy as np
    from agnostic_saliency import IntegratedGradients, NoiseTunnel
    from agnostic_saliency.testing import NumpyModel
    from agnostic_saliency.testing.models import Conv2D, GlobalAveragePool, Dense, ModelSpec, Tanh

    rng = np.random.default_rng(0)
    spec = ModelSpec("big", (Conv2D(rng.normal(size=(3, 3, 3, 4)), np.zeros(4)), Tanh(),
                             GlobalAveragePool(), Dense(rng.normal(size=(4, 3)), np.zeros(3))),
                     (64, 64, 3))
    x = rng.normal(size=(2, 64, 64, 3))
    ig = IntegratedGradients(NumpyModel(spec), steps=8, reducer=None)
    NoiseTunnel(ig, nb_samples={nb_samples}, kind="vargrad", seed=0, batch_size=16).explain(x, 1)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            print(int(line.split()[1]))
""")


def _peak_kib(nb_samples: int) -> int:
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT.format(nb_samples=nb_samples)],
                            check=True, capture_output=True, text=True)
    return int(result.stdout.split()[-1])


def test_peak_memory_does_not_grow_with_nb_samples() -> None:
    small, large = _peak_kib(4), _peak_kib(128)
    # Holding all 2 * 128 copies * 8 path points at once would add 2048 * 96 KiB = 192 MiB.
    assert large - small < 0.1 * small, (small, large)


def test_explaining_in_pieces_continues_the_noise() -> None:
    model, x = _setup("cnn", n=5)
    tunnel = NoiseTunnel(IntegratedGradients(model, steps=3), nb_samples=3, seed=8)
    whole = tunnel.explain(x, 1)
    pieces = [tunnel.explain_with_targets(x[start:start + 2], 1, sample_offset=start)[0]
              for start in range(0, 5, 2)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_per_sample_baselines_follow_their_noisy_copies() -> None:
    model, x = _setup("linear_vector")
    weight = model.spec.layers[0].weight[:, 0]
    baselines = np.random.default_rng(5).normal(size=x.shape)
    tunnel = NoiseTunnel(IntegratedGradients(model, steps=3, baseline_value=baselines),
                         nb_samples=4, noise=0.2, seed=4, batch_size=2)
    maps = tunnel.explain(x, 0)
    for i, sample in enumerate(x):
        copies = sample + 0.2 * _noise(4, i, 4, sample.shape)
        np.testing.assert_allclose(maps[i], ((copies - baselines[i]) * weight).mean(axis=0),
                                   rtol=1e-10)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda m: NoiseTunnel(SmoothGrad(m), nb_samples=2), TypeError,
     r"NoiseTunnel wraps Saliency.*got SmoothGrad.*use SmoothGrad"),
    (lambda m: NoiseTunnel(NoiseTunnel(Saliency(m))), TypeError, r"got NoiseTunnel"),
    (lambda m: NoiseTunnel(m), TypeError, r"got NumpyModel"),
    (lambda m: NoiseTunnel(Saliency(m), kind="mean"), ValueError, r"kind='mean' is not one"),
    (lambda m: NoiseTunnel(Saliency(m), nb_samples=0), ValueError, r"nb_samples=0; pass"),
    (lambda m: NoiseTunnel(Saliency(m), noise=-1.0), ValueError, r"noise=-1.0; pass"),
])
def test_bad_arguments_are_refused(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call(_setup("cnn")[0])


# --- PyTorch: Captum's NoiseTunnel on our noisy inputs; JAX agrees ---------------------

SEED, N, TARGETS = 3, 4, np.array([0, 1, 2, 1])


@pytest.fixture(scope="module")
def torch_case() -> tuple[Any, Any, np.ndarray]:
    import torch

    model = build_torch(make_spec("cnn", layout="channels_first"))
    x = np.random.default_rng(0).normal(size=(N, 7, 6, 3)).astype(np.float32)
    return torch, model, np.ascontiguousarray(np.moveaxis(x, -1, 1))


def _captum_noise(count: int) -> np.ndarray:
    """Our noise for the N samples, sample-major as Captum repeats inputs, channels-first."""
    draws = np.concatenate([_noise(SEED, i, count, (7, 6, 3)) for i in range(N)])
    return np.moveaxis(draws, -1, 1)


def _captum_tunnel(torch: Any, monkeypatch: pytest.MonkeyPatch, attribution: Any, x: np.ndarray,
                   count: int, noise: float, **kwargs: Any) -> np.ndarray:
    from captum.attr import NoiseTunnel as CaptumNoiseTunnel

    draws = torch.from_numpy(_captum_noise(count))
    with monkeypatch.context() as patch:  # Captum's Gaussian draw gives our noise
        patch.setattr(torch, "normal", lambda mean, std: draws.to(std.dtype) * std)
        inputs = torch.from_numpy(x.copy()).requires_grad_(True)
        result = CaptumNoiseTunnel(attribution).attribute(
            inputs, target=torch.from_numpy(TARGETS), nt_samples=count, stdevs=noise,
            **kwargs)
    return result.detach().numpy()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("inner", ["IntegratedGradients", "InputXGradient", "Saliency"])
def test_matches_captum_noise_tunnel(torch_case: tuple[Any, Any, np.ndarray],
                                     monkeypatch: pytest.MonkeyPatch, kind: str,
                                     inner: str) -> None:
    import captum.attr

    torch, model, x = torch_case
    kwargs = {"n_steps": 16, "method": "gausslegendre"} if inner == "IntegratedGradients" \
        else {}
    expected = _captum_tunnel(torch, monkeypatch, getattr(captum.attr, inner)(model), x, 4,
                              0.5, nt_type=kind, **kwargs)
    ours_inner = {"IntegratedGradients": lambda: IntegratedGradients(model, preset="captum",
                                                                     steps=16),
                  "InputXGradient": lambda: GradientInput(model, preset="captum"),
                  "Saliency": lambda: Saliency(model, preset="captum")}[inner]()
    ours = NoiseTunnel(ours_inner, nb_samples=4, noise=0.5, kind=kind, seed=SEED,
                       batch_size=16).explain(x, TARGETS)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * scale)


def test_matches_captum_with_per_sample_baselines(torch_case: tuple[Any, Any, np.ndarray],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from captum.attr import IntegratedGradients as CaptumIG

    torch, model, x = torch_case
    baselines = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    expected = _captum_tunnel(torch, monkeypatch, CaptumIG(model), x, 3, 0.2,
                              nt_type="smoothgrad_sq", n_steps=10,
                              baselines=torch.from_numpy(baselines))
    ours = NoiseTunnel(IntegratedGradients(model, preset="captum", steps=10,
                                           baseline_value=baselines),
                       nb_samples=3, noise=0.2, kind="smoothgrad_sq", seed=SEED).explain(
        x, TARGETS)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("kind", KINDS)
def test_jax_gives_pytorchs_maps(torch_case: tuple[Any, Any, np.ndarray], kind: str) -> None:
    _, model, x = torch_case
    function = build_jax_function(make_spec("cnn"))
    maps = {}
    for name, net, inputs in (("torch", model, x), ("jax", function, np.moveaxis(x, 1, -1))):
        ig = IntegratedGradients(net, steps=6, reducer="mean",
                                 backend=None if name == "torch" else "jax")
        maps[name] = NoiseTunnel(ig, nb_samples=3, noise=0.3, kind=kind, seed=5,
                                 batch_size=20).explain(inputs, TARGETS)
    np.testing.assert_allclose(maps["jax"], maps["torch"], rtol=1e-4,
                               atol=1e-5 * np.abs(maps["torch"]).max())
