"""Metrics next to the libraries whose numbers they reproduce: our Deletion and Insertion
(``preset="xplique"``) against Xplique's on a Keras model, and our Deletion
(``preset="quantus"``) against Quantus's PixelFlipping on the same PyTorch model.

Usage: ``python benchmarks/metrics_speed.py [--n 64] [--rounds 5]``. Prints the median
seconds per evaluation of each, their ratio (ours / theirs) and the largest difference
of the values. Rounds alternate the two contenders.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agnostic_saliency.testing import make_spec
from agnostic_saliency.testing.builders import build_keras, build_torch


def _median_seconds(pairs: list[tuple[Callable[[], Any], list[float]]], rounds: int) -> None:
    for _ in range(rounds):
        for run, times in pairs:
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)


def _row(name: str, ours: Callable[[], Any], theirs: Callable[[], Any], rounds: int) -> str:
    ours(), theirs()  # warm-up: tracing, compilation
    ours_times: list[float] = []
    their_times: list[float] = []
    _median_seconds([(ours, ours_times), (theirs, their_times)], rounds)
    difference = float(np.max(np.abs(np.asarray(ours()) - np.asarray(theirs()))))
    a, b = float(np.median(ours_times)), float(np.median(their_times))
    return f"| {name} | {a:.4f} | {b:.4f} | {a / b:.2f} | {difference:.1e} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=64, help="images")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import xplique.metrics as xplique_metrics

    from agnostic_saliency.metrics import Deletion, Insertion

    spec = make_spec("cnn")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, *spec.input_shape)).astype(np.float32)
    targets = np.arange(args.n) % spec.n_outputs
    maps = rng.random(size=x.shape[:3]).astype(np.float32)
    one_hot = np.eye(spec.n_outputs, dtype=np.float32)[targets]
    keras_model = build_keras(spec)
    rows = ["| metric | ours s | theirs s | ours / theirs | max diff |",
            "|---|---:|---:|---:|---:|"]
    for ours_class, name in ((Deletion, "Deletion"), (Insertion, "Insertion")):
        ours = ours_class(keras_model, preset="xplique", batch_size=64)
        theirs = getattr(xplique_metrics, name)(keras_model, x, one_hot, batch_size=64)
        rows.append(_row(f"{name} (Xplique, Keras)",
                         lambda ours=ours: ours.evaluate(x, targets, maps),
                         lambda theirs=theirs: theirs.evaluate(maps), args.rounds))
    import quantus

    setattr(np, "trapz", np.trapezoid)  # noqa: B010  (Quantus 0.6 calls it; NumPy 2.4 has not)
    torch_model = build_torch(spec.for_layout("channels_first"))
    first = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    ours = Deletion(torch_model, preset="quantus", features_per_step=6)
    flipping = quantus.PixelFlipping(features_in_step=6, disable_warnings=True,
                                     return_auc_per_sample=True)
    rows.append(_row("PixelFlipping (Quantus, PyTorch)",
                     lambda: ours.curve(first, targets, maps).areas,
                     lambda: flipping(model=torch_model, x_batch=first, y_batch=targets,
                                      a_batch=maps[:, None], channel_first=True, device="cpu"),
                     args.rounds))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
