"""The conformance suite and the Keras checks for Keras on JAX and on PyTorch.

Run by ``tests/backends/test_backend_keras.py`` in a child process per Keras
backend, e.g. ``KERAS_BACKEND=jax python -m pytest keras_suite.py -k KerasOnJax``.
Each class skips itself when Keras runs on another backend in this process.
"""

from __future__ import annotations

import pytest

from agnostic_saliency.testing import BackendConformanceTests

pytest.importorskip("keras")

from keras_process.keras_checks import KerasChecks


class TestKerasOnJax(KerasChecks, BackendConformanceTests):
    framework = "jax"
    traces = (1, 2)  # jax.jit specialises on the batch size
    # Without jax_enable_x64 (JAX's default) float64 does not exist: the backend casts
    # float64 inputs to float32, with a warning. With it, Keras still computes some ops
    # of float64 models in float32 (see TestKerasOnTorch), so finite differences of
    # predict are float32-accurate either way.
    supports_float64 = False

    def backend(self) -> str:
        return "keras"


class TestKerasOnTorch(KerasChecks, BackendConformanceTests):
    framework = "torch"
    traces = (0, 0)  # eager: nothing is traced
    # Keras promotes float64 to float32 in ops such as matmul on every backend but
    # TensorFlow (BIT64_TO_BIT32_DTYPE in keras.src.backend.common.dtypes), so a
    # float64 Keras model on torch is only float32-accurate.
    supports_float64 = False

    def backend(self) -> str:
        return "keras"
