"""The demo: one small digits CNN, explained with every installed framework.

The CNN was trained on scikit-learn's handwritten digits (``scripts/train_demo_model.py``);
its weights and 16 test images ship with the package, so nothing is downloaded.
The same weights are loaded into PyTorch (channels-first), TensorFlow, Keras and
JAX (channels-last); their maps are compared pair by pair and drawn side by side.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_saliency.registry import list_backends
from agnostic_saliency.saliency import Saliency
from agnostic_saliency.testing.builders import BUILDERS
from agnostic_saliency.testing.models import ModelSpec, load_spec

__all__ = ["DemoResult", "load_demo_model", "run_demo"]

#: Framework -> (module that must be importable, install hint).
_REQUIREMENTS = {
    "torch": ("torch", "pip install torch 'agnostic-saliency[torch]'"),
    "tensorflow": ("tensorflow", "pip install tensorflow-cpu 'agnostic-saliency[tensorflow]'"),
    "keras": ("keras", "pip install keras tensorflow-cpu 'agnostic-saliency[keras]'"),
    "jax": ("jax", "pip install jax 'agnostic-saliency[jax]'"),
}


_SHOWN = 6  # samples drawn in the grid


@dataclass
class DemoResult:
    """What the demo computed: the maps per framework, the report and the files written."""

    images: np.ndarray
    labels: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    report: Any = None


def load_demo_model() -> tuple[ModelSpec, np.ndarray, np.ndarray]:
    """The digits CNN's spec (channels-last), its 16 sample images (N, 8, 8, 1) and labels."""
    with resources.files("agnostic_saliency").joinpath("data/digits_cnn.npz").open("rb") as file:
        spec, extra = load_spec(file)
    return spec, extra["images"].astype(np.float32), extra["labels"].astype(np.int64)


def _missing(framework: str) -> str | None:
    """Why ``framework`` cannot run here, with the command that fixes it; None if it can."""
    module, hint = _REQUIREMENTS[framework]
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed: {hint}"
    if framework not in list_backends():
        return f"the {framework} backend is not installed: {hint}"
    return None


def explain_with(framework: str, spec: ModelSpec, images: np.ndarray, labels: np.ndarray
                 ) -> np.ndarray:
    """Saliency maps (N, H, W) of the demo model built in ``framework``."""
    build, layout, backend = BUILDERS[framework]
    model = build(spec.for_layout(layout))  # type: ignore[arg-type]
    inputs = np.moveaxis(images, -1, 1) if layout == "channels_first" else images
    return Saliency(model, backend=backend).explain(np.ascontiguousarray(inputs), labels)


def _keras_elsewhere(keras_backend: str) -> np.ndarray:
    """Keras maps computed in a child process running Keras on ``keras_backend``."""
    code = ("import sys, numpy as np\n"
            "from agnostic_saliency.demo import explain_with, load_demo_model\n"
            "spec, images, labels = load_demo_model()\n"
            "np.save(sys.stdout.buffer, explain_with('keras', spec, images, labels))\n")
    env = {**os.environ, "KERAS_BACKEND": keras_backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env,
                            check=True)
    from io import BytesIO

    return np.load(BytesIO(result.stdout))


def run_demo(out: str | Path | None = "grid.png", *, frameworks: list[str] | None = None,
             keras_backends: bool = False, echo: Any = print) -> DemoResult:
    """Explain the demo images with every installed framework, compare, and draw the grid.

    Parameters
    ----------
    out
        Path of the PNG grid (image, then one map per framework); ``None`` draws nothing.
    frameworks
        Subset of ``torch``, ``tensorflow``, ``keras``, ``jax``; default all installed.
    keras_backends
        Also run the Keras model on Keras' JAX and PyTorch backends (one child
        process each, as Keras fixes its backend per process).
    echo
        Where progress lines go.
    """
    spec, images, labels = load_demo_model()
    result = DemoResult(images, labels)
    for framework in frameworks or list(_REQUIREMENTS):
        reason = _missing(framework)
        if reason is not None:
            result.skipped[framework] = reason
            echo(f"skipped {framework}: {reason}")
            continue
        start = time.perf_counter()
        result.maps[framework] = explain_with(framework, spec, images, labels)
        result.seconds[framework] = time.perf_counter() - start
        echo(f"{framework:>12}: {len(images)} maps in {result.seconds[framework]:.2f} s")
    if keras_backends and "keras" in result.maps:
        for keras_backend in ("jax", "torch"):
            result.maps[f"keras-{keras_backend}"] = _keras_elsewhere(keras_backend)
    _report(result, out, echo)
    return result


def _report(result: DemoResult, out: str | Path | None, echo: Any) -> None:
    if len(result.maps) >= 2:
        from agnostic_saliency.compare import compare

        result.report = compare(result.maps)
        echo("\nagreement between frameworks (same weights, same images):")
        echo(str(result.report))
    if out is not None and result.maps:
        from agnostic_saliency.plots import plot_comparison, save

        shown = {name: maps[:_SHOWN] for name, maps in result.maps.items()}
        figure = plot_comparison(shown, result.images[:_SHOWN, ..., 0], colorbar=False)
        save(figure, out)  # type: ignore[arg-type]
        echo(f"\nwrote {out}")
