"""Whole data sets through an explainer: the methods that :mod:`agnostic_saliency.datasets`
adds to :class:`~agnostic_saliency.explainer.GradientExplainer` (a mixin).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["DatasetMethods"]


class DatasetMethods:
    """``explain_batches`` and ``explain_dataset`` of an explainer."""

    #: The provenance record of the last ``explain_dataset`` call (see docs/datasets.md).
    last_provenance: dict[str, Any] | None = None

    def explain_batches(self, data: Any, targets: Any = None, *, batch_size: int | None = None,
                        keys: Mapping[str, str] | None = None) -> Iterator[np.ndarray]:
        """Yield the maps of each batch of ``data``, holding one batch at a time.

        Seeded noise is drawn per sample from its global id (the batch's ``"ids"``,
        else its running index), so maps never depend on the batching.

        Parameters
        ----------
        data
            An iterable of batches (a PyTorch ``DataLoader``, a ``tf.data.Dataset``, a
            generator), or one array cut into batches of ``batch_size`` rows (NumPy,
            a memmap, a Zarr array). A batch is an array or tensor, an ``(inputs,
            targets)`` pair, or a mapping with ``"inputs"``, ``"targets"`` and ``"ids"``.
        targets
            For batches without targets: ``None`` (predicted class), an int, or one per
            sample of the whole data.
        batch_size
            Rows per batch when an array is cut; default ``self.batch_size`` or 64.
        keys
            Other key names of mapping batches, e.g. ``{"inputs": "image"}``.

        Returns
        -------
        Iterator[numpy.ndarray]
            The maps of each batch, in order.
        """
        from agnostic_saliency.datasets import explain_batches

        return explain_batches(self, data, targets, batch_size=batch_size, keys=keys)

    def explain_dataset(self, data: Any, targets: Any = None, *,
                        out: str | os.PathLike[str] | None = None, resume: bool = False,
                        progress: bool | None = None, batch_size: int | None = None,
                        keys: Mapping[str, str] | None = None) -> Any:
        """Explain every sample of ``data`` (as in :meth:`explain_batches`) as one job.

        ``last_provenance`` then holds the provenance record (also stored in the Zarr
        store's attributes, or beside the ``.npy`` file). See docs/datasets.md.

        Parameters
        ----------
        data, targets, batch_size, keys
            As in :meth:`explain_batches`.
        out
            ``None``: return a NumPy array. ``"maps.npy"``: written under a temporary
            name, renamed into place when complete; returns it memory-mapped.
            ``"maps.zarr"``: a Zarr v3 store, one compressed chunk per batch; returns
            the Zarr array.
        resume
            Complete an interrupted Zarr store: only missing chunks are computed; data
            or definitions other than the store's are refused.
        progress
            ``False`` for silence; else a tqdm bar on a terminal, a line every few
            percent in logs.

        Returns
        -------
        numpy.ndarray or zarr.Array
            The maps: in memory, the ``.npy`` file memory-mapped, or the Zarr array.
        """
        from agnostic_saliency.datasets import explain_dataset

        return explain_dataset(self, data, targets, out=out, resume=resume, progress=progress,
                               batch_size=batch_size, keys=keys)
