"""Messages about JAX models: what was given, what was expected, and the next step.

The framework-free messages (shapes, targets, dtypes) live in
:mod:`agnostic_saliency.messages`; these name JAX, Flax and Equinox idioms.
"""

from __future__ import annotations

from collections.abc import Sequence

from agnostic_saliency import messages

__all__ = [
    "equinox_model_failed",
    "layer_called",
    "layer_needs_nnx",
    "layer_not_found",
    "linen_module",
    "operator_with_structure",
    "structured_model_failed",
    "training_mode",
]


def training_mode(modules: Sequence[str]) -> str:
    more = f", ... ({len(modules)} in all)" if len(modules) > 8 else ""
    shown = f"[{', '.join(modules[:8])}{more}]"
    return (
        f"the Flax NNX module is in training mode (Dropout/BatchNorm active in {shown}); "
        "call model.eval() first, or pass allow_training_mode=True to explain it as it is."
    )


def equinox_model_failed(shape: tuple[int, ...], error: BaseException) -> str:
    return (
        f"{messages.model_failed(shape, error)} Equinox layers such as eqx.nn.MLP and "
        "eqx.nn.Linear take one sample, not a batch: explain "
        "Saliency(eqx.filter_vmap(model)) (or Saliency(jax.vmap(model), backend='jax')), "
        "which maps the module over the batch axis."
    )


def linen_module(model_type: str) -> str:
    return (
        f"{model_type} is a Flax Linen module: it holds no parameters, so it cannot be called "
        "on its own. Bind its parameters into a function: "
        "Saliency(partial(module.apply, params), backend='jax') with "
        "params = module.init(key, x), or lambda x: module.apply(params, x)."
    )


def layer_needs_nnx(model_type: str) -> str:
    return (
        f"layer= was given with a {model_type}; the JAX backend explains layers of Flax NNX "
        "and Equinox modules only (layer=model.embed, a submodule). For a JAX function, "
        "compute the layer's output yourself and explain a function of it, passing "
        "the embeddings as inputs."
    )


def layer_not_found(layer_type: str, model_type: str) -> str:
    return (
        f"layer= is a {layer_type} that is no submodule of the {model_type} explained; pass "
        "the submodule object itself (for example layer=model.embed) of this very model."
    )


def layer_called(path: str, calls: int) -> str:
    return (
        f"layer {path!r} was called {calls} times in one forward pass; layer= needs a "
        "submodule called exactly once (an embedding, say). Name a submodule called once."
    )


def structured_model_failed(shapes: dict[str, tuple[int, ...]], error: BaseException) -> str:
    return (
        f"model failed on inputs of shapes {shapes}: {type(error).__name__}: {error}. "
        "A tuple or list of inputs is passed as positional arguments, a dict as keyword "
        "arguments; check that the model takes them so, batch axis first."
    )


def operator_with_structure() -> str:
    return (
        "an operator takes one input array; several inputs and layer= are explained with "
        "targets (class indices or output weights). Pass targets, or one array of inputs "
        "with the operator."
    )
