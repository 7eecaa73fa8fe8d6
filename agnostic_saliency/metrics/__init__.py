"""Metrics of attribution maps, computed with a backend's ``predict`` alone, in NumPy.

Each metric is ``Metric(model, *, backend=None, batch_size=None, preset="xplique",
**settings)`` with ``.evaluate(inputs, targets, maps) -> float``; the curve metrics
also have ``.curve(...)``. A preset (``"xplique"``, ``"quantus"``, ``"rise"``) sets
every setting in which those libraries differ; any setting can be given by name.
See ``docs/evaluate.md``.
"""

from __future__ import annotations

from agnostic_saliency.metrics._base import Metric
from agnostic_saliency.metrics.average import AverageDrop, AverageIncrease
from agnostic_saliency.metrics.causal import Curve, Deletion, Insertion
from agnostic_saliency.metrics.fidelity import MuFidelity

__all__ = [
    "METRICS", "AverageDrop", "AverageIncrease", "Curve", "Deletion", "Insertion", "Metric",
    "MuFidelity",
]

#: Command-line names of the metrics.
METRICS = {
    "deletion": Deletion, "insertion": Insertion, "mufidelity": MuFidelity,
    "average_drop": AverageDrop, "average_increase": AverageIncrease,
}
