"""PyTorch on a GPU with models large enough to keep it busy: torchvision's ResNets.

The benchmark's own models (``run.py``) are so small that a GPU computes them about
as fast as the host queues their kernels. Here the GPU has work, and the host's
check that the inputs are finite runs while it computes (the PyTorch backend's
``dispatch_gradient``). Weights are seeded and random (nothing is downloaded); every
contender starts from NumPy inputs and ends with a NumPy map, as in ``run.py``.

Usage: ``python benchmarks/gpu_resnets.py [--rounds 20]`` on a machine with a CUDA
GPU and torchvision.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import numpy as np
from _harness import Contender, measure

#: (torchvision model, batch size): inputs of 19 and 38 MB.
MODELS = (("resnet18", 32), ("resnet50", 64))


def main(argv: list[str] | None = None) -> int:
    """Time native code and ``Saliency`` on each of :data:`MODELS`; print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    args = parser.parse_args(argv)
    try:
        import torch
        import torchvision
    except ImportError as error:
        raise SystemExit(f"needs PyTorch and torchvision ({error}); "
                         "install torchvision or use run.py") from error
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU: PyTorch sees none; use run.py on the CPU")
    from _torch import _native_saliency

    from agnostic_saliency import Saliency

    print(f"{torch.cuda.get_device_name()}, PyTorch {torch.__version__}, "
          f"torchvision {torchvision.__version__}\n")
    print("| model | batch | native ms (IQR) | agnostic-saliency ms (IQR) | × native "
          "| finite check ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, batch in MODELS:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).cuda().eval()
        x = np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)
        y = np.arange(batch) % 1000
        explainer = Saliency(model)
        native = _native_saliency(model, x, torch.from_numpy(y).cuda(), True, "cuda")
        ours = partial(explainer.explain, x, y)
        found = measure([Contender("native", native), Contender("ours", ours)], args.rounds)
        start = time.perf_counter()
        np.vdot(x, x)  # what the frontend's finite check of these inputs costs on the host
        check = time.perf_counter() - start
        base, mine = found["native"]["median_ms"], found["ours"]["median_ms"]
        print(f"| {name} | {batch} | {_spread(found['native'])} | {_spread(found['ours'])} "
              f"| {mine / base:.3f} | {1e3 * check:.2f} |")
    return 0


def _spread(stats: dict[str, float]) -> str:
    """Median and interquartile range of one contender's times, in ms."""
    return f"{stats['median_ms']:.2f} ({stats['q1_ms']:.2f}–{stats['q3_ms']:.2f})"


if __name__ == "__main__":
    sys.exit(main())
