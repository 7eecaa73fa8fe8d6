"""layer= inside nested models (a keras_hub BertTextClassifier, explained through
``backbone.token_embedding``) and subclassed Keras models, on all three Keras backends.

TensorFlow runs in this process; Keras on JAX and on PyTorch run the same checks
(:mod:`keras_process.keras_hub_checks`) in one child process each, since
``KERAS_BACKEND`` is fixed per process. Expected maps are the framework's own
gradients of the models' sublayers called by hand.
"""

from __future__ import annotations

import pytest
from keras_process.children import ROOT, run_suite
from keras_process.keras_hub_checks import (
    check_bert_gradient_input_ig_smoothgrad,
    check_bert_token_saliency,
    check_layer_refusals,
    check_subclassed_model_with_a_mask,
    check_threads,
)

SUITE = ROOT / "tests" / "keras_process" / "keras_hub_suite.py"


def test_bert_token_saliency_through_the_backbone_embedding() -> None:
    check_bert_token_saliency()


def test_bert_gradient_input_ig_and_smoothgrad_through_the_layer() -> None:
    check_bert_gradient_input_ig_smoothgrad()


def test_subclassed_model_with_a_mask_input() -> None:
    check_subclassed_model_with_a_mask()


def test_a_foreign_layer_and_a_shared_layer_are_refused() -> None:
    check_layer_refusals()


def test_threads_explaining_and_calling_the_same_model() -> None:
    check_threads()


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_every_check_in_a_child_process(framework: str) -> None:
    run_suite(SUITE, framework)
