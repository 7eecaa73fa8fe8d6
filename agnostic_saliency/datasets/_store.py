"""Where a data set's maps go: memory, a ``.npy`` file, or a resumable Zarr v3 store.

Every sink takes the maps batch by batch (``write``), and turns them into the
result once all are written (``finish``). A ``.npy`` file is written under a
temporary name and renamed into place only when complete. A Zarr store holds one
chunk per batch; a chunk counts as done only once it is durably written and
recorded, with its inputs' fingerprint, in a small manifest (written atomically),
so a store survives any interruption and ``resume=True`` computes only what is missing.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MANIFEST", "MemorySink", "NpySink", "Sink", "fsync_path", "open_sink",
           "provenance_path", "write_json_atomically"]

#: The manifest's file name inside a Zarr store.
MANIFEST = "agnostic_saliency.manifest.json"
#: Bytes before the data of a ``.npy`` written here: its header is written last, when
#: the number of samples is known, and padded to this size.
_NPY_DATA_OFFSET = 4096


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (its entries: renames, new files) to the disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json_atomically(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path``: a temporary file, fsync, rename, fsync the folder."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(value, file, indent=1, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_path(path.parent)


def provenance_path(out: Path) -> Path:
    """The JSON file beside a ``.npy`` that holds its provenance: ``maps.npy.provenance.json``."""
    return out.with_name(out.name + ".provenance.json")


class Sink:
    """Takes the maps of each batch; makes the result. Subclasses say where maps go."""

    #: Samples whose maps are durably kept (for a resumable sink) or held.
    kept = 0

    def recorded(self, index: int) -> bool:
        """Whether the maps of batch ``index`` are kept already (a resumed store)."""
        return False

    def check(self, index: int, start: int, stop: int, fingerprint: str) -> None:
        """Refuse a recorded batch whose samples or fingerprint differ from the record's."""

    def write(self, index: int, start: int, maps: np.ndarray, fingerprint: str) -> None:
        raise NotImplementedError

    def finish(self, samples: int, record: dict[str, Any]) -> Any:
        """The result, once every batch is written; ``record`` is the provenance."""
        raise NotImplementedError

    def abort(self) -> None:
        """Called when the job fails or is interrupted: leave nothing that looks complete."""

    def _check_maps(self, start: int, maps: np.ndarray, first: np.ndarray | None) -> None:
        if first is not None and (maps.shape[1:] != first.shape[1:] or maps.dtype != first.dtype):
            raise ValueError(
                f"the maps of samples {start}-{start + len(maps) - 1} have shape "
                f"{maps.shape[1:]} and dtype {maps.dtype}, the first batch's "
                f"{first.shape[1:]} and {first.dtype}; every batch needs inputs of one shape "
                "and dtype.")


class MemorySink(Sink):
    """Maps kept in memory; one array is returned."""

    def __init__(self, samples: int | None) -> None:
        self.samples = samples
        self.parts: list[np.ndarray] = []
        self.array: np.ndarray | None = None

    def write(self, index: int, start: int, maps: np.ndarray, fingerprint: str) -> None:
        self._check_maps(start, maps, self.array if self.array is not None
                         else (self.parts[0] if self.parts else None))
        stop = start + len(maps)
        if self.array is None and not self.parts and self.samples:
            # The size is known: one array, no concatenation at the end.
            self.array = np.empty((self.samples, *maps.shape[1:]), dtype=maps.dtype)
        if self.array is not None and stop > len(self.array):  # more samples than announced
            self.parts, self.array = [self.array[:start]], None
        if self.array is not None:
            self.array[start:stop] = maps
        else:
            self.parts.append(maps)
        self.kept = stop

    def finish(self, samples: int, record: dict[str, Any]) -> Any:
        if self.array is not None:
            return self.array if samples == len(self.array) else self.array[:samples].copy()
        if not self.parts:
            raise ValueError("the data gave no samples; nothing to explain.")
        return self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)


class NpySink(Sink):
    """Maps streamed into a temporary file that becomes ``out`` only when complete."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.temporary = out.with_name(f".{out.name}.{uuid.uuid4().hex}.partial")
        self.file = open(self.temporary, "wb")  # closed in finish or abort
        self.file.seek(_NPY_DATA_OFFSET)
        self.first: np.ndarray | None = None

    def write(self, index: int, start: int, maps: np.ndarray, fingerprint: str) -> None:
        self._check_maps(start, maps, self.first)
        if self.first is None:
            self.first = maps[:0].copy()
        self.file.write(np.ascontiguousarray(maps).data.cast("B"))
        self.kept = start + len(maps)

    def finish(self, samples: int, record: dict[str, Any]) -> Any:
        if self.first is None:
            raise ValueError("the data gave no samples; nothing to explain.")
        header = {"descr": np.lib.format.dtype_to_descr(self.first.dtype),
                  "fortran_order": False, "shape": (samples, *self.first.shape[1:])}
        text = repr(header).encode("latin1")
        padding = _NPY_DATA_OFFSET - 10 - len(text) - 1
        if padding < 0:
            raise ValueError(f"maps of shape {header['shape']} need a longer .npy header.")
        self.file.seek(0)
        self.file.write(b"\x93NUMPY\x01\x00" + (_NPY_DATA_OFFSET - 10).to_bytes(2, "little"))
        self.file.write(text + b" " * padding + b"\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temporary, self.out)
        fsync_path(self.out.parent)
        write_json_atomically(provenance_path(self.out), record)
        return np.load(self.out, mmap_mode="r")

    def abort(self) -> None:
        self.file.close()
        self.temporary.unlink(missing_ok=True)


def open_sink(out: str | os.PathLike[str] | None, resume: bool, samples: int | None,
              config: dict[str, Any]) -> Sink:
    """The sink for ``out``: ``None`` (memory), a ``.npy`` path, or a ``.zarr`` path.

    Raises
    ------
    ValueError
        For another suffix, or ``resume=True`` with an output that cannot resume.
    """
    if out is None:
        if resume:
            raise ValueError("resume=True needs out='maps.zarr': maps kept in memory cannot "
                             "resume.")
        return MemorySink(samples)
    path = Path(out)
    if path.suffix == ".npy":
        if resume:
            raise ValueError(f"resume=True with out={str(out)!r}: a .npy file is written whole "
                             "and cannot resume; write to a Zarr store (out='maps.zarr').")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"the folder of out={str(out)!r} does not exist; create it "
                                    "first.")
        return NpySink(path)
    if path.suffix == ".zarr":
        from agnostic_saliency.datasets._zarr import ZarrSink

        return ZarrSink(path, resume, config, samples)
    raise ValueError(f"out={str(out)!r} has the suffix {path.suffix!r}; expected '.npy', "
                     "'.zarr', or out=None for an array in memory.")
