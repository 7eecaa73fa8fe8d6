"""Several inputs (list and dict models) and side inputs on the Keras backend.

TensorFlow runs in this process; Keras on JAX and on PyTorch run the same checks
(:mod:`keras_process.keras_structured_checks`, including the layer checks of
``test_keras_text.py``) in a child process each, since ``KERAS_BACKEND`` is fixed
per process. Expected maps are analytic gradients from the models' weights.
"""

from __future__ import annotations

from typing import Any

import pytest
from keras_process.children import ROOT, run_suite

pytest.importorskip("keras")

from keras_process.keras_structured_checks import (
    check_dict_inputs,
    check_list_inputs,
    check_smoothgrad_with_a_mask_side_input,
)

SUITE = ROOT / "tests" / "keras_process" / "keras_structured_suite.py"


@pytest.mark.parametrize("batch_size", [1, 2, None])
def test_list_inputs_on_tensorflow(batch_size: Any) -> None:
    check_list_inputs(batch_size)


def test_dict_inputs_on_tensorflow() -> None:
    check_dict_inputs()


def test_smoothgrad_with_a_mask_side_input_on_tensorflow() -> None:
    check_smoothgrad_with_a_mask_side_input()


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_every_check_in_a_child_process(framework: str) -> None:
    run_suite(SUITE, framework)
