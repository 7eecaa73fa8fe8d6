"""JAX: a ResNet-18 and a small ViT as plain functions of a parameter pytree.

Native code is ``jax.jit(jax.grad(...))`` with the parameters as arguments. Ours is
``Saliency`` on a Flax NNX module holding the same parameters (:func:`ours_nnx`; the
backend passes a module's parameters to its compiled function as arguments too), or
on a plain function that closes over them (:func:`ours`): then they are constants
of the trace, which XLA may fold, so the maps of the ReLU network can differ from
native code's by more than rounding where a value sits at a kink. Images are NHWC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from _real_common import Config, he_normal

__all__ = ["Model", "as_nnx", "build", "channels_first", "native", "ours", "ours_nnx",
           "versions"]

#: JAX's images here are NHWC.
channels_first = False


@dataclass(frozen=True)
class Model:
    """Parameters and ``apply(params, x) -> logits``; :attr:`function` closes over them."""

    params: Any
    apply: Callable[[Any, Any], Any]

    def function(self, x: Any) -> Any:
        """The model as a function of its inputs alone (what a user hands to ``Saliency``)."""
        return self.apply(self.params, x)


def versions() -> dict[str, str]:
    """JAX's and Flax's versions and JAX's devices."""
    import flax
    import jax

    return {"jax": jax.__version__, "flax": flax.__version__,
            "jax_devices": ", ".join(str(device) for device in jax.devices())}


def build(model: str, config: Config) -> Model:
    """``"resnet18"`` or ``"vit"`` of ``config``'s sizes with seeded parameters."""
    import jax.numpy as jnp
    from jax.tree_util import tree_map

    rng = np.random.default_rng(0)
    if model == "resnet18":
        params, apply = _resnet_params(rng, config), _resnet_apply()
    else:
        params, apply = _vit_params(rng, config), _vit_apply(config)
    return Model(tree_map(jnp.asarray, params), apply)


def _batch_norm(width: int) -> dict[str, np.ndarray]:
    """Eval-mode BatchNorm parameters and fresh running statistics."""
    return {"scale": np.ones(width, np.float32), "shift": np.zeros(width, np.float32),
            "mean": np.zeros(width, np.float32), "var": np.ones(width, np.float32)}


def _resnet_params(rng: np.random.Generator, config: Config) -> dict[str, Any]:
    width = config.resnet_width
    stages: list[list[dict[str, Any]]] = []
    cin = width
    for stage, (cout, count) in enumerate(zip(config.stage_widths, config.blocks, strict=True)):
        blocks = []
        for index in range(count):
            stride = 2 if stage and not index else 1
            block = {"conv1": he_normal(rng, 3, 3, cin, cout), "bn1": _batch_norm(cout),
                     "conv2": he_normal(rng, 3, 3, cout, cout), "bn2": _batch_norm(cout)}
            if stride != 1 or cin != cout:
                block["down"] = he_normal(rng, 1, 1, cin, cout)
                block["bn_down"] = _batch_norm(cout)
            blocks.append(block)
            cin = cout
        stages.append(blocks)
    return {"stem": he_normal(rng, 7, 7, 3, width), "bn": _batch_norm(width), "stages": stages,
            "head": he_normal(rng, cin, config.classes),
            "head_bias": np.zeros(config.classes, np.float32)}


def _resnet_apply() -> Callable[[Any, Any], Any]:
    import jax
    import jax.numpy as jnp

    def conv(x: Any, kernel: Any, stride: int) -> Any:
        pad = kernel.shape[0] // 2
        return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad)] * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def norm(x: Any, bn: dict[str, Any]) -> Any:
        return (x - bn["mean"]) * jax.lax.rsqrt(bn["var"] + 1e-5) * bn["scale"] + bn["shift"]

    def apply(params: dict[str, Any], x: Any) -> Any:
        x = jax.nn.relu(norm(conv(x, params["stem"], 2), params["bn"]))
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                  ((0, 0), (1, 1), (1, 1), (0, 0)))
        for stage, blocks in enumerate(params["stages"]):
            for index, block in enumerate(blocks):
                stride = 2 if stage and not index else 1
                shortcut = x
                if "down" in block:
                    shortcut = norm(conv(x, block["down"], stride), block["bn_down"])
                out = jax.nn.relu(norm(conv(x, block["conv1"], stride), block["bn1"]))
                out = norm(conv(out, block["conv2"], 1), block["bn2"])
                x = jax.nn.relu(out + shortcut)
        return jnp.mean(x, axis=(1, 2)) @ params["head"] + params["head_bias"]

    return apply


