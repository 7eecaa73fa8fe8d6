"""The benchmark's verdicts: a target is met only when the ratio of medians and the
median per-round ratio (ours over native code in the same round) both reach it; the
summary also gives a bootstrap interval of that median."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

_RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_run", _RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entry(times: list[float]) -> dict[str, Any]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"times_ms": times, "median_ms": median, "q1_ms": q1, "q3_ms": q3}


def _results(native: list[float], ours: list[float], case: str = "mlp-256") -> dict[str, Any]:
    stats = {"native": _entry(native), "native (XLA)": _entry([2 * t for t in native]),
             "agnostic-saliency": _entry(ours)}
    return {"frameworks": {"jax": {"cases": {case: stats}}}}


def test_paired_ratios_are_taken_round_by_round_against_the_fastest_native(
        run: ModuleType) -> None:
    native = [1.0, 2.0, 4.0, 8.0]
    results = _results(native, [1.1 * t for t in native])
    run._add_ratios(results)
    ours = results["frameworks"]["jax"]["cases"]["mlp-256"]["agnostic-saliency"]
    # The machine's drift (times doubling per round) cancels: every round reads 1.1.
    assert ours["paired_ratio"] == pytest.approx(1.1)
    assert ours["paired_q1"] == pytest.approx(1.1) == ours["paired_q3"]
    assert ours["ratio"] == pytest.approx(1.1)  # the medians, 3.3 / 3.0


def test_a_target_met_by_the_medians_alone_is_not_met(run: ModuleType) -> None:
    # Slow rounds of native code lift its median: the ratio of medians reads 1.0
    # while ours is 1.08 x native in three of four rounds.
    native, ours = [1.0, 1.0, 1.2, 1.2], [1.08, 1.08, 1.2, 1.296]
    results = _results(native, ours)
    run._add_ratios(results)
    entry = results["frameworks"]["jax"]["cases"]["mlp-256"]["agnostic-saliency"]
    assert entry["ratio"] <= 1.05 < entry["paired_ratio"]
    assert "NOT met" in run.summary(results)
    fair = _results(native, [1.02 * t for t in native])
    run._add_ratios(fair)
    assert "(≤ 1.05: met)" in run.summary(fair)


def test_the_interval_of_the_median_holds_it_and_narrows_with_more_rounds(
        run: ModuleType) -> None:
    rng = np.random.default_rng(1)
    few = 1.05 + 0.05 * rng.standard_normal(20)
    low, high = run.median_interval(few)
    assert min(few) <= low < np.median(few) < high <= max(few)
    many = np.tile(few, 9)  # the same spread, nine times the rounds
    low_many, high_many = run.median_interval(many)
    assert high_many - low_many < (high - low) / 2
    assert run.median_interval(np.full(20, 1.1)) == pytest.approx((1.1, 1.1))


def test_the_summary_gives_the_interval_of_the_per_round_ratio(run: ModuleType) -> None:
    native = [1.0, 1.1, 0.9, 1.0, 1.2]
    rounds = [1.0, 1.1, 1.02, 1.04, 1.06]  # ours / native, round by round
    results = _results(native, [t * r for t, r in zip(native, rounds, strict=True)])
    run._add_ratios(results)
    entry = results["frameworks"]["jax"]["cases"]["mlp-256"]["agnostic-saliency"]
    low, high = entry["paired_ci"]
    assert entry["paired_ratio"] == pytest.approx(1.04)
    assert low <= entry["paired_ratio"] <= high and low < high
    assert f"| {low:.3f}–{high:.3f} |" in run.summary(results)


def test_a_miss_whose_interval_reaches_the_target_is_within_noise(run: ModuleType) -> None:
    native = [1.0] * 8
    noisy = _results(native, [1.0, 1.02, 1.04, 1.06, 1.07, 1.08, 1.1, 1.2])
    run._add_ratios(noisy)
    entry = noisy["frameworks"]["jax"]["cases"]["mlp-256"]["agnostic-saliency"]
    assert entry["paired_ci"][0] <= 1.05 < entry["paired_ratio"]
    assert "(≤ 1.05: NOT met, within noise)" in run.summary(noisy)
    steady = _results(native, [1.08, 1.09, 1.08, 1.1, 1.09, 1.08, 1.1, 1.09])
    run._add_ratios(steady)
    assert "(≤ 1.05: NOT met) |" in run.summary(steady)
