"""Smoke tests of the realistic-workload benchmarks (``benchmarks/real_models.py`` and
``benchmarks/first_map.py``) on tiny models: the code runs, and every framework's
hand-written native gradient and ``Saliency`` give the same maps. No timing is asserted.

Keras fixes its backend per process, so Keras on JAX and on PyTorch run in child
processes; this process runs Keras on TensorFlow (``tests/conftest.py``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _harness import agreement  # noqa: E402
from _real_common import MODELS, Config, child_env, framework_module  # noqa: E402
from real_models import TOLERANCE, contenders  # noqa: E402

TINY = Config().tiny()


def _maps(framework: str, model_name: str) -> tuple[np.ndarray, np.ndarray]:
    native, ours = contenders(framework, model_name, TINY)
    return np.asarray(native.run()), np.asarray(ours.run())


def _check_agree(native: np.ndarray, ours: np.ndarray) -> None:
    assert native.shape == ours.shape == (TINY.batch, TINY.image, TINY.image)
    assert np.all(native >= 0) and np.all(native.max(axis=(1, 2)) > 0)
    assert agreement(native.astype(np.float64), ours) <= TOLERANCE


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("framework", ["torch", "jax", "keras-tf"])
def test_native_gradient_and_ours_agree(framework: str, model_name: str) -> None:
    if framework == "keras-tf":
        import keras

        assert keras.backend.backend() == "tensorflow", "tests/conftest.py sets KERAS_BACKEND"
    _check_agree(*_maps(framework, model_name))


_CHILD = """
import json, sys
import numpy as np
sys.path.insert(0, {benchmarks!r})
sys.path.insert(0, {tests!r})
from test_real_models_bench import _maps
found = {{}}
for model_name in ("resnet18", "vit"):
    native, ours = _maps({framework!r}, model_name)
    found[model_name] = [native.tolist(), ours.tolist()]
print("MAPS " + json.dumps(found))
"""


@pytest.mark.parametrize("framework", ["keras-jax", "keras-torch"])
def test_native_gradient_and_ours_agree_on_other_keras_backends(framework: str) -> None:
    code = _CHILD.format(benchmarks=str(BENCHMARKS), tests=str(ROOT / "tests"),
                         framework=framework)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(framework),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("MAPS "))
    for native, ours in json.loads(line[5:]).values():
        _check_agree(np.array(native), np.array(ours))


def test_native_pytorch_reference_matches_finite_differences() -> None:
    """The native map is max over channels of |d logit / d pixel|: central differences
    of the smooth ViT in float64 at a few pixels give the same."""
    import torch

    module = framework_module("torch")
    model = module.build("vit", TINY)
    x, y = TINY.inputs(channels_first=True)
    maps = module.native(model, x, y)()
    double = copy.deepcopy(model).double()
    step = 1e-5
    for sample, row, column in ((0, 3, 5), (1, 17, 30)):
        slopes = []
        for channel in range(3):
            shifted = []
            for sign in (1, -1):
                probe = torch.from_numpy(x[sample:sample + 1].astype(np.float64))
                probe[0, channel, row, column] += sign * step
                with torch.no_grad():
                    shifted.append(float(double(probe)[0, y[sample]]))
            slopes.append(abs(shifted[0] - shifted[1]) / (2 * step))
        assert maps[sample, row, column] == pytest.approx(max(slopes), rel=1e-3, abs=1e-6)


def _script(name: str, *args: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *args, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "results.md").read_text().startswith("### ")
    return json.loads((out / "results.json").read_text())  # type: ignore[no-any-return]


def test_real_models_command_line_writes_table_and_json(tmp_path: Path) -> None:
    results = _script("real_models.py", "--frameworks", "torch", "--tiny", "--rounds", "2",
                      "--warmup", "0", out=tmp_path)
    assert list(results["frameworks"]) == ["torch"]
    for framework in results["frameworks"].values():
        assert list(framework["models"]) == list(MODELS)
        for stats in framework["models"].values():
            ours = stats["agnostic-saliency"]
            assert len(ours["times_ms"]) == len(stats["native"]["times_ms"]) == 2
            assert ours["max_difference"] <= TOLERANCE
            assert ours["ratio"] == pytest.approx(ours["median_ms"]
                                                  / stats["native"]["median_ms"])
            assert ours["verdict"] in ("met", "met (within noise)", "NOT met")


def test_first_map_command_line_runs_fresh_processes(tmp_path: Path) -> None:
    results = _script("first_map.py", "--frameworks", "torch", "--tiny", "--repeats", "1",
                      "--image-size", "32", "--batch", "2", out=tmp_path)
    summary = results["summary"]["torch"]
    for variant in ("native", "ours"):
        (run,) = results["runs"]["torch"][variant]
        phases = run["import_s"] + run["build_s"] + run["first_call_s"]
        assert 0 < phases < run["total_s"]  # the interpreter's start counts too
        assert summary[variant]["total_s"] == run["total_s"]
    assert summary["difference_s"] == pytest.approx(summary["ours"]["total_s"]
                                                    - summary["native"]["total_s"])
