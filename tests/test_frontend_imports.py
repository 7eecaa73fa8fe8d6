"""Importing the frontend imports no framework (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib", "keras", "flax", "equinox")


def _modules_after(code: str) -> list[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def test_import_loads_no_framework() -> None:
    loaded = _modules_after("import agnostic_saliency, agnostic_saliency.testing.reference")
    assert not [name for name in loaded if name.split(".")[0] in FRAMEWORKS]


def test_listing_and_loading_backends_loads_no_framework() -> None:
    code = (
        "import agnostic_saliency as s\n"
        "names = s.list_backends()\n"
        "assert {'torch', 'reference'} <= set(names), names\n"
        "[s.get_backend(name) for name in names]\n"
        "import numpy as np\n"
        "from agnostic_saliency.testing import NumpyModel, make_spec\n"
        "s.Saliency(NumpyModel(make_spec('mlp'))).explain(np.ones((2, 6), np.float32))\n"
    )
    loaded = _modules_after(code)
    assert not [name for name in loaded if name.split(".")[0] in FRAMEWORKS]
    assert json.dumps(loaded)
