"""Messages about Keras models: what was given, what was expected, and the next step.

The framework-free messages (shapes, targets, dtypes) live in
:mod:`agnostic_saliency.messages`; these name Keras idioms.
"""

from __future__ import annotations

__all__ = [
    "inputs_count",
    "inputs_names",
    "keras_backend_unsupported",
    "layer_called_again",
    "layer_not_called",
    "layer_not_in_model",
    "layer_output_not_tensor",
    "layer_values_wrong_shape",
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


def layer_not_in_model(layer_type: str, model_name: str) -> str:
    return (
        f"layer= is a {layer_type} that is not one of the model's layers (of {model_name!r}, "
        "nested ones included) and did not run when the model ran; pass a layer of this very "
        "model, for example model.get_layer('embedding'), or of keras_hub's "
        "classifier.backbone.token_embedding."
    )


def layer_not_called(layer: str) -> str:
    return (
        f"layer= ({layer}) did not run when the model ran on the inputs, so it has no "
        "output to explain; pass a layer that the model's call runs."
    )


def layer_called_again(layer: str, calls: int) -> str:
    return (
        f"layer= ({layer}) ran {calls} times in one forward pass (a layer shared by several "
        "places), so 'its output' is ambiguous; pass a layer that runs once, or give the one "
        "call you mean a layer of its own."
    )


def layer_output_not_tensor(layer: str, kind: str) -> str:
    return (
        f"layer= ({layer}) returned a {kind}, not a tensor nor a tuple or list whose first "
        "item is a tensor; pass a layer whose output is the tensor to explain."
    )


def layer_values_wrong_shape(layer: str, given: tuple[int, ...],
                             found: tuple[int, ...]) -> str:
    return (
        f"layer= ({layer}) output has shape {found} on this call, but values of shape "
        f"{given} were given to replace it; the layer's output must depend on the inputs "
        "only (pass the same inputs and model_kwargs)."
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
        "attaches to its output, which layer= does not follow. Pass the padding mask as an "
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
