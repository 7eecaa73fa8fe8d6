"""The worked example plugin (examples/autograd_backend) works as the guide promises.

It is a backend outside the core: installed with ``pip install -e
examples/autograd_backend``, found through its entry point, picked by detection,
and it passes the conformance suite run exactly as the guide documents it.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from agnostic_saliency import Saliency, get_backend, list_backends

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "autograd_backend"
INSTALL = f"pip install -e {EXAMPLE.relative_to(ROOT)}"


@pytest.fixture(scope="module")
def plugin() -> ModuleType:
    try:
        metadata.distribution("agnostic-saliency-autograd")
    except metadata.PackageNotFoundError:
        pytest.fail(f"the example plugin is not installed; run {INSTALL} "
                    "(requirements-dev.txt does)")
    return importlib.import_module("agnostic_saliency_autograd")


def _clean_env() -> dict[str, str]:
    """The environment without this pytest run's own settings."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}


def test_installed_copy_is_this_checkout(plugin: ModuleType) -> None:
    location = Path(str(plugin.__file__)).resolve()
    assert location.is_relative_to(EXAMPLE), f"{location} is not from {EXAMPLE}; {INSTALL}"


def test_entry_point_is_declared(plugin: ModuleType) -> None:
    entries = metadata.entry_points(group="agnostic_saliency.backends")
    values = {entry.name: entry.value for entry in entries}
    assert values.get("autograd") == "agnostic_saliency_autograd:AutogradBackend"


def test_plugin_is_listed_and_loaded(plugin: ModuleType) -> None:
    assert "autograd" in list_backends()
    backend = get_backend("autograd")
    assert type(backend) is plugin.AutogradBackend


def test_detection_picks_the_plugin_for_its_models(plugin: ModuleType) -> None:
    import autograd.numpy as anp

    model_type = plugin.AutogradModel

    class Subclass(model_type):  # type: ignore[misc, valid-type]
        pass

    weights = np.arange(6.0).reshape(3, 2)
    for model in (model_type(lambda w, x: anp.tanh(x @ w), weights),
                  Subclass(lambda w, x: x @ w, weights)):
        assert Saliency(model).backend is get_backend("autograd")
    maps = Saliency(Subclass(lambda w, x: x @ w, weights)).explain(np.ones((2, 3)), 1)
    np.testing.assert_allclose(maps, np.abs(weights[:, [1, 1]].T))


def test_plain_functions_need_backend_argument(plugin: ModuleType) -> None:
    def function(x: np.ndarray) -> np.ndarray:
        return x @ np.ones((3, 2))

    with pytest.raises(TypeError, match="backend="):
        Saliency(function)
    maps = Saliency(function, backend="autograd").explain(np.zeros((4, 3)), 0)
    np.testing.assert_array_equal(maps, np.ones((4, 3)))


def test_disconnected_output_is_reported_not_zero(plugin: ModuleType) -> None:
    model = plugin.AutogradModel(lambda w, x: np.ones((len(x), 2)) * w, 1.0)
    with pytest.raises(RuntimeError, match="does not depend on the input"):
        Saliency(model).explain(np.zeros((2, 3)), 0)


def test_loading_the_plugin_imports_no_framework(plugin: ModuleType) -> None:
    code = textwrap.dedent("""
        import sys
        from agnostic_saliency import get_backend, list_backends
        assert "autograd" in list_backends()
        get_backend("autograd")
        assert "autograd" not in sys.modules, "loading the plugin imported autograd"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=_clean_env(),
                   timeout=120)


def test_conformance_suite_passes_as_documented(plugin: ModuleType) -> None:
    """``python -m pytest examples/autograd_backend/tests``: all pass, nothing skipped."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/autograd_backend/tests"],
        cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=300)
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    summary = result.stdout.strip().splitlines()[-1]
    counts = {word: int(count) for count, word in re.findall(r"(\d+) (\w+)", summary)}
    assert counts.get("passed", 0) >= 30, summary
    unexpected = set(counts) - {"passed", "warning", "warnings"}
    assert not unexpected, f"the example's suite must only pass: {summary}"
