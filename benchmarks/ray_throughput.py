"""Throughput of ``agnostic_saliency.ray.run_ray_job`` with 1 and 2 actors, and the driver's
memory, against one process with one thread (docs/benchmarks.md, "Ray Data").

Each configuration runs in a fresh interpreter, so that each reads its own ``VmHWM``
(the peak resident memory of the driver). Ray runs on this machine only
(``ray.init(num_cpus=2)``); each actor has one CPU, hence one framework thread.

    python benchmarks/ray_throughput.py [--rows 8192] [--samples 16] [--modes ray-2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def build_cnn() -> Any:
    """A small image classifier (3x32x32 -> 10 classes) with seeded weights."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
        torch.nn.Linear(32 * 16, 10)).eval()


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(kind: str = "VmRSS") -> float:
    """Resident memory now: all of it (``VmRSS``), private (``RssAnon``), or shared
    memory mapped in (``RssShmem``: Ray's object store pages that the driver read)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(mode: str, data: str, out: str, samples: int, batch_size: int) -> dict[str, Any]:
    options = {"nb_samples": samples, "noise": 0.1, "seed": 0}
    n = len(np.load(data, mmap_mode="r"))
    if mode == "single":
        import torch

        from agnostic_saliency import SmoothGrad

        torch.set_num_threads(1)
        explainer = SmoothGrad(build_cnn(), **options)
        inputs = np.load(data, mmap_mode="r")
        maps = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, 32, 32))
        start = time.perf_counter()
        for first in range(0, n, batch_size):
            part, _ = explainer.explain_with_targets(np.asarray(inputs[first:first + batch_size]),
                                                     sample_offset=first)
            maps[first:first + len(part)] = part
        seconds = time.perf_counter() - start
        return {"mode": mode, "rows": n, "seconds": seconds, "rows_per_s": n / seconds,
                "peak_mb": peak_mb()}
    import ray

    from agnostic_saliency.ray import run_ray_job

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    workers = int(mode.split("-")[1])
    before = rss_mb()
    start = time.perf_counter()
    summary = run_ray_job(build_cnn, data, out, workers=workers, method="smoothgrad",
                          batch_size=batch_size, progress=False, **options)
    seconds = time.perf_counter() - start
    anon, shared = rss_mb("RssAnon"), rss_mb("RssShmem")
    ray.shutdown()
    busy = summary["compute_seconds"]
    return {"mode": mode, "rows": n, "seconds": seconds, "rows_per_s": n / seconds,
            "compute_rows_per_s": n / busy * workers, "rss_before_run_mb": before,
            "peak_mb": peak_mb(), "anon_after_mb": anon, "shmem_after_mb": shared,
            "rows_per_worker": list(summary["rows_per_worker"].values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--modes", nargs="+", default=["single", "ray-1", "ray-2"],
                        choices=["single", "ray-1", "ray-2"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as folder:
            result = run_one(args.one, args.data, str(Path(folder) / "maps.npy"), args.samples,
                             args.batch_size)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "x.npy"
        x = np.random.default_rng(0).uniform(size=(args.rows, 3, 32, 32)).astype(np.float32)
        np.save(data, x)
        print(f"inputs {x.nbytes / 2**20:.0f} MB, maps {args.rows * 32 * 32 * 4 / 2**20:.0f} MB")
        del x
        for mode in args.modes:
            output = subprocess.run(
                [sys.executable, __file__, "--one", mode, "--data", str(data), "--rows",
                 str(args.rows), "--samples", str(args.samples), "--batch-size",
                 str(args.batch_size)], check=True, capture_output=True, text=True).stdout
            print(output.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
