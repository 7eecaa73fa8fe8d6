"""JAX contenders: a plain function, an Equinox module and a Flax NNX module; native, PAIR.

Everything runs on JAX's default device, the CPU or a GPU (``run.py --device``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from _harness import Case, Contender, version, weights

__all__ = ["check_device", "contenders", "versions"]

#: JAX's name of the platform of each ``run.py --device``.
PLATFORMS = {"cpu": "cpu", "cuda": "gpu"}
#: What to do when JAX's default backend is not the one asked for.
NEXT_STEPS = {
    "cpu": "set JAX_PLATFORMS=cpu before JAX is imported (run.py does so for its child)",
    "cuda": "install a CUDA build of JAX (e.g. jax[cuda13]) and leave JAX_PLATFORMS "
            "unset, or use --device cpu",
}


def check_device(device: str) -> None:
    """Exit with a message when JAX's default backend is not the platform of ``device``.

    ``run.py`` sets ``JAX_PLATFORMS=cpu`` for ``--device cpu``; for ``--device cuda``
    JAX must find a GPU by itself. Arrays then live on the default device.

    Parameters
    ----------
    device : str
        ``"cpu"`` or ``"cuda"``, as ``run.py --device`` takes it.

    Raises
    ------
    SystemExit
        When ``jax.default_backend()`` is not ``"cpu"``, respectively ``"gpu"``.
    """
    import jax

    found = jax.default_backend()
    if found != PLATFORMS[device]:
        raise SystemExit(
            f"--device {device}: JAX's default backend is {found!r}, not "
            f"{PLATFORMS[device]!r} (devices: {', '.join(map(str, jax.devices()))}; "
            f"JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r}): {NEXT_STEPS[device]}.")


def versions() -> dict[str, str]:
    """Versions of JAX, jaxlib, Flax, Equinox and PAIR saliency, and JAX's devices.

    Returns
    -------
    dict of str to str
        Distribution names to versions (``""`` when not installed), the devices, and
        ``device_name``: the kind of the default device (``"cpu"`` or the GPU's name).
    """
    import jax

    return {"jax": jax.__version__, "jaxlib": version("jaxlib"), "flax": version("flax"),
            "equinox": version("equinox"), "saliency": version("saliency"),
            "jax_devices": ", ".join(str(device) for device in jax.devices()),
            "device_name": jax.devices()[0].device_kind}


def params(model: str) -> tuple[dict[str, list[Any]], tuple[int, ...]]:
    """The shared seeded weights as a pytree of JAX arrays, and the (static) strides."""
    import jax.numpy as jnp

    spec = weights(model)
    tree = {"kernels": [jnp.asarray(kernel) for kernel, _, _ in spec.convs],
            "conv_biases": [jnp.asarray(bias) for _, bias, _ in spec.convs],
            "weights": [jnp.asarray(kernel) for kernel, _ in spec.dense],
            "biases": [jnp.asarray(bias) for _, bias in spec.dense]}
    return tree, tuple(stride for _, _, stride in spec.convs)


def forward(tree: dict[str, list[Any]], strides: tuple[int, ...], x: Any) -> Any:
    """The benchmark model: NHWC convolutions ("VALID"), average pool, dense layers."""
    import jax
    import jax.numpy as jnp

    for kernel, bias, stride in zip(tree["kernels"], tree["conv_biases"], strides, strict=True):
        x = jax.lax.conv_general_dilated(x, kernel, (stride, stride), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x + bias)
    if tree["kernels"]:
        x = jnp.mean(x, axis=(1, 2))
    last = len(tree["weights"]) - 1
    for index, (weight, bias) in enumerate(zip(tree["weights"], tree["biases"], strict=True)):
        x = x @ weight + bias
        if index < last:
            x = jax.nn.relu(x)
    return x


def contenders(case: Case) -> list[Contender]:
    import jax
    import jax.numpy as jnp

    from agnostic_saliency import Saliency

    x, y = case.inputs()
    tree, strides = params(case.model)
    image = x.ndim == 4

    @jax.jit
    def saliency(tree: Any, x: Any, y: Any) -> Any:
        def score(x: Any) -> Any:
            outputs = forward(tree, strides, x)
            return jnp.take_along_axis(outputs, y[:, None], axis=1).sum()

        grad = jnp.abs(jax.grad(score)(x))
        return grad.max(axis=-1) if image else grad

    found = [Contender("native", lambda: np.asarray(saliency(tree, x, y)),
                       traces=saliency._cache_size,
                       note="jax.jit(grad + abs + max), params as arguments")]

    def function(inputs: Any) -> Any:
        return forward(tree, strides, inputs)

    models = {"agnostic-saliency": (function, "a function closing over its params")}
    if version("equinox"):
        models["agnostic-saliency (Equinox)"] = (_equinox(tree, strides), "an eqx.Module")
    if version("flax"):
        models["agnostic-saliency (Flax NNX)"] = (_nnx(case.model), "an nnx.Module")
        found.append(_nnx_native(case.model, x, y, image))
    for name, (model, note) in models.items():
        explainer = Saliency(model, backend="jax")
        found.append(Contender(name, lambda explainer=explainer: explainer.explain(x, y),
                               traces=lambda explainer=explainer: explainer.backend.trace_count,
                               note=note))
    if version("saliency"):
        found.append(_pair(tree, strides, x, y, image))
    return found


def _equinox(tree: dict[str, list[Any]], strides: tuple[int, ...]) -> Any:
    import equinox as eqx

    class Network(eqx.Module):
        tree: dict[str, list[Any]]
        strides: tuple[int, ...] = eqx.field(static=True)

        def __call__(self, x: Any) -> Any:
            return forward(self.tree, self.strides, x)

    return Network(tree, strides)


def _nnx(model: str) -> Any:
    """The model from Flax NNX layers (``nnx.Conv``, ``nnx.Linear``), same weights."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    spec = weights(model)

    class Network(nnx.Module):
        def __init__(self) -> None:
            rngs = nnx.Rngs(0)
            self.convs = nnx.List([
                nnx.Conv(kernel.shape[2], kernel.shape[3], (3, 3), strides=stride,
                         padding="VALID", rngs=rngs) for kernel, _, stride in spec.convs])
            self.dense = nnx.List([nnx.Linear(*kernel.shape, rngs=rngs)
                                   for kernel, _ in spec.dense])
            for layer, (kernel, bias, *_) in zip([*self.convs, *self.dense],
                                                 (*spec.convs, *spec.dense), strict=True):
                layer.kernel.value = jnp.asarray(kernel)
                layer.bias.value = jnp.asarray(bias)

        def __call__(self, x: Any) -> Any:
            for conv in self.convs:
                x = jax.nn.relu(conv(x))
            if len(self.convs):
                x = jnp.mean(x, axis=(1, 2))
            for index, dense in enumerate(self.dense):
                x = dense(x)
                if index < len(self.dense) - 1:
                    x = jax.nn.relu(x)
            return x

    return Network()


def _nnx_native(model: str, x: np.ndarray, y: np.ndarray, image: bool) -> Contender:
    """What Flax's guides write for an NNX module: ``nnx.jit`` over the module itself.

    ``nnx.jit`` walks the module's graph on every call; the reference "native" code
    instead takes the parameters as a pytree argument of ``jax.jit``.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    module = _nnx(model)

    @nnx.jit
    def saliency(module: Any, x: Any, y: Any) -> Any:
        def score(x: Any) -> Any:
            return jnp.take_along_axis(module(x), y[:, None], axis=1).sum()

        grad = jnp.abs(jax.grad(score)(x))
        return grad.max(axis=-1) if image else grad

    return Contender("native Flax NNX (nnx.jit)", lambda: np.asarray(saliency(module, x, y)),
                     note="nnx.jit over the nnx.Module, grad + abs + max")


def _pair(tree: Any, strides: tuple[int, ...], x: np.ndarray, y: np.ndarray,
          image: bool) -> Contender:
    """PAIR's GradientSaliency, per sample, with a jitted gradient as call_model_function."""
    import jax
    import saliency.core as pair

    @jax.jit
    def grad(images: Any, target: Any) -> Any:
        return jax.grad(lambda inputs: forward(tree, strides, inputs)[:, target].sum())(images)

    def call_model(images: np.ndarray, call_model_args: Any = None,
                   expected_keys: Any = None) -> dict[str, np.ndarray]:
        return {pair.INPUT_OUTPUT_GRADIENTS: np.asarray(grad(images, call_model_args["class"]))}

    method = pair.GradientSaliency()

    def run() -> np.ndarray:
        masks = np.abs(np.stack([method.GetMask(sample, call_model, {"class": int(target)})
                                 for sample, target in zip(x, y, strict=True)]))
        return masks.max(axis=-1) if image else masks

    return Contender("PAIR saliency", run, note="GradientSaliency.GetMask per sample, jitted grad")
