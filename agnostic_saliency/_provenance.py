"""Provenance records: what made a set of maps, so a result can be traced and reproduced.

A record is a JSON-ready dict: library and framework versions (read from the
installed distributions' metadata, so no framework is imported), the backend and
its device when it tells, the method and its resolved definitions (the explainer's
public attributes), the targets rule, the batch sizes actually used, the sample
count, a fingerprint of the inputs, and start and end times. :func:`provenance`
builds one for any explain call; ``explain_dataset`` stores it beside its output.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import platform
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import numpy as np

__all__ = [
    "FRAMEWORK_DISTRIBUTIONS",
    "definitions",
    "fingerprint",
    "now",
    "provenance",
    "targets_rule",
    "versions",
]

#: Distributions recorded when their top-level module is already imported.
FRAMEWORK_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
    "keras": ("keras",),
    "jax": ("jax", "jaxlib"),
    "flax": ("flax",),
    "equinox": ("equinox",),
}

#: Explainer attributes that are no definitions of the maps.
_NOT_DEFINITIONS = frozenset({"model", "last_provenance", "last_batch_sizes"})
#: Arrays up to this many values are recorded as lists; larger ones by shape and hash.
_LISTED_VALUES = 16


def now() -> str:
    """The current UTC time in ISO 8601 with seconds' fractions."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions(backend_name: str | None = None) -> dict[str, str]:
    """Versions of this library, NumPy, the backend's plugin and the imported frameworks.

    Frameworks are listed only when their module is in ``sys.modules`` (a model of
    theirs is being explained), so this never imports one.
    """
    imported = frozenset(module for module in FRAMEWORK_DISTRIBUTIONS if module in sys.modules)
    return dict(_versions(backend_name, imported))


@functools.lru_cache(maxsize=16)
def _versions(backend_name: str | None, imported: frozenset[str]) -> dict[str, str]:
    """:func:`versions` for the frameworks ``imported``: installed metadata is read once."""
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "agnostic-saliency": _version("agnostic-saliency"),
        "numpy": np.__version__,
    }
    if backend_name is not None:
        for entry in metadata.entry_points(group="agnostic_saliency.backends"):
            if entry.name == backend_name and entry.dist is not None:
                found[entry.dist.name] = entry.dist.version
    for module, distributions in FRAMEWORK_DISTRIBUTIONS.items():
        if module in imported:
            for distribution in distributions:
                found[distribution] = _version(distribution)
    return {name: version for name, version in found.items() if version is not None}


def _json_value(value: Any) -> Any:
    """``value`` as JSON: numbers, strings, lists, small arrays; others by name or summary."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.size <= _LISTED_VALUES:
            return value.tolist()
        digest = hashlib.sha256(np.ascontiguousarray(value).data.cast("B"))
        return {"shape": list(value.shape), "dtype": str(value.dtype),
                "sha256": digest.hexdigest()[:16]}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _json_value(getattr(value, field.name))
                for field in dataclasses.fields(value)}
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"
    return repr(value)[:200]


def definitions(explainer: Any) -> dict[str, Any]:
    """The explainer's public attributes (reducer, absolute, noise, seed, steps, ...) as JSON.

    Read generically, so a new method's definitions are recorded without a change
    here; ``preset`` is ``None`` unless the explainer keeps it.
    """
    found = {name: _json_value(value) for name, value in sorted(vars(explainer).items())
             if not name.startswith("_") and name not in _NOT_DEFINITIONS}
    found.setdefault("preset", _json_value(getattr(explainer, "preset", None)))
    return found


def targets_rule(targets: Any) -> str:
    """How the explained class of each sample is chosen, in words."""
    if targets is None:
        return "predicted class (argmax of the output)"
    if isinstance(targets, (int, np.integer)):
        return f"class {int(targets)} for every sample"
    array = np.asarray(targets)
    if array.ndim == 2:
        return "weights over the outputs, one row per sample"
    if array.ndim == 0:
        return f"class {array.item()} for every sample"
    return "given class index per sample"


def fingerprint(inputs: np.ndarray, targets: Any = None, ids: Any = None) -> str:
    """A SHA-256 hash of the inputs' bytes, shape and dtype, the targets and the sample ids.

    Equal fingerprints mean the same inputs explained for the same targets (and
    the same noise streams); a chunk of maps is only reused under an equal one.
    SHA-256 because processors hash it in hardware: the inputs are hashed once more
    than they are read.
    """
    digest = hashlib.sha256()
    array = np.ascontiguousarray(inputs)
    digest.update(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(array.data.cast("B"))
    if targets is None or isinstance(targets, (int, np.integer)):
        digest.update(f"|targets={targets!r}".encode())
    else:
        labels = np.ascontiguousarray(targets)
        digest.update(f"|targets{labels.shape}|{labels.dtype.str}|".encode())
        digest.update(labels.data.cast("B"))
    if ids is not None:
        digest.update(b"|ids|")
        digest.update(np.ascontiguousarray(ids, dtype=np.int64).data.cast("B"))
    return digest.hexdigest()[:32]


def _device(explainer: Any) -> Any:
    """The device the backend says it computes on, if it says (an attribute or a method)."""
    device = getattr(explainer.backend, "device", None)
    if callable(device):
        try:
            device = device(explainer.model)
        except Exception:  # a device query must never fail the job it describes
            return None
    return None if device is None else str(device)


def provenance(explainer: Any, *, samples: int, inputs_fingerprint: str | None,
               targets: Iterable[str], batch_sizes: Iterable[int],
               model_batch_sizes: Iterable[int] | None, started: str,
               finished: str | None = None, dtype: Any = None,
               output: str | None = None) -> dict[str, Any]:
    """The provenance record of maps made by ``explainer``.

    Parameters
    ----------
    explainer
        The explainer that made the maps.
    samples
        How many samples were explained.
    inputs_fingerprint
        :func:`fingerprint` of all the inputs (for a data set: of its chunks' ones).
    targets
        The targets rules used (:func:`targets_rule`), each listed once.
    batch_sizes
        Sizes of the batches explained (the data's batches).
    model_batch_sizes
        Sizes of the batches sent to the model, as the explainer reports them
        (``last_batch_sizes``, after out-of-memory back-off); ``None`` if it does not.
    started, finished
        ISO 8601 times (:func:`now`); ``finished`` defaults to now.
    dtype
        The maps' dtype.
    output
        Where the maps were written, if anywhere.
    """
    backend = explainer.backend
    return {
        "versions": versions(backend.name),
        "backend": backend.name,
        "device": _device(explainer),
        "dtype": None if dtype is None else str(np.dtype(dtype)),
        "method": type(explainer).__name__,
        "definitions": definitions(explainer),
        "targets": sorted(set(targets)),
        "batch_sizes": sorted(set(batch_sizes)),
        "model_batch_sizes": None if model_batch_sizes is None
        else sorted(set(model_batch_sizes)),
        "samples": int(samples),
        "inputs_fingerprint": inputs_fingerprint,
        "output": output,
        "started": started,
        "finished": finished if finished is not None else now(),
    }
