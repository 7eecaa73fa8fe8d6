"""Messages about Keras models: what was given, what was expected, and the next step.

The framework-free messages (shapes, targets, dtypes) live in
:mod:`agnostic_saliency.messages`; these name Keras idioms.
"""

from __future__ import annotations

__all__ = [
    "inputs_count",
    "inputs_names",
    "keras_backend_unsupported",
    "layer_head_failed",
    "layer_needs_functional",
    "layer_not_in_model",
    "layer_with_mask",
    "operator_with_structure",
    "structured_model_failed",
]


def keras_backend_unsupported(framework: str) -> str:
    return (
        f"Keras runs on its {framework!r} backend, which has no gradients; set "
        "KERAS_BACKEND to 'tensorflow', 'jax' or 'torch' before importing keras."
    )


def structured_model_failed(shapes: dict[str, tuple[int, ...]], error: BaseException) -> str:
    return (
        f"model failed on inputs of shapes {shapes}: {type(error).__name__}: {error}. "
        "A Keras model is called with the list, tuple or dict of inputs itself; check that "
        "its keras.Input names (for a dict) or order (for a list) match, batch axis first."
    )


def layer_needs_functional(model_type: str) -> str:
    return (
        f"layer= was given with a {model_type}, which is no functional or Sequential Keras "
        "model; the Keras backend explains layers of functional models only (their graph "
        "is cut at the layer). For a subclassed model, compute the layer's output (the "
        "embeddings) yourself and explain a model that takes them as inputs."
    )


def layer_not_in_model(layer_type: str, model_name: str) -> str:
    return (
        f"layer= is a {layer_type} that is no layer of the model {model_name!r}; pass one of "
        "model.layers (for example model.get_layer('embedding'))."
    )


def layer_head_failed(layer_name: str, error: BaseException) -> str:
    return (
        f"the model cannot be cut at layer {layer_name!r} ({type(error).__name__}: {error}); "
        "layer= needs a layer called once whose output, with the model's other inputs, "
        "determines the outputs. Name another layer, or pass the embeddings as inputs."
    )


def operator_with_structure() -> str:
    return (
        "an operator takes one input array; several inputs and layer= are explained with "
        "targets (class indices or output weights). Pass targets, or one array of inputs "
        "with the operator."
    )


def layer_with_mask(layer_name: str) -> str:
    return (
        f"layer {layer_name!r} has mask_zero=True: the layers after it read the Keras mask it "
        "makes, which a model cut at its output does not carry. Pass the padding mask as an "
        "input of the model (keras.Input) and use it explicitly, or pass the embeddings as "
        "inputs."
    )


def inputs_count(given: int, expected: int) -> str:
    return (
        f"{given} inputs entries were given for a model with {expected} keras.Input tensors; "
        "pass one entry per model input, in the order of model.inputs."
    )


def inputs_names(missing: list[object], names: list[str]) -> str:
    return (
        f"the inputs dict has keys {missing} that name no keras.Input of the model (its "
        f"inputs are {names}); use the names given to keras.Input(name=...)."
    )
