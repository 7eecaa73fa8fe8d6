"""Explaining data sets: batches from any source, maps to memory, ``.npy`` or Zarr, resumable.

:meth:`GradientExplainer.explain_batches <agnostic_saliency.GradientExplainer.explain_batches>`
and :meth:`GradientExplainer.explain_dataset
<agnostic_saliency.GradientExplainer.explain_dataset>` delegate here. See docs/datasets.md.
"""

from agnostic_saliency.datasets._batches import DEFAULT_ROWS, KEYS, Batch, iter_batches
from agnostic_saliency.datasets._job import Interrupted, explain_batches, explain_dataset
from agnostic_saliency.datasets._store import MANIFEST, provenance_path

__all__ = [
    "DEFAULT_ROWS",
    "KEYS",
    "MANIFEST",
    "Batch",
    "Interrupted",
    "explain_batches",
    "explain_dataset",
    "iter_batches",
    "provenance_path",
]
