"""The conformance suite against the Keras backend, on each of Keras' three backends.

Keras fixes its backend when it is imported: this process runs Keras on
TensorFlow (``KERAS_BACKEND=tensorflow``, set by ``tests/conftest.py``), and the
same suite runs for JAX and PyTorch in child processes
(``tests/keras_process/keras_suite.py``), started with this module's first test so that
they overlap the TensorFlow run.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

from agnostic_saliency import Saliency, get_backend
from agnostic_saliency.cache import BoundedCache
from agnostic_saliency.testing import BackendConformanceTests

pytest.importorskip("keras")

from keras_process.children import child_env
from keras_process.keras_checks import KerasChecks

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tests" / "keras_process" / "keras_suite.py"
CHILD_TIMEOUT_S = 600
_CHILDREN = {"jax": "KerasOnJax", "torch": "KerasOnTorch"}


class TestKerasOnTensorflow(KerasChecks, BackendConformanceTests):
    framework = "tensorflow"
    traces = (1, 1)  # the batch axis is unknown in the input signature

    def backend(self) -> str:
        return "keras"


class _Child:
    """The suite for one Keras backend, running in a child process."""

    def __init__(self, framework: str, log: IO[str]) -> None:
        self.log = log
        env = child_env(framework)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SUITE),
                   "-k", _CHILDREN[framework]]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, text=True)

    def result(self) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.log.seek(0)
        return code, self.log.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


class _Children:
    """Child processes of this module, started at most once per Keras backend."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: dict[str, _Child] = {}

    def start(self, framework: str) -> _Child | None:
        if framework not in self.started and importlib.util.find_spec(framework) is not None:
            log = (self.folder / f"{framework}.log").open("w+")
            self.started[framework] = _Child(framework, log)
        return self.started.get(framework)

    def check(self, framework: str) -> None:
        """Assert that the child passed every test and skipped none."""
        child = self.start(framework)
        if child is None:
            pytest.skip(f"{framework} is not installed; install it to run Keras on {framework}")
        code, output = child.result()
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        assert code == 0, f"Keras on {framework}: the suite failed (exit {code}):\n{output}"
        assert " passed" in summary, f"Keras on {framework}: nothing passed:\n{output}"
        for word in ("failed", "skipped", "error", "xpassed"):
            assert word not in summary, f"Keras on {framework}: {word} tests:\n{output}"


@pytest.fixture(scope="module", autouse=True)
def children(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Any:
    """Start the selected children with this module's first test, so that they overlap it.

    Under pytest-xdist a worker cannot tell which tests it will run, so each child
    starts with its own test instead.
    """
    started = _Children(tmp_path_factory.mktemp("keras_children"))
    if "PYTEST_XDIST_WORKER" not in os.environ:
        for framework, name in sorted(_CHILDREN.items()):
            if any(f"Test{name}::" in item.nodeid for item in request.session.items):
                started.start(framework)
    yield started
    for child in started.started.values():
        child.stop()


class TestKerasOnJax:
    def test_conformance_suite_in_a_child_process(self, children: _Children) -> None:
        children.check("jax")


class TestKerasOnTorch:
    def test_conformance_suite_in_a_child_process(self, children: _Children) -> None:
        children.check("torch")


class TestKerasBackendInternals:
    """The function cache, out-of-memory errors, and detection without importing Keras."""

    def test_compiled_functions_live_in_a_bounded_cache_and_die_with_their_model(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        import keras
        from agnostic_saliency_keras import _tf

        if keras.backend.backend() != "tensorflow":
            pytest.skip("Keras runs on another backend in this process")
        assert isinstance(_tf._functions, BoundedCache)
        cache: BoundedCache[Any] = BoundedCache(2)
        monkeypatch.setattr(_tf, "_functions", cache)
        models = [keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]) for _ in range(3)]
        x = np.ones((2, 3), np.float32)
        for _ in range(2):
            Saliency(models[0]).explain(x, 1)
        assert len(cache) == 1  # one function for one signature, reused
        Saliency(models[1]).explain(x, 1)
        Saliency(models[2]).explain(x, 1)
        assert len(cache) == 2  # bounded: the least recently used model's function went
        del models[1]
        gc.collect()
        assert len(cache) == 1  # the collected model's function went with it

    def test_out_of_memory_errors_are_recognised(self) -> None:
        import tensorflow as tf

        backend = get_backend("keras")
        assert backend.is_out_of_memory(tf.errors.ResourceExhaustedError(None, None, "OOM"))
        assert backend.is_out_of_memory(MemoryError())
        assert not backend.is_out_of_memory(ValueError("RESOURCE_EXHAUSTED"))

    def test_detection_imports_no_framework(self) -> None:
        code = ("import sys; from agnostic_saliency_keras import KerasBackend; "
                "assert not KerasBackend().can_handle(object()); "
                "assert not {'keras', 'tensorflow', 'jax', 'torch'} & set(sys.modules), "
                "sorted(sys.modules)")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
