"""Shared test set-up.

``AGNOSTIC_SALIENCY_REQUIRE_ALL=1`` (set by CI) turns every skip into a failure:
a backend suite skipped in CI would prove nothing.

Tests marked ``gpu`` need a CUDA device: they are deselected unless
``AGNOSTIC_SALIENCY_GPU=1``, and then a missing device fails them (CI has none;
``scripts/gpu-check.sh`` runs them on a GPU machine).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The NumPy reference backend is a test tool: the test kit registers it.
import agnostic_saliency.testing  # noqa: F401

REQUIRE_ALL = os.environ.get("AGNOSTIC_SALIENCY_REQUIRE_ALL") == "1"
GPU = os.environ.get("AGNOSTIC_SALIENCY_GPU") == "1"
_skipped: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if GPU:
        return
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRE_ALL and _skipped:
        print(f"\nAGNOSTIC_SALIENCY_REQUIRE_ALL=1 but {len(_skipped)} tests were skipped:")
        for nodeid in _skipped[:20]:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
