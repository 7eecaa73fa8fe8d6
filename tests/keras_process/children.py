"""Running a suite of this folder in a child process on another Keras backend.

Keras fixes its backend when it is imported, so checks on the JAX and PyTorch Keras
backends run in child processes. The child must not inherit pytest-xdist's worker
variables (it would act as a worker), and must fail on skipped tests as CI does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "child_env", "run_suite"]

ROOT = Path(__file__).resolve().parents[2]


def child_env(framework: str) -> dict[str, str]:
    """This process's environment for a child on Keras' ``framework`` backend."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))}
    env.update(KERAS_BACKEND=framework, AGNOSTIC_SALIENCY_REQUIRE_ALL="1")
    return env


def run_suite(suite: Path, framework: str, timeout: float = 600) -> None:
    """Run the pytest file ``suite`` on Keras' ``framework`` backend; fail with its
    output's tail unless every test passed."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
        cwd=ROOT, env=child_env(framework), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
