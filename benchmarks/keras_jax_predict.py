"""Deletion on Keras' JAX backend: predictions through the jitted forward pass against the
eager Keras call (the jitted function made to decline, as for an untraceable model).

The zoo's CNN (the model of ``metrics_speed.py``), ``preset="xplique"``, ``batch_size=64``.
Usage: ``KERAS_BACKEND=jax python benchmarks/keras_jax_predict.py [--n 256] [--rounds 5]``.
Prints the median seconds per evaluation of each (rounds alternate), their ratio and the
largest difference of the values.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np

from agnostic_saliency.testing import make_spec
from agnostic_saliency.testing.builders import build_keras


def _seconds(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = run()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=256, help="images")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.environ.get("KERAS_BACKEND") != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")
    from agnostic_saliency_keras import _jax

    from agnostic_saliency.metrics import Deletion

    spec = make_spec("cnn")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, *spec.input_shape)).astype(np.float32)
    targets = np.arange(args.n) % spec.n_outputs
    maps = rng.random(size=x.shape[:3]).astype(np.float32)
    metric = Deletion(build_keras(make_spec("cnn")), preset="xplique", batch_size=64)
    eager_patch = mock.patch.object(_jax._Forward, "__call__", lambda self, model, x: None)

    def eager() -> Any:
        with eager_patch:
            return metric.evaluate(x, targets, maps)

    def jitted() -> Any:
        return metric.evaluate(x, targets, maps)

    jitted_value, eager_value = jitted(), eager()  # warm-up: compilation
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(args.rounds):
        times[0].append(_seconds(jitted)[0])
        times[1].append(_seconds(eager)[0])
    fast, slow = float(np.median(times[0])), float(np.median(times[1]))
    difference = float(np.max(np.abs(np.asarray(jitted_value) - np.asarray(eager_value))))
    print(f"{args.n} images: jitted {fast:.3f} s, eager {slow:.3f} s, "
          f"jitted / eager {fast / slow:.2f}, max diff {difference:.1e}")


if __name__ == "__main__":
    main()
