"""The bar plot of ``results.json``: time relative to native code, per framework and case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

__all__ = ["plot"]

COLOURS = {"native": "#4d4d4d", "agnostic-saliency": "#1b9e77", "captum": "#d95f02",
           "xplique": "#7570b3", "PAIR saliency": "#e7298a"}


def _colour(name: str) -> str:
    for prefix, colour in COLOURS.items():
        if name.startswith(prefix):
            return colour
    return "#999999"


def plot(results: dict[str, Any], path: Path) -> None:
    """Write one panel per framework: per case, each contender's median / native's, log scale."""
    from run import TITLES

    frameworks = results["frameworks"]
    figure, axes = plt.subplots(len(frameworks), 1, figsize=(11, 3.4 * len(frameworks)),
                                squeeze=False)
    for axis, (key, framework) in zip(axes[:, 0], frameworks.items(), strict=True):
        labels, positions = [], []
        position = 0.0
        for case, stats in framework["cases"].items():
            for name, entry in stats.items():
                low, high = entry["ratio_q1"], entry["ratio_q3"]
                axis.barh(position, entry["ratio"], color=_colour(name),
                          xerr=[[entry["ratio"] - low], [high - entry["ratio"]]],
                          error_kw={"elinewidth": 0.8, "capsize": 2})
                axis.text(entry["ratio"] * 1.04, position, f"{entry['ratio']:.2f}",
                          va="center", fontsize=7)
                labels.append(f"{case}  {name}")
                positions.append(position)
                position += 1
            position += 0.8
        axis.set_yticks(positions, labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_xscale("log")
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.axvline(1.05, color="black", linewidth=0.6, linestyle="--")
        axis.set_title(TITLES.get(key, key), fontsize=10)
        axis.set_xlabel("median time / fastest native code (log scale; bars: IQR)")
    machine = results["machine"]
    figure.suptitle(f"Saliency, one process per framework — {machine['cpu']}, "
                    f"{machine['usable_cores']} cores, {results['date'][:10]}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
