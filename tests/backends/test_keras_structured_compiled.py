"""Compiled structured gradients on the Keras backend (several inputs, side inputs,
layer=): equal to the eager path and to analytic gradients, traced once per
signature, and using changed weights.

TensorFlow runs in this process; Keras on JAX and on PyTorch run the same checks
(:mod:`keras_process.keras_compiled_checks`) in one child process each, since
``KERAS_BACKEND`` is fixed per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from keras_process.keras_compiled_checks import CHECKS

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tests" / "keras_process" / "keras_compiled_suite.py"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_on_tensorflow(name: str) -> None:
    check: Callable[[], None] = CHECKS[name]
    check()


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_every_check_in_a_child_process(framework: str) -> None:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))}
    env.update(KERAS_BACKEND=framework, AGNOSTIC_SALIENCY_REQUIRE_ALL="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SUITE)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