def _vit_params(rng: np.random.Generator, config: Config) -> dict[str, Any]:
    width = config.vit_width

    def dense(cin: int, cout: int) -> dict[str, np.ndarray]:
        return {"w": (rng.normal(size=(cin, cout)) * np.sqrt(1.0 / cin)).astype(np.float32),
                "b": np.zeros(cout, np.float32)}

    def layer_norm() -> dict[str, np.ndarray]:
        return {"scale": np.ones(width, np.float32), "shift": np.zeros(width, np.float32)}

    blocks = [{"norm1": layer_norm(), "qkv": dense(width, 3 * width), "out": dense(width, width),
               "norm2": layer_norm(), "fc1": dense(width, config.mlp),
               "fc2": dense(config.mlp, width)} for _ in range(config.vit_depth)]
    return {"patches": he_normal(rng, config.patch, config.patch, 3, width),
            "patches_bias": np.zeros(width, np.float32),
            "cls": (rng.normal(size=(1, 1, width)) * 0.02).astype(np.float32),
            "position": (rng.normal(size=(1, config.tokens + 1, width)) * 0.02).astype(
                np.float32),
            "blocks": blocks, "norm": layer_norm(), "head": dense(width, config.classes)}


def _vit_apply(config: Config) -> Callable[[Any, Any], Any]:
    import jax
    import jax.numpy as jnp

    heads, patch = config.heads, config.patch

    def layer_norm(x: Any, p: dict[str, Any]) -> Any:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-6) * p["scale"] + p["shift"]

    def attention(x: Any, block: dict[str, Any]) -> Any:
        n, length, width = x.shape
        qkv = (x @ block["qkv"]["w"] + block["qkv"]["b"]).reshape(n, length, 3, heads, -1)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) / np.sqrt(q.shape[-1])
        mixed = jnp.einsum("nhqk,nkhd->nqhd", jax.nn.softmax(logits, axis=-1), v)
        return mixed.reshape(n, length, width) @ block["out"]["w"] + block["out"]["b"]

    def apply(params: dict[str, Any], x: Any) -> Any:
        x = jax.lax.conv_general_dilated(x, params["patches"], (patch, patch), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        n = x.shape[0]
        x = (x + params["patches_bias"]).reshape(n, -1, x.shape[-1])
        x = jnp.concatenate([jnp.broadcast_to(params["cls"], (n, 1, x.shape[-1])), x], axis=1)
        x = x + params["position"]
        for block in params["blocks"]:
            x = x + attention(layer_norm(x, block["norm1"]), block)
            h = jax.nn.gelu(layer_norm(x, block["norm2"]) @ block["fc1"]["w"] + block["fc1"]["b"])
            x = x + h @ block["fc2"]["w"] + block["fc2"]["b"]
        x = layer_norm(x[:, 0], params["norm"])
        return x @ params["head"]["w"] + params["head"]["b"]

    return apply


def native(model: Model, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """``jax.jit`` of grad + abs + channel max, the parameters as arguments."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def saliency(params: Any, images: Any, labels: Any) -> Any:
        def score(images: Any) -> Any:
            outputs = model.apply(params, images)
            return jnp.take_along_axis(outputs, labels[:, None], axis=1).sum()

        return jnp.abs(jax.grad(score)(images)).max(axis=-1)

    return lambda: np.asarray(saliency(model.params, x, y))


def ours(model: Model, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """``Saliency(function, backend="jax").explain(x, y)``: the function closes over the
    parameters, as a user's would."""
    from agnostic_saliency import Saliency

    explainer = Saliency(model.function, backend="jax")
    return lambda: explainer.explain(x, y)


def as_nnx(model: Model) -> Any:
    """``model`` as a Flax NNX module: its parameters as ``nnx.Param``s, the same ``apply``."""
    import jax
    from flax import nnx

    def is_variable(value: Any) -> bool:
        return isinstance(value, nnx.Variable)

    class Network(nnx.Module):
        def __init__(self) -> None:
            self.params = nnx.data(jax.tree.map(nnx.Param, model.params))
            self.apply = model.apply

        def __call__(self, x: Any) -> Any:
            params = jax.tree.map(lambda param: param[...], self.params, is_leaf=is_variable)
            return self.apply(params, x)

    return Network()


def ours_nnx(model: Model, x: np.ndarray, y: np.ndarray) -> Callable[[], np.ndarray]:
    """``Saliency(module).explain(x, y)`` on :func:`as_nnx` of ``model``, with its defaults."""
    from agnostic_saliency import Saliency

    explainer = Saliency(as_nnx(model))
    return lambda: explainer.explain(x, y)
