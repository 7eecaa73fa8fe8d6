"""How a JAX model becomes a hashable structure plus array parameters.

A compiled gradient function is keyed by the model's *structure* and receives its
*parameters* as jit arguments, so new parameter values never trigger a new trace:

- Flax NNX: modules are pytrees (Flax 0.12 and later): ``jax.tree.flatten(model)``
  gives the leaves (the argument) and a treedef (the key), unflattened inside the
  trace, which is cheaper than ``nnx.split``. Modules declared with ``pytree=False`` are split with
  ``nnx.split(model) -> (graphdef, state)`` and merged inside the trace instead.
  Either way the model inside the trace is a copy, so nothing a forward pass does
  (RNG counters of Dropout, batch statistics of BatchNorm in training mode)
  reaches the user's module.
- Equinox: ``eqx.partition(model, eqx.is_array)``; the flattened static part and
  the treedef of the arrays are the key (the model's identity when that part is
  not hashable); the arrays go to jit as a flat list.
- Any other callable (plain or jitted function): the function itself, held by a
  weak reference so that the cache never keeps a model (and the arrays it closes
  over) alive.
- Flax Linen modules hold no parameters: they are refused with the way to bind them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any

from agnostic_saliency.backend import CallOptions
from agnostic_saliency.cache import BoundedCache, ObjectKey
from agnostic_saliency_jax import _messages

__all__ = ["SplitModel", "check_training_mode", "split_model"]


@dataclass(frozen=True)
class SplitModel:
    """A model as ``rebuild(params)``, with ``key`` identifying ``rebuild``'s structure.

    Attributes
    ----------
    key
        ``(kind, structure)``: equal keys mean equal structure, and one traced
        function serves them all. ``structure`` is an ObjectKey of the model when
        its structure is not hashable.
    params
        Pytree of arrays passed to the compiled function as an argument (``None``
        for functions, whose closed-over arrays are part of the function).
    rebuild
        ``params -> callable model``; works on tracers inside ``jax.jit``.
    immutable
        Whether the same model object always splits the same way (functions and
        Equinox modules), so that the split can be reused for it.
    """

    key: Hashable
    params: Any
    rebuild: Callable[[Any], Any]
    immutable: bool = False


def split_model(model: Any) -> SplitModel:
    """Split ``model`` into a structure key, jit-argument parameters and a rebuild function.

    Parameters
    ----------
    model
        A Flax NNX module, an Equinox module or any callable taking a batch.

    Returns
    -------
    SplitModel
        The key, parameters and rebuild function.

    Raises
    ------
    TypeError
        For a Flax Linen module, which holds no parameters of its own.
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(model, nnx.Module):
        return _split_nnx(model, nnx)
    if is_linen_module(model):
        cls = type(model)
        raise TypeError(_messages.linen_module(f"{cls.__module__}.{cls.__qualname__}"))
    eqx = sys.modules.get("equinox")
    if eqx is not None and isinstance(model, eqx.Module):
        import jax

        params, static = eqx.partition(model, eqx.is_array)
        leaves, treedef = jax.tree.flatten(static)
        # The arrays go to jit as a flat list: Equinox modules flatten in Python, and
        # jit would flatten the module again at every call.
        arrays, params_treedef = jax.tree.flatten(params)
        structure = _hashable((treedef, tuple(leaves), params_treedef), model)
        return SplitModel(("equinox", structure), arrays,
                          partial(_combine, eqx.combine, params_treedef, static), True)
    key = ObjectKey(model)
    return SplitModel(("function", key), None, partial(_call_key, key), True)


def is_linen_module(model: Any) -> bool:
    """Whether ``model`` is a Flax Linen module (checked without importing Flax)."""
    linen = sys.modules.get("flax.linen")
    return linen is not None and isinstance(model, linen.Module)


def _split_nnx(model: Any, nnx: Any) -> SplitModel:
    """An NNX module as pytree leaves and treedef, or as ``nnx.split`` when it is no pytree."""
    import jax

    leaves, treedef = jax.tree.flatten(model)
    if len(leaves) != 1 or leaves[0] is not model:  # a pytree: its treedef holds the statics
        return SplitModel(("nnx-tree", _hashable(treedef, model)), leaves,
                          partial(jax.tree.unflatten, treedef))
    graphdef, state = nnx.split(model)
    # copy=True: fresh Variables at the current trace level, so that a Dropout
    # inside jax.grad may advance its (copied) RNG counter.
    return SplitModel(("nnx", _hashable(graphdef, model)), state,
                      partial(nnx.merge, graphdef, copy=True))


def _combine(combine: Callable[..., Any], params_treedef: Any, static: Any, arrays: Any) -> Any:
    """An Equinox module from its flat list of arrays and its static part."""
    import jax

    return combine(jax.tree.unflatten(params_treedef, arrays), static)


def _call_key(key: ObjectKey, params: Any) -> Any:
    return key.get()


def _hashable(structure: Any, model: Any) -> Hashable:
    """``structure`` when it hashes, else an identity key of ``model``."""
    try:
        hash(structure)
    except TypeError:
        return ObjectKey(model)
    hashable: Hashable = structure
    return hashable


def check_training_mode(model: Any, options: CallOptions, split: SplitModel | None = None,
                        known: BoundedCache[tuple[str, ...]] | None = None) -> None:
    """Refuse a Flax NNX module whose Dropout or BatchNorm layers are in training mode.

    Whether a layer trains is a static attribute, part of the module's structure:
    given the model's ``split`` and a cache ``known`` of the active layers, the
    active layers are looked up per structure key, since walking the module costs
    as much as splitting it again.

    Raises
    ------
    ValueError
        Naming the active layers, unless ``options.allow_training_mode``.
    """
    nnx = sys.modules.get("flax.nnx")
    if options.allow_training_mode or nnx is None or not isinstance(model, nnx.Module):
        return

    def walk() -> tuple[str, ...]:
        return tuple(".".join(map(str, path)) or type(model).__name__
                     for path, module in nnx.iter_modules(model) if _in_training(module, nnx))

    if split is None or known is None or _holds_identity(split.key):
        active = walk()  # a key by identity: the same object may switch modes
    else:
        active = known.get_or_create(split.key, walk)
    if active:
        raise ValueError(_messages.training_mode(list(active)))


def _holds_identity(key: Hashable) -> bool:
    """Whether ``key`` stands for a model object (whose training mode may change) by identity."""
    return isinstance(key, tuple) and any(isinstance(part, ObjectKey) for part in key)


def _in_training(module: Any, nnx: Any) -> bool:
    if isinstance(module, nnx.Dropout):
        return not module.deterministic and module.rate > 0
    if isinstance(module, nnx.BatchNorm):
        return not module.use_running_average
    return False
