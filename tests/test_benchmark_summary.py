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


def _stats(native: list[float], ours: list[float], **others: list[float]) -> dict[str, Any]:
    stats = _results(native, ours)["frameworks"]["jax"]["cases"]["mlp-256"]
    stats.update({name: _entry(times) for name, times in others.items()})
    return stats  # type: ignore[no-any-return]


def test_rounds_are_added_only_where_the_interval_holds_the_target(run: ModuleType) -> None:
    native = [1.0] * 8
    assert run._within_noise(_stats(native, [1.0, 1.02, 1.04, 1.06, 1.07, 1.08, 1.1, 1.2]),
                             "mlp-256")
    assert not run._within_noise(_stats(native, [1.08, 1.09, 1.08, 1.1] * 2), "mlp-256")
    assert not run._within_noise(_stats(native, [0.98, 1.0, 0.99, 1.01] * 2), "mlp-256")
    # At batch 1 the target is 1.5: the same noisy rounds are far from it.
    assert not run._within_noise(_stats(native, [1.0, 1.02, 1.04, 1.06, 1.07, 1.08, 1.1, 1.2]),
                                 "mlp-1")
    # Every native form runs again (the fastest may change), and ours; no other library.
    stats = _stats(native, [1.0] * 8, captum=[2.0] * 8)
    assert run._verdict_names(stats) == ["native", "native (XLA)", "agnostic-saliency"]


def test_added_rounds_pair_with_native_codes_and_others_keep_their_first_rounds(
        run: ModuleType) -> None:
    native = [1.0, 2.0, 1.0, 2.0, 4.0, 4.0]  # two first rounds, four added
    results = _results(native, [1.1, 2.2, 1.0, 2.0, 4.0, 4.0])
    stats = results["frameworks"]["jax"]["cases"]["mlp-256"]
    stats["captum"] = _entry([3.0, 2.0])  # timed in the first two rounds only
    stats["agnostic-saliency"]["first_rounds"] = 2
    run._add_ratios(results)
    assert stats["captum"]["paired_ratio"] == pytest.approx(2.0)  # 3/1 and 2/2
    assert stats["agnostic-saliency"]["paired_ratio"] == pytest.approx(1.0)
    assert "(6 rounds) |" in run.summary(results)


def test_more_rounds_time_the_given_contenders_with_their_blocks(run: ModuleType) -> None:
    harness = __import__("_harness")  # put on the path by the benchmark script
    calls = {"a": 0, "b": 0}

    def count(name: str) -> Any:
        return lambda: calls.__setitem__(name, calls[name] + 1)

    contenders = [harness.Contender(name, count(name)) for name in calls]
    stats = harness.measure(contenders, rounds=3, min_block_s=0.0, warmup=0)
    assert [stats[name]["rounds"] for name in calls] == [3, 3]
    assert stats["a"]["first_rounds"] == 3 and stats["a"]["calls_per_round"] == 1
    before = dict(calls)
    harness.measure_more(contenders[:1], stats, rounds=4)
    assert calls["a"] - before["a"] == 4 and calls["b"] == before["b"]
    assert len(stats["a"]["times_ms"]) == stats["a"]["rounds"] == 7
    assert len(stats["b"]["times_ms"]) == 3
    assert stats["a"]["median_ms"] == pytest.approx(float(np.median(stats["a"]["times_ms"])),
                                                    abs=1e-4)
