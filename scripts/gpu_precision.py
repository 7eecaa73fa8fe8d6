"""How far float32 saliency maps on a GPU are from float64 maps, per framework.

Usage (on a machine with a CUDA GPU, PyTorch and JAX)::

    python scripts/gpu_precision.py

For the benchmark models (the same seeded weights in PyTorch and JAX) it prints
the relative error ``max |map - exact| / max |exact|`` at each framework's default
float32 precision and inside the backend's ``full_precision()`` (TF32 off), and
how far the two frameworks' maps are from each other. The exact map is PyTorch's
in float64 on the CPU.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _jax
import _torch
from _harness import CASES, Case

from agnostic_saliency import Saliency, get_backend


def relative_error(maps: np.ndarray, exact: np.ndarray) -> float:
    """``max |maps - exact| / max |exact|``."""
    return float(np.abs(maps - exact).max() / np.abs(exact).max())


def _precision(backend: str, full: bool) -> AbstractContextManager[Any]:
    return get_backend(backend).full_precision() if full else nullcontext()


def case_errors(case: Case) -> list[str]:
    """One line per precision: each framework's error and the frameworks' disagreement."""
    x_last, y = case.inputs()
    image = x_last.ndim == 4
    x_first = np.ascontiguousarray(x_last.transpose(0, 3, 1, 2)) if image else x_last
    exact = Saliency(_torch.build(case.model).double()).explain(x_first.astype(np.float64), y)
    tree, strides = _jax.params(case.model)
    explainers = {
        "torch": (Saliency(_torch.build(case.model).to("cuda")), x_first),
        "jax": (Saliency(lambda x: _jax.forward(tree, strides, x), backend="jax"), x_last),
    }
    lines = []
    for full in (False, True):
        maps = {}
        for name, (explainer, inputs) in explainers.items():
            with _precision(name, full):
                maps[name] = explainer.explain(inputs, y)
        errors = "  ".join(f"{name} {relative_error(values, exact):.1e}"
                           for name, values in maps.items())
        between = relative_error(maps["torch"], maps["jax"])
        label = "full_precision()" if full else "default"
        lines.append(f"{case.name:8} {label:16} {errors}  torch-jax {between:.1e}")
    return lines


def main() -> int:
    import jax
    import torch

    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}; "
          f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    print("case     precision        relative error to float64, and between frameworks")
    for case in CASES:
        for line in case_errors(case):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
