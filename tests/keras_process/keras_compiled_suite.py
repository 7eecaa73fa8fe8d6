"""The checks of ``keras_compiled_checks`` as tests, for one Keras backend per process.

Run by ``tests/backends/test_keras_structured_compiled.py`` with ``KERAS_BACKEND=jax``
and ``KERAS_BACKEND=torch``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from keras_process.keras_compiled_checks import CHECKS


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check(name: str) -> None:
    check: Callable[[], None] = CHECKS[name]
    check()
