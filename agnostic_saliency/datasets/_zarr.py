"""A resumable Zarr v3 store of maps: one compressed chunk per batch, and a manifest.

The contract (docs/datasets.md): a chunk counts as done only once it is written,
fsynced, and recorded in the manifest, which is replaced atomically (temporary
file, fsync, ``os.replace``, fsync of the folder). The manifest holds the method's
definitions and each done chunk's inputs fingerprint; a resumed job skips the
chunks whose fingerprint matches and refuses, before writing anything, data or
definitions that differ. Whatever interrupts a job (an exception, Ctrl-C,
``kill -9``, a power cut), the store then holds done chunks and at most a
stray temporary file, and the chunks a resumed job writes are the bytes an
uninterrupted job writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_saliency.datasets._store import (
    MANIFEST,
    Sink,
    fsync_path,
    write_json_atomically,
)

__all__ = ["ZarrSink"]

#: Definitions that never change the maps: a store begun with one value resumes with another.
_IRRELEVANT = ("batch_size", "strict")
_FORMAT = 1


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    definitions = {key: value for key, value in config.get("definitions", {}).items()
                   if key not in _IRRELEVANT}
    return json.loads(json.dumps({**config, "definitions": definitions}, sort_keys=True))


def _import_zarr() -> Any:
    try:
        import zarr
    except ImportError:
        raise ImportError("out='*.zarr' needs the zarr package: pip install "
                          "'agnostic-saliency[zarr]' (or write out='maps.npy').") from None
    return zarr


class ZarrSink(Sink):
    """Maps written chunk by chunk into the Zarr v3 array at ``path``."""

    def __init__(self, path: Path, resume: bool, config: dict[str, Any],
                 samples: int | None = None) -> None:
        self.zarr = _import_zarr()
        self.samples = samples
        self.path = path
        self.array: Any = None
        self.config = _comparable(config)
        manifest_path = path / MANIFEST
        if path.exists() and any(path.iterdir()):
            if not manifest_path.exists():
                raise FileExistsError(
                    f"{path} exists and was not begun by explain_dataset (no {MANIFEST}); "
                    "choose another path or remove it.")
            if not resume:
                raise FileExistsError(
                    f"{path} exists; pass resume=True (--resume) to complete it (only missing "
                    "chunks are computed), or remove it or choose another path to start over.")
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            self._check_config()
            self._remove_strays()
            if (path / "zarr.json").exists():
                self.array = self.zarr.open_array(str(path), mode="r+",
                                                  config={"write_empty_chunks": True})
                # Interrupted between creating the array and recording its first chunk:
                # the array's chunks fix the batch size.
                if self.manifest["rows"] is None:
                    self.manifest["rows"] = int(self.array.chunks[0])
        else:
            path.mkdir(parents=True, exist_ok=True)
            self.manifest = {"format": _FORMAT, "config": self.config, "rows": None,
                             "chunks": {}, "complete": False}
            self._save()
        self.kept = sum(stop - start for start, stop in self._spans())

    def _spans(self) -> list[tuple[int, int]]:
        rows = self.manifest["rows"]
        return [(int(i) * rows, int(i) * rows + count)
                for i, (count, _) in self.manifest["chunks"].items()]

    def _check_config(self) -> None:
        if self.manifest.get("format") != _FORMAT:
            raise ValueError(f"{self.path}'s manifest has format {self.manifest.get('format')}; "
                             f"this version writes format {_FORMAT}: start a new store.")
        begun = self.manifest["config"]
        if begun != self.config:
            old, new = begun["definitions"], self.config["definitions"]
            changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
            what = ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in changed)
            if begun.get("method") != self.config.get("method") or \
                    begun.get("backend") != self.config.get("backend"):
                what = (f"{begun.get('method')} on {begun.get('backend')} -> "
                        f"{self.config.get('method')} on {self.config.get('backend')}")
            raise ValueError(f"cannot resume {self.path}: it was begun with other definitions "
                             f"({what}); resume with the same explainer, or start a new store.")

    def _remove_strays(self) -> None:
        """Delete the temporary files of writes that an interruption cut short."""
        for stray in self.path.rglob("*.partial"):
            stray.unlink(missing_ok=True)

    def _save(self) -> None:
        write_json_atomically(self.path / MANIFEST, self.manifest)

    def _chunk_rows(self, index: int, start: int, count: int) -> int:
        """Rows per chunk (the first batch's), checked against this batch."""
        rows = self.manifest["rows"]
        if rows is None:
            rows = self.manifest["rows"] = count
        last = self.manifest.get("last")
        if start != index * rows or count > rows or (last is not None and index > last):
            raise ValueError(
                f"batch {index} (samples {start}-{start + count - 1}) has {count} samples "
                f"after batches of {rows}: a Zarr store holds one chunk per batch, so every "
                "batch but the last needs the first one's size; batch the data evenly, or "
                "write out='maps.npy' or out=None.")
        if count < rows:
            self.manifest["last"] = index
        return rows

    def recorded(self, index: int) -> bool:
        return str(index) in self.manifest["chunks"]

    def check(self, index: int, start: int, stop: int, fingerprint: str) -> None:
        count, recorded = self.manifest["chunks"][str(index)]
        rows = self.manifest["rows"]
        if recorded != fingerprint or start != index * rows or stop - start != count:
            raise ValueError(
                f"cannot resume {self.path}: samples {start}-{stop - 1} (batch {index}) differ "
                f"from the inputs or targets its chunk {index} was computed from (fingerprint "
                f"{fingerprint[:12]} against {recorded[:12]}); resume with the data that "
                "began the store, or write to a new path. Nothing was merged.")

    def write(self, index: int, start: int, maps: np.ndarray, fingerprint: str) -> None:
        rows = self._chunk_rows(index, start, len(maps))
        stop = start + len(maps)
        if self.array is None:
            self.array = self.zarr.create_array(
                store=str(self.path), shape=(max(stop, self.samples or 0), *maps.shape[1:]),
                dtype=maps.dtype,
                chunks=(rows, *maps.shape[1:]), fill_value=0, zarr_format=3,
                config={"write_empty_chunks": True})
            fsync_path(self.path / "zarr.json")
            self.manifest["map"] = {"shape": list(maps.shape[1:]), "dtype": maps.dtype.str}
        else:
            self._check_map(start, maps)
        if self.array.shape[0] < stop:  # more samples than known at the start
            self.array.resize((stop, *maps.shape[1:]))
            fsync_path(self.path / "zarr.json")
        self.array[start:stop] = maps
        chunk = self.path.joinpath("c", str(index), *("0" for _ in maps.shape[1:]))
        fsync_path(chunk)
        fsync_path(chunk.parent)
        self.manifest["chunks"][str(index)] = [len(maps), fingerprint]
        self._save()
        self.kept += len(maps)

    def abort(self) -> None:
        """Count what the manifest on disk holds: an interruption may have come between
        its replacement and this object's count."""
        try:
            on_disk = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
            self.kept = sum(count for count, _ in on_disk["chunks"].values())
        except (OSError, ValueError, KeyError):
            pass

    def _check_map(self, start: int, maps: np.ndarray) -> None:
        expected = self.manifest.get("map")
        found = {"shape": list(maps.shape[1:]), "dtype": maps.dtype.str}
        if expected is not None and expected != found:
            raise ValueError(f"the maps of samples {start}-{start + len(maps) - 1} have shape "
                             f"{tuple(found['shape'])} and dtype {maps.dtype}; {self.path} "
                             f"holds maps of shape {tuple(expected['shape'])} and dtype "
                             f"{np.dtype(expected['dtype'])}: every batch needs inputs of one "
                             "shape and dtype.")

    def finish(self, samples: int, record: dict[str, Any]) -> Any:
        if self.array is None:
            raise ValueError("the data gave no samples; nothing to explain.")
        held = max((stop for _, stop in self._spans()), default=0)
        rows = self.manifest["rows"]
        if held != samples or len(self.manifest["chunks"]) != -(-samples // rows):
            raise ValueError(f"cannot complete {self.path}: it holds maps of {held} samples, "
                             f"the data has {samples}; resume with the data that began it, or "
                             "write to a new path.")
        if self.array.shape[0] != samples:  # fewer samples than announced at the start
            self.array.resize((samples, *self.array.shape[1:]))
        self.array.attrs["provenance"] = record
        fsync_path(self.path / "zarr.json")
        self.manifest["complete"] = True
        self._save()
        return self.zarr.open_array(str(self.path), mode="r")
