"""Shared set-up of the Ray tests: Ray on loopback only, and a deadline per test."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import ray


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Ray on 127.0.0.1 only: its processes and this driver (which would otherwise
    resolve 127.0.0.1 to the machine's network address) never leave the machine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read by Ray's processes
        patch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)  # and here
        yield


@contextlib.contextmanager
def deadline(seconds: int = 300) -> Iterator[None]:
    """Fail instead of hanging: a ``TimeoutError`` after ``seconds``."""
    def expire(*_: Any) -> None:
        raise TimeoutError(f"the test did not end within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
