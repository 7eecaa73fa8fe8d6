"""Several inputs, side inputs and layer outputs of JAX models.

A structured call (:class:`agnostic_saliency._structure.ModelInputs`) runs the model
as ``model(*args, **kwargs)``: a tuple or list positionally, a dict as keywords,
``model_kwargs`` as constant keywords. The compiled function is
``jax.jit(jax.grad(score))`` differentiated with respect to its first argument only,
the attributed entries (or the layer's values); side inputs (token ids, masks) are a
separate argument, never differentiated. ``jax.jit`` keys its own traces on the
shapes and dtypes of every argument; the backend's cache keys the function on the
model's structure, the call's kind, keys and attributed keys, the layer's path, the
output selector and the constants.

With ``layer=`` a submodule of a Flax NNX or Equinox model: inside the trace, the
model is a copy rebuilt from its parameters, and the submodule at the layer's path
in that copy is swapped (an attribute set on the NNX copy, ``eqx.tree_at`` for
Equinox) for an object returning the given values. The user's model is
never changed. Reading the layer's output swaps it, on a copy too, for an object
that calls the layer and keeps its output.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from agnostic_saliency import messages
from agnostic_saliency._structure import ModelInputs
from agnostic_saliency.cache import ObjectKey
from agnostic_saliency_jax import _messages
from agnostic_saliency_jax._compile import TraceCounter
from agnostic_saliency_jax._models import SplitModel

__all__ = ["call", "call_selected", "layer_path", "make_structured_gradient", "read_layer",
           "structure_key"]

Path = tuple[Any, ...]


class _Fixed:
    """Stands for a layer: returns the given values whatever it is called with."""

    def __init__(self, values: Any) -> None:
        self.values = values

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.values


class _Recorder:
    """Stands for a layer: calls it and keeps its output."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.outputs: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = self.layer(*args, **kwargs)
        self.outputs.append(output)
        return output


def layer_path(model: Any, layer: Any) -> Path:
    """Where ``layer`` sits in ``model``: ``("nnx", attribute path)`` for a submodule of
    a Flax NNX module, ``("equinox", key path)`` for a submodule of an Equinox module.

    Raises
    ------
    TypeError
        When ``model`` is neither, or ``layer`` is none of its submodules.
    """
    nnx = sys.modules.get("flax.nnx")
    eqx = sys.modules.get("equinox")
    if nnx is not None and isinstance(model, nnx.Module):
        paths = [tuple(path) for path, module in nnx.iter_modules(model)
                 if module is layer and path]
        kind = "nnx"
    elif eqx is not None and isinstance(model, eqx.Module):
        import jax

        found = jax.tree_util.tree_flatten_with_path(model, is_leaf=lambda node: node is layer)[0]
        paths = [tuple(path) for path, leaf in found if leaf is layer and path]
        kind = "equinox"
    else:
        raise TypeError(_messages.layer_needs_nnx(type(model).__name__))
    if not paths:
        raise TypeError(_messages.layer_not_found(type(layer).__name__, type(model).__name__))
    return (kind, paths[0])


def _at(node: Any, path: Path) -> Any:
    """The node at an NNX attribute path or a JAX key path."""
    for step in path:
        if isinstance(step, int):
            node = node[step]
        elif isinstance(step, str):
            node = getattr(node, step)
        elif hasattr(step, "name"):  # GetAttrKey
            node = getattr(node, step.name)
        elif hasattr(step, "idx"):  # SequenceKey
            node = node[step.idx]
        else:  # DictKey
            node = node[step.key]
    return node


def _swap(model: Any, where: Path, replacement: Any) -> Any:
    """``model`` (a copy of the user's model) with ``replacement`` at ``where``."""
    kind, path = where
    if kind == "equinox":
        eqx = sys.modules["equinox"]
        return eqx.tree_at(lambda tree: _at(tree, path), model, replace=replacement)
    parent, last = _at(model, path[:-1]), path[-1]
    if isinstance(last, int):
        parent[last] = replacement
    else:
        setattr(parent, last, replacement)
    return model


def _hashable(value: Any) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return ObjectKey(value)
    hashable: Hashable = value
    return hashable


def structure_key(inputs: ModelInputs, path: Path | None) -> tuple[Hashable, ...]:
    """What a compiled structured function depends on besides the model and shapes."""
    constants = tuple((name, _hashable(value)) for name, value in inputs.model_kwargs.items())
    return ("structured", inputs.kind, inputs.keys, inputs.attributed, path, constants)


def call(model: Any, kind: str, keys: tuple[Any, ...], values: Mapping[Any, Any],
          constants: Mapping[str, Any]) -> Any:
    """``model`` called on ``values`` in the caller's convention; failures report shapes."""
    args, kwargs = ModelInputs(kind, keys, values, (), constants).arguments(values)
    try:
        return model(*args, **kwargs)
    except Exception as error:
        shapes = {str(key): tuple(value.shape) for key, value in values.items()}
        raise ValueError(_messages.structured_model_failed(shapes, error)) from error


def call_selected(model: Any, inputs: ModelInputs, values: Mapping[Any, Any],
                  selector: Callable[[Any], Any] | None) -> Any:
    """``model`` on ``values`` (the entries of ``inputs``, arrays or abstract values), then
    the output selector: the structured forward pass of ``predict``."""
    outputs = call(model, inputs.kind, inputs.keys, values, dict(inputs.model_kwargs))
    return selector(outputs) if selector is not None else outputs


def make_structured_gradient(split: SplitModel, inputs: ModelInputs, path: Path | None,
                             selector: Callable[[Any], Any] | None,
                             counter: TraceCounter) -> Any:
    """``jax.jit(jax.grad(score))`` with ``score(wrt, side, params, targets)``.

    ``wrt`` is the dict of attributed entries, or the layer's values at ``path``;
    ``side`` the dict of every other entry. Returns the gradient of ``wrt``'s form.
    """
    import jax
    import jax.numpy as jnp

    kind, keys, constants = inputs.kind, inputs.keys, dict(inputs.model_kwargs)

    def score(wrt: Any, side: dict[Any, Any], params: Any, targets: Any) -> Any:
        counter.increment()
        model = split.rebuild(params)
        if path is None:
            values = {**side, **wrt}
        else:
            model = _swap(model, path, _Fixed(wrt))
            values = side
        outputs = call(model, kind, keys, values, constants)
        outputs = selector(outputs) if selector is not None else outputs
        if not isinstance(outputs, jax.Array):
            raise TypeError(messages.output_not_tensor(messages.describe_output(outputs)))
        outputs = outputs.astype(jnp.promote_types(outputs.dtype, jnp.float32))
        if jnp.issubdtype(targets.dtype, jnp.integer):  # class indices (N,)
            return jnp.sum(jnp.take_along_axis(outputs, targets[:, None], axis=1))
        return jnp.sum(outputs * targets.astype(outputs.dtype))

    return jax.jit(jax.grad(score))


def read_layer(split: SplitModel, inputs: ModelInputs, path: Path) -> Any:
    """The output of the layer at ``path`` when a copy of the model runs on ``inputs``."""
    model = split.rebuild(split.params)
    recorder = _Recorder(_at(model, path[1]))
    model = _swap(model, path, recorder)
    call(model, inputs.kind, inputs.keys, dict(inputs.values), dict(inputs.model_kwargs))
    if len(recorder.outputs) != 1:
        name = ".".join(str(getattr(step, "name", step)) for step in path[1])
        raise ValueError(_messages.layer_called(name, len(recorder.outputs)))
    return recorder.outputs[0]
