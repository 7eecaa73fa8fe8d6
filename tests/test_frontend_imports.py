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


def test_users_see_only_framework_backends_until_the_test_kit_is_imported() -> None:
    code = (
        "import agnostic_saliency as s\n"
        "names = s.list_backends()\n"
        "assert 'reference' not in names and 'torch' in names, names\n"
        "import agnostic_saliency.testing\n"
        "assert 'reference' in s.list_backends()\n"
        "print('ok')\n"
    )
    _modules_after(code)


def test_the_first_explainer_loads_only_the_plugin_it_needs() -> None:
    code = (
        "import numpy as np, agnostic_saliency as s\n"
        "from agnostic_saliency.testing import NumpyModel, make_spec\n"
        "s.Saliency(NumpyModel(make_spec('mlp'))).explain(np.ones((2, 6), np.float32))\n"
    )
    loaded = _modules_after(code)
    plugins = tuple(f"agnostic_saliency_{name}" for name in ("torch", "tensorflow", "keras", "jax"))
    assert not [name for name in loaded if name.startswith(plugins)]


def test_listing_and_loading_backends_loads_no_framework() -> None:
    code = (
        "import agnostic_saliency as s\n"
        "import agnostic_saliency.testing\n"
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
