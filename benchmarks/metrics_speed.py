"""Metrics next to the libraries whose numbers they reproduce, on the same model and maps.

- Xplique on a Keras model (TensorFlow backend): our Deletion, Insertion, MuFidelity,
  AverageDrop and AverageIncrease (``preset="xplique"``) against its ``Deletion``,
  ``Insertion``, ``MuFidelity``, ``AverageDropMetric`` and ``AverageIncreaseMetric``.
- Quantus on the same model in PyTorch: our Deletion and MuFidelity
  (``preset="quantus"``) against its ``PixelFlipping`` and ``FaithfulnessCorrelation``.

Both sides get ``batch_size=64`` (inputs per call of the model). Xplique's metrics take
the inputs when they are built (and compute their base scores then): that is left out of
its time; ours take them in ``evaluate`` and include them.

Usage: ``python benchmarks/metrics_speed.py [--n 64 256] [--rounds 5]
[--xplique-mufidelity-rounds 1] [--skip-mufidelity]``.
Prints, per number of images, the median seconds per evaluation of each, their ratio
(ours / theirs, below 1 is faster) and the largest difference of the values (none for
MuFidelity, whose random subsets differ between the libraries). Rounds alternate the two
contenders.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agnostic_saliency.testing import make_spec
from agnostic_saliency.testing.builders import build_keras, build_torch

_BATCH = 64
Contender = Callable[[], Any]


def _median_seconds(ours: Contender, theirs: Contender, rounds: int) -> tuple[float, float]:
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for run, kept in ((ours, times[0]), (theirs, times[1])):
            start = time.perf_counter()
            run()
            kept.append(time.perf_counter() - start)
    return float(np.median(times[0])), float(np.median(times[1]))


def _row(name: str, ours: Contender, theirs: Contender, rounds: int, compare: bool) -> str:
    ours_value, their_value = ours(), theirs()  # warm-up: tracing, compilation
    difference = (f"{float(np.max(np.abs(np.asarray(ours_value) - np.asarray(their_value)))):.1e}"
                  if compare else "—")
    a, b = _median_seconds(ours, theirs, rounds)
    return f"| {name} | {a:.4f} | {b:.4f} | {a / b:.2f} | {difference} |"


def _xplique_rows(x: np.ndarray, targets: np.ndarray, maps: np.ndarray, n_outputs: int,
                  rounds: int, mufidelity_rounds: int) -> list[str]:
    import xplique.metrics as xplique_metrics

    from agnostic_saliency.metrics import (
        AverageDrop,
        AverageIncrease,
        Deletion,
        Insertion,
        MuFidelity,
    )

    model = build_keras(make_spec("cnn"))
    one_hot = np.eye(n_outputs, dtype=np.float32)[targets]
    pairs: list[tuple[Any, str, int]] = [
        (Deletion, "Deletion", rounds), (Insertion, "Insertion", rounds),
        (AverageDrop, "AverageDropMetric", rounds),
        (AverageIncrease, "AverageIncreaseMetric", rounds),
    ]
    if mufidelity_rounds:
        pairs.append((MuFidelity, "MuFidelity", mufidelity_rounds))
    rows = []
    for ours_class, their_name, its_rounds in pairs:
        ours = ours_class(model, preset="xplique", batch_size=_BATCH)
        theirs = getattr(xplique_metrics, their_name)(model, x, one_hot, batch_size=_BATCH)
        rows.append(_row(f"{ours_class.__name__} (Xplique {their_name}, Keras)",
                         lambda ours=ours: ours.evaluate(x, targets, maps),
                         lambda theirs=theirs: theirs.evaluate(maps), its_rounds,
                         ours_class is not MuFidelity))
    return rows


def _quantus_rows(x: np.ndarray, targets: np.ndarray, maps: np.ndarray, rounds: int,
                  mufidelity: bool) -> list[str]:
    import quantus

    from agnostic_saliency.metrics import Deletion, MuFidelity

    setattr(np, "trapz", np.trapezoid)  # noqa: B010  (Quantus 0.6 calls it; NumPy 2.4 has not)
    model = build_torch(make_spec("cnn").for_layout("channels_first"))
    first = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    common = {"model": model, "x_batch": first, "y_batch": targets, "a_batch": maps[:, None],
              "channel_first": True, "device": "cpu", "batch_size": _BATCH}
    deletion = Deletion(model, preset="quantus", features_per_step=6, batch_size=_BATCH)
    flipping = quantus.PixelFlipping(features_in_step=6, disable_warnings=True,
                                     return_auc_per_sample=True)
    rows = [_row("Deletion (Quantus PixelFlipping, PyTorch)",
                 lambda: deletion.curve(first, targets, maps).areas,
                 lambda: flipping(**common), rounds, True)]
    if mufidelity:
        fidelity = MuFidelity(model, preset="quantus", subset_size=32, batch_size=_BATCH)
        correlation = quantus.FaithfulnessCorrelation(subset_size=32, return_aggregate=False,
                                                      disable_warnings=True)
        rows.append(_row("MuFidelity (Quantus FaithfulnessCorrelation, PyTorch)",
                         lambda: fidelity.evaluate_per_sample(first, targets, maps),
                         lambda: correlation(**common), rounds, False))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, nargs="+", default=[64], help="images")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--xplique-mufidelity-rounds", type=int, default=1,
                        help="rounds of Xplique's MuFidelity (its slowest metric by far)")
    parser.add_argument("--skip-mufidelity", action="store_true",
                        help="leave MuFidelity out (its 100-200 draws dominate the time)")
    args = parser.parse_args()
    spec = make_spec("cnn")
    for n in args.n:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, *spec.input_shape)).astype(np.float32)
        targets = np.arange(n) % spec.n_outputs
        maps = rng.random(size=x.shape[:3]).astype(np.float32)
        rows = [f"{n} images, batch_size={_BATCH}, median of {args.rounds} rounds",
                "", "| metric | ours s | theirs s | ours / theirs | max diff |",
                "|---|---:|---:|---:|---:|"]
        rows += _xplique_rows(x, targets, maps, spec.n_outputs, args.rounds,
                              0 if args.skip_mufidelity else args.xplique_mufidelity_rounds)
        rows += _quantus_rows(x, targets, maps, args.rounds, not args.skip_mufidelity)
        print("\n".join(rows) + "\n", flush=True)


if __name__ == "__main__":
    main()
