"""Messages about JAX models: what was given, what was expected, and the next step.

The framework-free messages (shapes, targets, dtypes) live in
:mod:`agnostic_saliency.messages`; these name JAX, Flax and Equinox idioms.
"""

from __future__ import annotations

from collections.abc import Sequence

from agnostic_saliency import messages

__all__ = ["equinox_model_failed", "linen_module", "training_mode"]


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
