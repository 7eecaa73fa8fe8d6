"""Batches from any data source, one at a time, as NumPy with each sample's global id.

A source is an iterable of batches (a PyTorch ``DataLoader``, a ``tf.data.Dataset``,
a generator, a list) or one array to cut into batches (a NumPy array or memmap, a
Zarr array, a framework tensor; or a mapping or ``(inputs, targets)`` tuple of such
arrays). A batch is an array or tensor, an ``(inputs, targets)`` pair (a list from a
``DataLoader``), or a mapping with ``"inputs"``, ``"targets"`` and ``"ids"`` keys.
Only one batch exists at a time, so memory is bounded by the batch, not the data.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DEFAULT_ROWS", "KEYS", "Batch", "iter_batches", "sample_count"]

#: Rows per batch when an array is cut and neither the call nor the explainer says.
DEFAULT_ROWS = 64
#: Key names of a mapping batch; ``keys=`` replaces any of them.
KEYS = {"inputs": "inputs", "targets": "targets", "ids": "ids"}


class Batch(NamedTuple):
    """One batch of a data source, ready for ``explain_with_targets``."""

    #: Position of the batch in the source (0, 1, ...).
    position: int
    #: Running index of its first sample: the samples before it in the source.
    start: int
    inputs: np.ndarray
    #: ``None``, one int, or a NumPy array with one row per sample.
    targets: Any
    #: Global id of each sample: the ``"ids"`` of the batch, else its running index.
    ids: np.ndarray
    #: Whether ``ids`` came from the data (not the running index).
    given_ids: bool


def _keys(keys: Mapping[str, str] | None) -> dict[str, str]:
    names = dict(KEYS)
    for role, name in (keys or {}).items():
        if role not in KEYS:
            raise ValueError(f"keys={dict(keys or {})!r} names the role {role!r}; the roles "
                             f"are {sorted(KEYS)} (e.g. keys={{'inputs': 'image'}}).")
        names[role] = name
    return names


def is_array(data: Any) -> bool:
    """Whether ``data`` is one array to cut into batches (it has a shape, a dtype and rows)."""
    if isinstance(data, (Mapping, list, tuple, str, bytes)):
        return False
    shape = getattr(data, "shape", None)
    return shape is not None and hasattr(data, "dtype") and hasattr(data, "__getitem__") \
        and len(tuple(shape)) >= 1


def _rows_of(array: Any) -> int:
    """The number of rows of an array (Zarr arrays have a shape but no ``len``)."""
    return int(next(iter(array.shape)))


def _columns(data: Any, names: dict[str, str]) -> dict[str, Any] | None:
    """The columns of a whole data set given as one mapping or ``(inputs, targets)`` tuple."""
    if isinstance(data, Mapping) and names["inputs"] in data and is_array(data[names["inputs"]]):
        return {role: data[names[role]] for role in KEYS if names[role] in data}
    if isinstance(data, tuple) and len(data) == 2 and all(is_array(part) for part in data) \
            and _rows_of(data[0]) == _rows_of(data[1]) > 0:
        return {"inputs": data[0], "targets": data[1]}
    return None


def sample_count(data: Any, keys: Mapping[str, str] | None = None) -> int | None:
    """How many samples ``data`` holds, if that is known before iterating it."""
    if is_array(data):
        return _rows_of(data)
    columns = _columns(data, _keys(keys))
    if columns is not None:
        return _rows_of(columns["inputs"])
    count = getattr(data, "num_samples", None)
    if isinstance(count, int):
        return count
    dataset = getattr(data, "dataset", None)  # a PyTorch DataLoader
    if dataset is not None and not getattr(data, "drop_last", False):
        try:
            return len(dataset)
        except TypeError:
            return None
    return None


def to_numpy(value: Any, backend: Any) -> np.ndarray:
    """``value`` as NumPy: arrays as they are, tensors through the backend, else ``np.asarray``."""
    if isinstance(value, np.ndarray):
        return value
    try:
        array = backend.to_numpy(value)
        if isinstance(array, np.ndarray):
            return array
    except Exception:  # a tensor of another framework than the model's: ask NumPy
        pass
    numpy = getattr(value, "numpy", None)  # TensorFlow eager tensors
    return np.asarray(numpy() if callable(numpy) else value)


def _targets_of(value: Any, backend: Any) -> Any:
    if value is None or isinstance(value, (int, np.integer)):
        return value
    array = to_numpy(value, backend)
    return int(array) if array.ndim == 0 else array


def _split(raw: Any, names: dict[str, str]) -> tuple[Any, Any, Any]:
    """``(inputs, targets, ids)`` of one batch as the source gives it."""
    if isinstance(raw, Mapping):
        if names["inputs"] not in raw:
            raise ValueError(f"a batch is a mapping with keys {sorted(map(str, raw))} but no "
                             f"{names['inputs']!r}; name the inputs' key with "
                             f"keys={{'inputs': ...}}.")
        return raw[names["inputs"]], raw.get(names["targets"]), raw.get(names["ids"])
    if isinstance(raw, (tuple, list)):
        if len(raw) == 1:
            return raw[0], None, None
        if len(raw) == 2:
            return raw[0], raw[1], None
        raise ValueError(f"a batch is a {type(raw).__name__} of {len(raw)} items; expected "
                         "inputs, (inputs, targets), or a mapping with 'inputs', 'targets' "
                         "and 'ids'.")
    return raw, None, None


def _release(array: Any, rows: slice) -> None:
    """Drop the pages of ``array[rows]`` of a read-only memory map from this process.

    The page cache keeps them; without this, every page read stays in the resident
    set, which would grow with the data set instead of the batch.
    """
    base = getattr(array, "base", None)
    madvise = getattr(base, "madvise", None)
    if not isinstance(base, mmap.mmap) or madvise is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        start = np.frombuffer(base, dtype=np.uint8).ctypes.data
        first = array[rows].ctypes.data - start
        length = array[rows].nbytes
        aligned = first - first % mmap.PAGESIZE
        madvise(mmap.MADV_DONTNEED, aligned, min(length + first - aligned, len(base) - aligned))
    except (ValueError, OSError, TypeError):  # a view the map cannot describe: keep the pages
        return


def _cut(columns: dict[str, Any], rows: int, targets: Any, backend: Any) -> Iterator[Any]:
    """Batches of ``rows`` rows of whole-data-set columns."""
    inputs = columns["inputs"]
    total = _rows_of(inputs)
    for start in range(0, total, rows):
        part = slice(start, min(start + rows, total))
        batch = {"inputs": to_numpy(inputs[part], backend)}
        if isinstance(inputs, np.memmap):  # a copy, so the map's pages can be let go
            batch["inputs"] = np.array(batch["inputs"])
            _release(inputs, part)
        for role in ("targets", "ids"):
            if role in columns:
                batch[role] = columns[role][part]
        if "targets" not in batch:
            batch["targets"] = targets
        yield batch


def iter_batches(data: Any, backend: Any, targets: Any = None, *, batch_size: int | None = None,
                 keys: Mapping[str, str] | None = None) -> Iterator[Batch]:
    """Yield the :class:`Batch` es of ``data``, converted to NumPy, one at a time.

    Parameters
    ----------
    data
        A source of batches or one array (see the module's description).
    backend
        The explainer's backend (it converts framework tensors).
    targets
        Targets of batches that bring none: ``None`` (the predicted class), one int,
        or one per sample of the whole data (cut like the inputs, by running index).
    batch_size
        Rows per batch when an array is cut; ``None`` takes :data:`DEFAULT_ROWS`.
    keys
        Other key names for mapping batches, e.g. ``{"inputs": "image"}``.
    """
    names = _keys(keys)
    per_sample = targets is not None and not isinstance(targets, (int, np.integer))
    default_targets = None if per_sample else targets
    batches: Iterable[Any]
    if is_array(data):
        batches = _cut({"inputs": data}, batch_size or DEFAULT_ROWS, default_targets, backend)
        names = dict(KEYS)
    else:
        columns = _columns(data, names)
        if columns is not None:
            batches = _cut(columns, batch_size or DEFAULT_ROWS, default_targets, backend)
            names = dict(KEYS)
        else:
            batches = data
    start = 0
    for index, raw in enumerate(batches):
        inputs, given, ids = _split(raw, names)
        x = to_numpy(inputs, backend)
        n = len(x) if x.ndim else 0
        if given is None:
            given = targets[start:start + n] if per_sample else default_targets
        id_array = (np.arange(start, start + n, dtype=np.int64) if ids is None
                    else np.asarray(to_numpy(ids, backend), dtype=np.int64))
        yield Batch(index, start, x, _targets_of(given, backend), id_array, ids is not None)
        start += n
