"""Token saliency through a ``keras.layers.Embedding`` of a functional text classifier
with a padding-mask input, on Keras' TensorFlow backend (JAX and PyTorch: see
``test_keras_structured.py``): maps equal the analytic gradient with respect to the
embedding's output, padding gets exactly zero."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("keras")

from keras_process.keras_structured_checks import (
    check_embedding_layer,
    check_embedding_layer_ig,
    check_intermediate_layer,
    check_layer_of_a_subclassed_model,
    check_sequential_with_one_input,
)


@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_token_saliency_through_the_embedding(batch_size: Any) -> None:
    check_embedding_layer(batch_size)


def test_gradient_input_and_ig_in_the_embedding_space() -> None:
    check_embedding_layer_ig()


def test_a_layer_of_a_subclassed_model() -> None:
    check_layer_of_a_subclassed_model()


def test_one_input_sequential_and_mask_zero_refused() -> None:
    check_sequential_with_one_input()


def test_an_intermediate_layer_is_replaced_by_the_given_values() -> None:
    check_intermediate_layer()
