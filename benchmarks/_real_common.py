"""Sizes, inputs and verdicts shared by the realistic-workload benchmarks.

Nothing here imports a framework. Each ``_real_<framework>.py`` module builds a
ResNet-18-style CNN and a small ViT of the sizes given by a :class:`Config`, in its
framework's own idiom and with its own seeded initialisation: maps are compared
between agnostic-saliency and native code of the same framework, never across
frameworks.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["FRAMEWORKS", "MODELS", "TARGET", "Config", "child_env", "framework_module",
           "ours_factory", "verdict"]

#: The two models every framework builds.
MODELS = ("resnet18", "vit")
#: Largest ratio ours / native that the issue allows on these models.
TARGET = 1.03
#: A reading within this relative noise of the target still counts as met.
NOISE = 0.05
#: Command-line name of each framework: (its ``_real_*`` module, ``KERAS_BACKEND`` or None).
FRAMEWORKS = {
    "torch": ("_real_torch", None),
    "keras-tf": ("_real_keras", "tensorflow"),
    "keras-jax": ("_real_keras", "jax"),
    "keras-torch": ("_real_keras", "torch"),
    "jax": ("_real_jax", None),
    "jax-function": ("_real_jax", None),
}
#: The function of a framework's module that makes our contender, where not ``ours``.
OURS = {"jax": "ours_nnx"}
#: The seed of inputs, targets and weights.
SEED = 0


@dataclass(frozen=True)
class Config:
    """Sizes of the models and of their inputs.

    The defaults are the benchmark's: a ResNet-18 (basic blocks ``[2, 2, 2, 2]``,
    widths 64-512, BatchNorm in eval mode) and a ViT (patch 16, 6 layers, width 192,
    3 heads, MLP 768), both with 1000 classes, on 3x224x224 images, batch 8.
    :meth:`tiny` shrinks every width for smoke tests.
    """

    image: int = 224
    batch: int = 8
    classes: int = 1000
    #: Channels of the ResNet's stem and of its first stage; each stage doubles them.
    resnet_width: int = 64
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    patch: int = 16
    vit_width: int = 192
    vit_depth: int = 6
    heads: int = 3
    mlp: int = 768

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Channels of each ResNet stage."""
        return tuple(self.resnet_width * 2 ** index for index in range(len(self.blocks)))

    @property
    def tokens(self) -> int:
        """Patches of one image (the class token not counted)."""
        return (self.image // self.patch) ** 2

    def tiny(self) -> Config:
        """The same kinds of models, narrow and shallow (two ResNet stages of one block,
        two ViT layers), with 10 classes, on 32x32 images: a smoke test."""
        return replace(self, image=32, batch=2, classes=10, resnet_width=4, blocks=(1, 1),
                       patch=8, vit_width=12, vit_depth=2, heads=3, mlp=24)

    def inputs(self, channels_first: bool) -> tuple[np.ndarray, np.ndarray]:
        """Seeded float32 images (NCHW or NHWC, C-contiguous) and class indices.

        Parameters
        ----------
        channels_first : bool
            ``True`` for ``(N, 3, H, W)`` (PyTorch), ``False`` for ``(N, H, W, 3)``.

        Returns
        -------
        tuple of numpy.ndarray
            The images and int64 targets of shape ``(N,)``.
        """
        rng = np.random.default_rng(SEED)
        x = rng.normal(size=(self.batch, self.image, self.image, 3)).astype(np.float32)
        y = rng.integers(0, self.classes, size=self.batch)
        if channels_first:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x, y

    def describe(self) -> dict[str, Any]:
        """The sizes, for the results' JSON."""
        return {"image": self.image, "batch": self.batch, "classes": self.classes,
                "resnet_widths": list(self.stage_widths), "blocks": list(self.blocks),
                "patch": self.patch, "vit_width": self.vit_width, "vit_depth": self.vit_depth,
                "heads": self.heads, "mlp": self.mlp}


def he_normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """He-normal float32 weights of ``shape``; fan-in is the product of all axes but the last."""
    fan_in = int(np.prod(shape[:-1]))
    return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def verdict(ratio: float) -> str:
    """``"met"`` at or under :data:`TARGET`; ``"met (within noise)"`` within :data:`NOISE`
    of it (the issue counts a reading within the noise as met); else ``"NOT met"``.

    Parameters
    ----------
    ratio : float
        Ours over native code.

    Returns
    -------
    str
        The verdict.
    """
    if ratio <= TARGET:
        return "met"
    return "met (within noise)" if ratio <= TARGET * (1 + NOISE) else "NOT met"


def framework_module(framework: str) -> Any:
    """The ``_real_*`` module of ``framework`` (Keras' backend is the process's)."""
    return importlib.import_module(FRAMEWORKS[framework][0])


def ours_factory(framework: str) -> Any:
    """``framework``'s maker of our contender: ``(model, x, y) -> run``."""
    return getattr(framework_module(framework), OURS.get(framework, "ours"))


def child_env(framework: str) -> dict[str, str]:
    """The environment of ``framework``'s process: its Keras backend, JAX on the CPU."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}
    backend = FRAMEWORKS[framework][1]
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


def write_results(out: Any, results: dict[str, Any], text: str) -> None:
    """``results.json`` and ``results.md`` (the table ``text``) in the folder ``out``."""
    import json

    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(text + "\n")
    print(text)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
