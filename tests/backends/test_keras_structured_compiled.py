"""Compiled structured gradients on the Keras backend (several inputs, side inputs,
layer=): equal to the eager path and to analytic gradients, traced once per
signature, and using changed weights.

TensorFlow runs in this process; Keras on JAX and on PyTorch run the same checks
(:mod:`keras_process.keras_compiled_checks`) in one child process each, since
``KERAS_BACKEND`` is fixed per process.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from keras_process.children import ROOT, run_suite
from keras_process.keras_compiled_checks import CHECKS

SUITE = ROOT / "tests" / "keras_process" / "keras_compiled_suite.py"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_on_tensorflow(name: str) -> None:
    check: Callable[[], None] = CHECKS[name]
    check()


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_every_check_in_a_child_process(framework: str) -> None:
    run_suite(SUITE, framework)
