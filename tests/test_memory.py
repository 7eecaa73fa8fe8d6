"""Peak memory is bounded by batch_size, not by nb_samples, steps or N.

Each configuration runs in its own interpreter, which reports its peak resident
memory from ``VmHWM`` in /proc/self/status (``ru_maxrss`` would inherit the
parent's peak and make the comparison vacuous).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SCRIPT = textwrap.dedent("""
    import numpy as np
    from agnostic_saliency import {method}
    from agnostic_saliency.testing import NumpyModel, make_spec
    from agnostic_saliency.testing.models import Conv2D, GlobalAveragePool, Dense, ModelSpec, Tanh

    rng = np.random.default_rng(0)
    spec = ModelSpec("big", (Conv2D(rng.normal(size=(3, 3, 3, 4)), np.zeros(4)), Tanh(),
                             GlobalAveragePool(), Dense(rng.normal(size=(4, 3)), np.zeros(3))),
                     (64, 64, 3))
    x = rng.normal(size=({n}, 64, 64, 3))
    {method}(NumpyModel(spec), batch_size=16, {count}={value}, reducer=None).explain(x, 1)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            print(int(line.split()[1]))
""")


def _peak_kib(method: str, n: int, count: str, value: int) -> int:
    code = SCRIPT.format(method=method, n=n, count=count, value=value)
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True)
    return int(result.stdout.split()[-1])


@pytest.mark.parametrize(("method", "count"), [("SmoothGrad", "nb_samples"),
                                               ("IntegratedGradients", "steps")])
def test_peak_memory_does_not_grow_with_the_number_of_points(method: str, count: str) -> None:
    small = _peak_kib(method, 2, count, 32)
    large = _peak_kib(method, 2, count, 512)
    # Holding all 1024 points at once would add 1024 * 64*64*3 * 8 B = 96 MiB.
    assert large - small < 0.1 * small, (small, large)
