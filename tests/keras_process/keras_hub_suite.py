"""The checks of ``keras_hub_checks`` as tests, for one Keras backend per process.

Run by ``tests/backends/test_keras_layers_nested.py`` with ``KERAS_BACKEND=jax`` and
``KERAS_BACKEND=torch``: one process per backend, since importing keras_hub is slow.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from keras_process.keras_hub_checks import CHECKS


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check(name: str) -> None:
    check: Callable[[], None] = CHECKS[name]
    check()
