"""Array files in and out of Ray Data, in sample-id order, for :mod:`agnostic_saliency.ray`.

Inputs are read lazily by Ray tasks (a memory-mapped ``.npy`` or a Zarr array),
one block of consecutive sample ids at a time, so the driver never holds them.
Maps are written by the driver as Ray streams them back, each run of consecutive
ids with one write, so the driver holds one batch at a time: a ``.npy`` through
plain file writes at the rows' offsets (no memory map whose pages would stay
resident), a Zarr v3 array with one chunk per batch of rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_saliency._ray_actor import PROVENANCE_SUFFIX
from agnostic_saliency._ray_summary import Summary

__all__ = ["array_length", "open_array", "read_rows", "write_maps"]


def open_array(path: str | Path) -> Any:
    """The array stored at ``path`` (``.npy`` memory-mapped, or Zarr), nothing read yet."""
    location = Path(path)
    if not location.exists():
        raise FileNotFoundError(f"no array at {str(location)!r}: give the path of a .npy file "
                                "or a .zarr array that every Ray worker can read.")
    if location.suffix == ".npy":
        return np.load(location, mmap_mode="r")
    if location.suffix == ".zarr" or location.is_dir():
        import zarr

        return zarr.open_array(str(location), mode="r")
    raise ValueError(f"cannot read {location.name!r} in Ray tasks: expected a .npy file or a "
                     ".zarr array (save NumPy arrays with numpy.save).")


def array_length(path: str | Path) -> int:
    """The number of samples stored at ``path``."""
    return int(open_array(path).shape[0])


def read_rows(batch: dict[str, np.ndarray], path: str, column: str,
              targets: Any = None) -> dict[str, np.ndarray]:
    """Ray Data task: the rows ``batch["data"]`` of the array at ``path`` as ``column``,
    their ids as ``id``, and their targets (an int for all, an array or the path of a
    ``.npy``) as ``target``."""
    ids = np.asarray(batch["data"], dtype=np.int64)
    out = {"id": ids, column: _take(open_array(path), ids)}
    if isinstance(targets, (int, np.integer)):
        out["target"] = np.full(len(ids), int(targets), dtype=np.int64)
    elif targets is not None:
        source = np.load(targets, mmap_mode="r") if isinstance(targets, str) else targets
        out["target"] = np.asarray(_take(source, ids))
    return out


def _take(array: Any, ids: np.ndarray) -> np.ndarray:
    """``array[ids]`` reading the smallest slice that holds them."""
    if not len(ids):
        return np.asarray(array[0:0])
    first, last = int(ids.min()), int(ids.max())
    return np.asarray(array[first:last + 1])[ids - first]


def _runs(ids: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(first id, positions in ids)`` for each run of consecutive ids."""
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
    for part, positions in zip(np.split(ordered, breaks), np.split(order, breaks), strict=True):
        yield int(part[0]), positions


class _NpyWriter:
    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self.offset = header.offset
        del header
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.file = open(path, "r+b")  # closed by close()

    def write(self, start: int, rows: np.ndarray) -> None:
        self.file.seek(self.offset + start * self.row_bytes)
        self.file.write(np.ascontiguousarray(rows).tobytes())

    def close(self, summary: dict[str, Any], path: Path) -> None:
        self.file.close()
        Path(f"{path}.json").write_text(json.dumps(summary, indent=2))


class _ZarrWriter:
    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype,
                 chunk_rows: int) -> None:
        import zarr

        self.array = zarr.create_array(store=str(path), shape=shape, dtype=dtype,
                                       chunks=(max(1, chunk_rows), *shape[1:]),
                                       zarr_format=3, overwrite=True)

    def write(self, start: int, rows: np.ndarray) -> None:
        self.array[start:start + len(rows)] = rows

    def close(self, summary: dict[str, Any], path: Path) -> None:
        self.array.attrs["agnostic_saliency"] = summary


def write_maps(ds: Any, out: str | os.PathLike[str], n: int, *, id_column: str = "id",
               output_column: str = "saliency", batch_size: int = 32) -> dict[str, Any]:
    """Stream the maps of ``ds`` into ``out`` (``.npy`` or ``.zarr``) at rows ``ids``.

    Returns the run's summary, also written with the output: ``<out>.json`` next to
    a ``.npy``, the ``agnostic_saliency`` attribute of a Zarr array.

    Raises
    ------
    ValueError
        If an id is outside ``[0, n)`` or repeated, or if some rows never came back.
    """
    path = Path(out)
    if path.suffix not in (".npy", ".zarr"):
        raise ValueError(f"cannot write maps to {path.name!r}: expected a path ending in .npy "
                         "or .zarr.")
    provenance = output_column + PROVENANCE_SUFFIX
    done = np.zeros(n, dtype=bool)
    summary = Summary()
    writer: _NpyWriter | _ZarrWriter | None = None
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        ids = np.asarray(batch[id_column], dtype=np.int64)
        maps = np.asarray(batch[output_column])
        _check_ids(ids, done, n)
        if writer is None:
            shape, dtype = (n, *maps.shape[1:]), maps.dtype
            writer = (_NpyWriter(path, shape, dtype) if path.suffix == ".npy"
                      else _ZarrWriter(path, shape, dtype, batch_size))
        for start, positions in _runs(ids):
            writer.write(start, maps[positions])
        done[ids] = True
        summary.add(batch[provenance])
    missing = np.flatnonzero(~done)
    if writer is None or missing.size:
        raise ValueError(f"{missing.size} of {n} rows never came back from Ray (first missing "
                         f"ids {missing[:5].tolist()}); {path} is incomplete: run it again.")
    result = summary.result()
    writer.close(result, path)
    return result


def _check_ids(ids: np.ndarray, done: np.ndarray, n: int) -> None:
    bad = ids[(ids < 0) | (ids >= n)]
    if bad.size:
        raise ValueError(f"sample ids {bad[:5].tolist()} are outside [0, {n}): the id column "
                         "must hold each row's position in the output.")
    again = ids[done[ids]] if ids.size else ids
    if again.size or len(np.unique(ids)) != len(ids):
        raise ValueError(f"sample ids {again[:5].tolist() or ids[:5].tolist()} came back twice: "
                         "each id must name one row.")
