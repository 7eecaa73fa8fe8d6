"""How many samples go to the model at once when ``batch_size="auto"``.

The first chunk of an input signature is sized from the inputs alone (a generous
guess of what a sample costs); while it runs, the peak memory tells what it really
cost, and later chunks of that signature fill the memory budget.

Where the model computes decides which memory counts. On the host, peak memory is
read from ``/proc/self/status`` (``VmHWM``), else from :func:`resource.getrusage`.
On an accelerator, the backend's :meth:`~agnostic_saliency.backend.BackendBase.device_memory`
reports the device's free memory (the budget's base) and its framework's peak
counter (the chunk's cost), as :class:`DeviceMemory`; the frontend only does the
arithmetic. No peak is ever reset, so nothing else in the process that watches its
own peak is disturbed. Where the peak was already higher before the chunk, the
chunk's cost is bounded by the room below that peak, which errs toward smaller
chunks; a device without a peak counter keeps the first guess.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, NamedTuple

import numpy as np

from agnostic_saliency import messages

__all__ = ["AUTO", "BatchSize", "DeviceMemory", "MemoryProbe", "check_batch_size",
           "default_budget", "first_chunk", "learned_chunk"]

AUTO: Literal["auto"] = "auto"
BatchSize = int | Literal["auto"] | None

#: A first guess of a sample's working memory, in multiples of its input bytes
#: (activations and their gradients of a deep network).
_GUESS_FACTOR = 64
#: The default budget: this share of the available host (or free device) memory, and
#: at least this much (on a device, at most all of its free memory).
_SHARE, _FLOOR = 0.10, 1 << 30


class DeviceMemory(NamedTuple):
    """The memory of the accelerator a model computes on, as its framework reports it.

    Attributes
    ----------
    free
        Bytes the framework can still allocate there (its allocator's limit less what
        it holds, or the driver's free memory plus what its cache holds unused), or
        ``None`` where it cannot tell; the budget is then the floor, 1 GiB.
    total
        Bytes of the device (or the framework's limit on it), or ``None``.
    in_use
        Bytes the framework's allocator holds for tensors now, or ``None``.
    peak
        The most bytes it ever held at once in this process (a counter that is
        never reset here), or ``None`` where it keeps none.
    """

    free: int | None
    total: int | None = None
    in_use: int | None = None
    peak: int | None = None


def check_batch_size(batch_size: object) -> BatchSize:
    """``batch_size`` if it is ``"auto"``, ``None`` or a positive int, else ``ValueError``."""
    if batch_size is None:
        return None
    if batch_size == AUTO:
        return AUTO
    if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0:
        return int(batch_size)
    if isinstance(batch_size, np.integer) and batch_size > 0:
        return int(batch_size)
    raise ValueError(messages.bad_batch_size(batch_size))


def check_budget(budget: object) -> int | None:
    """``memory_budget`` in bytes (``None``: :func:`default_budget`)."""
    if budget is None:
        return None
    if isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget > 0:
        return int(budget)
    raise ValueError(messages.bad_memory_budget(budget))


def default_budget(device: DeviceMemory | None = None) -> int:
    """10 % of the host memory available now, and at least 1 GiB; for a model on an
    accelerator (``device``), 10 % of its free memory, at least 1 GiB where it has that."""
    if device is not None:
        if device.free is None:
            return _FLOOR
        return max(min(_FLOOR, device.free), int(device.free * _SHARE), 1)
    available = _meminfo("MemAvailable")
    return max(_FLOOR, int(available * _SHARE)) if available else _FLOOR


def first_chunk(n: int, sample_bytes: int, budget: int) -> int:
    """Samples in the first chunk of a signature whose cost is not known yet."""
    return max(1, min(n, budget // max(1, sample_bytes * _GUESS_FACTOR)))


def learned_chunk(cost_per_sample: float, budget: int) -> int:
    """Samples per chunk for a measured ``cost_per_sample`` (bytes) within ``budget``."""
    return max(1, int(budget // max(cost_per_sample, 1.0)))


class MemoryProbe:
    """The memory that one chunk of ``samples`` needed, per sample: the device's where
    ``device_memory()`` reports one (the model computes on an accelerator), else the host's.

    Parameters
    ----------
    device_memory
        Reads the model's device memory now (a backend's ``device_memory`` bound to the
        model), returning ``None`` for a model on the host.
    """

    def __init__(self, device_memory: Callable[[], DeviceMemory | None] | None = None) -> None:
        self.cost_per_sample: float | None = None
        self._device_memory = device_memory or _on_host

    @contextmanager
    def measure(self, samples: int, sample_bytes: int) -> Iterator[None]:
        device = self._device_memory()
        if device is None:
            before, peak_before = _meminfo("VmRSS", "self"), _peak()
        else:
            before, peak_before = device.in_use, device.peak
        yield
        if device is None:
            peak_after = _peak()
        else:
            after = self._device_memory()
            peak_after = None if after is None else after.peak
        if before is None or peak_after is None or peak_before is None:
            self.cost_per_sample = float(sample_bytes * _GUESS_FACTOR)
            return
        # Above the earlier peak the rise is measured; below it, bounded by the room.
        used = peak_after - before if peak_after > peak_before else peak_before - before
        self.cost_per_sample = max(float(used) / samples, float(sample_bytes))


def _on_host() -> None:
    return None


def _peak() -> int | None:
    peak = _meminfo("VmHWM", "self")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, else KiB


def _meminfo(field: str, process: str | None = None) -> int | None:
    """A ``kB`` field of ``/proc/meminfo`` (or ``/proc/self/status``), in bytes."""
    path = "/proc/meminfo" if process is None else f"/proc/{process}/status"
    if not os.path.exists(path):
        return None
    with open(path, encoding="ascii") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None
