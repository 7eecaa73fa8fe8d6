"""How many samples go to the model at once when ``batch_size="auto"``.

The first chunk of an input signature is sized from the inputs alone (a generous
guess of what a sample costs); while it runs, the host's peak resident memory tells
what it really cost, and later chunks of that signature fill the memory budget.
Peak memory is read from ``/proc/self/status`` (``VmHWM``), else from
:func:`resource.getrusage`; neither is reset, so nothing else in the process that
watches its own peak is disturbed. Where the peak was already higher before the
chunk, the chunk's cost is bounded by the room below that peak, which errs toward
smaller chunks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np

from agnostic_saliency import messages

__all__ = ["AUTO", "BatchSize", "MemoryProbe", "check_batch_size", "default_budget",
           "first_chunk", "learned_chunk"]

AUTO: Literal["auto"] = "auto"
BatchSize = int | Literal["auto"] | None

#: A first guess of a sample's working memory, in multiples of its input bytes
#: (activations and their gradients of a deep network).
_GUESS_FACTOR = 64
#: The default budget: this share of the available host memory, and at least this much.
_SHARE, _FLOOR = 0.10, 1 << 30


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


def default_budget() -> int:
    """10 % of the host memory available now, and at least 1 GiB."""
    available = _meminfo("MemAvailable")
    return max(_FLOOR, int(available * _SHARE)) if available else _FLOOR


def first_chunk(n: int, sample_bytes: int, budget: int) -> int:
    """Samples in the first chunk of a signature whose cost is not known yet."""
    return max(1, min(n, budget // max(1, sample_bytes * _GUESS_FACTOR)))


def learned_chunk(cost_per_sample: float, budget: int) -> int:
    """Samples per chunk for a measured ``cost_per_sample`` (bytes) within ``budget``."""
    return max(1, int(budget // max(cost_per_sample, 1.0)))


class MemoryProbe:
    """The host memory that one chunk of ``samples`` needed, per sample."""

    def __init__(self) -> None:
        self.cost_per_sample: float | None = None

    @contextmanager
    def measure(self, samples: int, sample_bytes: int) -> Iterator[None]:
        before, peak_before = _meminfo("VmRSS", "self"), _peak()
        yield
        peak_after = _peak()
        if before is None or peak_after is None or peak_before is None:
            self.cost_per_sample = float(sample_bytes * _GUESS_FACTOR)
            return
        # Above the earlier peak the rise is measured; below it, bounded by the room.
        used = peak_after - before if peak_after > peak_before else peak_before - before
        self.cost_per_sample = max(float(used) / samples, float(sample_bytes))


def _peak() -> int | None:
    peak = _meminfo("VmHWM", "self")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


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
