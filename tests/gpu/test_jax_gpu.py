"""The JAX backend on a GPU (run with ``AGNOSTIC_SALIENCY_GPU=1``).

JAX computes on its default device, a GPU where one is present: the same
function on the CPU is the oracle. ``tests/backends/test_backend_jax.py`` run on
such a machine puts the whole conformance suite on the GPU as well.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import Saliency, SmoothGrad
from agnostic_saliency.testing import NumpyModel, make_spec
from agnostic_saliency.testing.builders import build_jax_function

jax = pytest.importorskip("jax")
pytest.importorskip("agnostic_saliency_jax")
from agnostic_saliency_jax import JaxBackend  # noqa: E402

pytestmark = pytest.mark.gpu


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 7, 6, 3)).astype(np.float32)


def test_jax_computes_on_a_gpu() -> None:
    assert jax.default_backend() == "gpu", jax.devices()


@pytest.mark.parametrize(("method", "kwargs"), [
    (Saliency, {}),
    (Saliency, {"reducer": None, "absolute": False}),
    (SmoothGrad, {"nb_samples": 5, "noise": 0.2, "seed": 3, "batch_size": 4}),
])
def test_gpu_maps_equal_cpu_maps(method: Any, kwargs: dict[str, Any]) -> None:
    spec, x, targets = make_spec("cnn"), _images(), np.array([0, 1, 2, 1, 0, 2])
    with JaxBackend().full_precision():
        maps = method(build_jax_function(spec), backend="jax", **kwargs).explain(x, targets)
        with jax.default_device(jax.devices("cpu")[0]):
            expected = method(build_jax_function(spec), backend="jax",
                              **kwargs).explain(x, targets)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_gpu_map_is_close_to_exact_at_jax_default_precision() -> None:
    """Outside ``full_precision`` XLA may use TF32 for float32 matmuls and convolutions."""
    spec, x, targets = make_spec("cnn"), _images(), np.array([0, 1, 2, 1, 0, 2])
    maps = Saliency(build_jax_function(spec), backend="jax").explain(x, targets)
    exact = NumpyModel(spec.cast(np.float64)).input_gradient(x.astype(np.float64),
                                                             np.eye(3)[targets])
    expected = np.abs(exact).max(axis=-1)
    np.testing.assert_allclose(maps, expected, rtol=1e-2, atol=1e-3 * expected.max())


def test_repeated_gpu_calls_compile_once() -> None:
    spec, backend = make_spec("cnn"), JaxBackend()
    explainer, x = Saliency(build_jax_function(spec), backend=backend), _images()
    first = explainer.explain(x, 1)
    for _ in range(5):
        np.testing.assert_array_equal(explainer.explain(x, 1), first)
    assert backend.trace_count == 1


_PEAK = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp
    import numpy as np
    from agnostic_saliency import Saliency

    n, batch_size = int(sys.argv[1]), int(sys.argv[2])
    kernel = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3, 3, 64)), jnp.float32)

    def model(x):
        hidden = jnp.tanh(jax.lax.conv_general_dilated(
            x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return hidden.mean(axis=(1, 2))[:, :10]

    x = np.random.default_rng(1).normal(size=(n, 64, 64, 3)).astype(np.float32)
    Saliency(model, backend="jax", batch_size=batch_size).explain(x, 1)
    print(jax.devices()[0].memory_stats()["peak_bytes_in_use"])
""")


def _peak_bytes(n: int, batch_size: int) -> int:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(n), str(batch_size)],
                          capture_output=True, text=True, check=True, timeout=300)
    return int(done.stdout.split()[-1])


def test_gpu_memory_grows_with_batch_size_not_with_the_number_of_inputs() -> None:
    small, ten_times = _peak_bytes(32, 16), _peak_bytes(320, 16)
    assert ten_times <= 1.1 * small, (small, ten_times)
    assert _peak_bytes(128, 64) > 2 * small  # the measure sees the batch
