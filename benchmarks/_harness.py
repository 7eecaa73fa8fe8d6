"""Timing, models' weights and machine description shared by the framework benchmarks.

Nothing here imports a framework: each ``_<framework>.py`` module builds its models
from the NumPy weights made here, so every framework computes the same function.
"""

from __future__ import annotations

import gc
import itertools
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CASES",
    "Case",
    "Contender",
    "Weights",
    "agreement",
    "machine",
    "measure",
    "measure_more",
    "version",
    "weights",
]

#: The shared seed of weights, inputs and targets.
SEED = 0


@dataclass(frozen=True)
class Case:
    """One benchmark: a model, a batch size and an input shape (channels-last for images)."""

    name: str
    model: str  # "cnn" or "mlp"
    batch: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (64, 64, 3) if self.model == "cnn" else (784,)

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Seeded inputs (channels-last for images) and integer targets."""
        rng = np.random.default_rng(SEED + self.batch)
        x = rng.normal(size=(self.batch, *self.sample_shape)).astype(np.float32)
        y = rng.integers(0, 10, size=self.batch)
        return x, y


CASES = (
    Case("cnn-32", "cnn", 32),
    Case("mlp-256", "mlp", 256),
    Case("cnn-1", "cnn", 1),
    Case("mlp-1", "mlp", 1),
)


@dataclass(frozen=True)
class Weights:
    """Seeded weights: convolution kernels are ``(kh, kw, in, out)``, dense ones ``(in, out)``.

    The CNN is conv3x3(3->16) relu, conv3x3(16->32, stride 2) relu, conv3x3(32->32,
    stride 2) relu, global average pool, dense(32->10); convolutions use "valid"
    padding, so every framework computes exactly the same function. The MLP is
    784-256-256-10 with relu.
    """

    convs: tuple[tuple[np.ndarray, np.ndarray, int], ...]  # kernel, bias, stride
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]


def weights(model: str) -> Weights:
    """He-initialised weights of ``model`` ("cnn" or "mlp"), the same on every call."""
    rng = np.random.default_rng(SEED)

    def he(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[:-1]))
        return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def bias(size: int) -> np.ndarray:
        return (rng.normal(size=size) * 0.01).astype(np.float32)

    if model == "cnn":
        convs = tuple((he(3, 3, cin, cout), bias(cout), stride)
                      for cin, cout, stride in ((3, 16, 1), (16, 32, 2), (32, 32, 2)))
        return Weights(convs, ((he(32, 10), bias(10)),))
    sizes = (784, 256, 256, 10)
    return Weights((), tuple((he(a, b), bias(b)) for a, b in itertools.pairwise(sizes)))


@dataclass
class Contender:
    """A way to compute the maps of one case: ``run() -> NumPy maps``.

    ``traces`` (optional) returns how many traces/compilations its framework has
    done so far, to prove that repeated calls never retrace.
    """

    name: str
    run: Callable[[], Any]
    traces: Callable[[], int] | None = None
    note: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def measure(contenders: list[Contender], rounds: int, min_block_s: float = 0.05,
            warmup: int = 3) -> dict[str, dict[str, Any]]:
    """Time ``contenders`` in interleaved rounds; return statistics per contender.

    Each contender's first call is timed on its own (it includes tracing and
    compilation). After ``warmup`` more calls each, each contender gets a block
    size: the number of its calls that lasts at least ``min_block_s``. Then every
    round runs each contender's block once, in an order rotated from round to
    round, and records the time per call. Medians and quartiles are over rounds.

    Blocks of one length keep the contenders of a round close in time, so the
    machine's drift (this kind of shared machine changes speed by up to 2x within
    seconds) cancels in per-round ratios: a slow contender (PAIR's per-sample
    loop, 25x native code) no longer stretches the round with the fast ones' call
    count, which put seconds between ours and native code.
    """
    stats: dict[str, dict[str, Any]] = {}
    for contender in contenders:
        before = contender.traces() if contender.traces else None
        start = time.perf_counter()
        contender.run()
        first = time.perf_counter() - start
        stats[contender.name] = {"first_call_ms": first * 1e3, "note": contender.note,
                                 "traces_first_call": None if before is None
                                 else contender.traces() - before}  # type: ignore[misc]
    for contender in contenders:
        for _ in range(warmup):
            contender.run()
    for contender in contenders:
        block = max(1, int(np.ceil(min_block_s / max(_time_once(contender.run), 1e-7))))
        stats[contender.name].update(calls_per_round=block, times_ms=[])
        if contender.traces:
            stats[contender.name]["traces_while_timed"] = 0
    measure_more(contenders, stats, rounds)
    for entry in stats.values():
        entry["first_rounds"] = rounds
    return stats


def measure_more(contenders: list[Contender], stats: dict[str, dict[str, Any]],
                 rounds: int) -> dict[str, dict[str, Any]]:
    """Time ``rounds`` more interleaved rounds of ``contenders`` (a subset of those
    :func:`measure` made ``stats`` for, with their block sizes); add them to their
    timings and statistics; return ``stats``.

    The benchmark adds rounds where a verdict is within the noise of the first ones:
    only the contenders of that verdict run, so the rounds stay short.
    """
    traces_before = {c.name: c.traces() for c in contenders if c.traces}
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    gc.collect()
    for round_index in range(rounds):
        shift = round_index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            run, block = contender.run, stats[contender.name]["calls_per_round"]
            start = time.perf_counter()
            for _ in range(block):
                run()
            times[contender.name].append((time.perf_counter() - start) / block)
    for contender in contenders:
        entry = stats[contender.name]
        values = np.concatenate([entry["times_ms"], np.array(times[contender.name]) * 1e3])
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        entry.update(median_ms=float(median), q1_ms=float(q1), q3_ms=float(q3),
                     rounds=len(values), times_ms=values.round(4).tolist())
        if contender.traces:
            entry["traces_while_timed"] += contender.traces() - traces_before[contender.name]
    return stats


def _time_once(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def agreement(reference: np.ndarray, other: Any) -> float:
    """Largest absolute difference between two maps, relative to the reference's largest value."""
    other = np.asarray(other, dtype=np.float64).reshape(reference.shape)
    scale = float(np.max(np.abs(reference))) or 1.0
    return float(np.max(np.abs(other - reference)) / scale)


def machine() -> dict[str, Any]:
    """CPU model, core count, OS and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``""``."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""
