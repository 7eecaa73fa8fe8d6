"""The data set job: explain every batch of a source, write the maps, record the provenance."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from agnostic_saliency._provenance import definitions, fingerprint, now, provenance, targets_rule
from agnostic_saliency.datasets._batches import DEFAULT_ROWS, Batch, iter_batches, sample_count
from agnostic_saliency.datasets._progress import Progress
from agnostic_saliency.datasets._store import Sink, open_sink

__all__ = ["Interrupted", "explain_batches", "explain_dataset"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`explain_dataset`: how far it got, and whether it can resume.

    A ``KeyboardInterrupt``, so code that catches one catches this too.
    """

    def __init__(self, kept: int, total: int | None, resumable: bool) -> None:
        super().__init__(kept, total, resumable)
        #: Samples whose maps are durably stored (0 unless ``resumable``).
        self.kept = kept
        self.total = total
        self.resumable = resumable

    def __str__(self) -> str:
        total = "?" if self.total is None else self.total
        if self.resumable:
            return (f"interrupted after {self.kept} of {total} samples; rerun with "
                    "--resume (resume=True) to compute only the rest")
        return (f"interrupted after {self.kept} of {total} samples; nothing was written "
                "(only a .zarr output can resume)")


def _rows(explainer: Any, batch_size: int | None) -> int:
    """Rows per batch cut from an array: the given number, the explainer's explicit
    batch size, or the default (the explainer's ``"auto"`` then sizes its own chunks)."""
    own = getattr(explainer, "batch_size", None)
    return batch_size or (own if isinstance(own, int) else None) or DEFAULT_ROWS


def _located(error: Exception, batch: Batch) -> Exception:
    """``error`` of the same type, its message prefixed with the batch's absolute samples."""
    stop = batch.start + len(batch.inputs) - 1
    where = f"samples {batch.start}-{stop}"
    if batch.given_ids and len(batch.ids):
        where += f" (ids {int(batch.ids.min())}-{int(batch.ids.max())})"
    text = f"{where}: {error}"
    try:
        located = type(error)(text)
    except Exception:  # an exception type that takes other arguments
        return RuntimeError(text)
    return located if str(located) == text else RuntimeError(text)


def _explain(explainer: Any, batch: Batch) -> tuple[np.ndarray, Any]:
    """The maps and explained class indices of one batch; errors name its samples."""
    try:
        return explainer.explain_with_targets(
            batch.inputs, batch.targets, sample_ids=batch.ids)
    except Exception as error:
        raise _located(error, batch) from error


def explain_batches(explainer: Any, data: Any, targets: Any = None, *,
                    batch_size: int | None = None,
                    keys: Mapping[str, str] | None = None) -> Iterator[np.ndarray]:
    """Yield the maps of each batch of ``data``, holding one batch at a time.

    See :meth:`GradientExplainer.explain_batches
    <agnostic_saliency.GradientExplainer.explain_batches>`.
    """
    for batch in iter_batches(data, explainer.backend, targets,
                              batch_size=_rows(explainer, batch_size), keys=keys):
        yield _explain(explainer, batch)[0]


def explain_dataset(explainer: Any, data: Any, targets: Any = None, *,
                    out: str | os.PathLike[str] | None = None, resume: bool = False,
                    progress: bool | None = None, batch_size: int | None = None,
                    keys: Mapping[str, str] | None = None) -> Any:
    """Explain every sample of ``data``; maps in memory, in a ``.npy`` file or a Zarr store.

    See :meth:`GradientExplainer.explain_dataset
    <agnostic_saliency.GradientExplainer.explain_dataset>`.
    """
    started = now()
    total = sample_count(data, keys)
    config = {"method": type(explainer).__name__, "backend": explainer.backend.name,
              "definitions": definitions(explainer)}
    sink = open_sink(out, resume, total, config)
    bar = Progress(progress, total)
    job = _Job(explainer, sink)
    try:
        for batch in iter_batches(data, explainer.backend, targets,
                                  batch_size=_rows(explainer, batch_size), keys=keys):
            job.run(batch)
            bar.update(len(batch.inputs))
        record = job.record(started, None if out is None else os.fspath(out))
        result = sink.finish(job.samples, record)
    except KeyboardInterrupt as interrupt:
        sink.abort()
        resumable = out is not None and str(out).endswith(".zarr")
        raise Interrupted(sink.kept if resumable else job.samples, total,
                          resumable) from interrupt
    except BaseException:
        sink.abort()
        raise
    finally:
        job.close()
        bar.close()
    explainer.last_provenance = record
    return result


class _Job:
    """What a data set job has seen: samples, fingerprints, targets rules, batch sizes.

    A batch's fingerprint is hashed on a second thread while the backend computes its
    maps (``hashlib`` lets go of the GIL on large buffers, as frameworks do while they
    compute), so hashing every input costs no throughput where a core is free.
    """

    def __init__(self, explainer: Any, sink: Sink) -> None:
        self.explainer = explainer
        self.sink = sink
        self.samples = 0
        self.digest = hashlib.sha256()
        self.rules: set[str] = set()
        self.sizes: set[int] = set()
        self.model_sizes: set[int] | None = set()
        self.dtype: Any = None
        self.hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint")

    def run(self, batch: Batch) -> None:
        """Explain ``batch`` and write its maps, unless its chunk is done already."""
        stop = batch.start + len(batch.inputs)
        pending = self.hasher.submit(fingerprint, batch.inputs, batch.targets, batch.ids)
        if self.sink.recorded(batch.position):  # a resumed store: check before skipping
            mark = pending.result()
            self.sink.check(batch.position, batch.start, stop, mark)
        else:
            maps, _ = _explain(self.explainer, batch)
            mark = pending.result()
            self.sink.write(batch.position, batch.start, maps, mark)
            self._count(maps)
        self.digest.update(mark.encode())
        self.rules.add(targets_rule(batch.targets))
        self.samples = stop

    def _count(self, maps: np.ndarray) -> None:
        self.dtype = maps.dtype
        self.sizes.add(len(maps))
        used = getattr(self.explainer, "last_batch_sizes", None)
        if used is None or self.model_sizes is None:
            self.model_sizes = None
        else:
            self.model_sizes.update(int(size) for size in used)

    def close(self) -> None:
        self.hasher.shutdown(wait=True)

    def record(self, started: str, output: str | None) -> dict[str, Any]:
        """The provenance of the job, once every batch is written."""
        if self.dtype is None:  # every chunk was done already: the store knows the dtype
            self.dtype = getattr(getattr(self.sink, "array", None), "dtype", None)
        return provenance(self.explainer, samples=self.samples,
                          inputs_fingerprint=self.digest.hexdigest()[:32], targets=self.rules,
                          batch_sizes=self.sizes, model_batch_sizes=self.model_sizes,
                          started=started, dtype=self.dtype, output=output)
