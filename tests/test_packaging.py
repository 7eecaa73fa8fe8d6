"""What we ship: the core wheel, the documentation site and its code examples.

The wheel is built from a copy of the checkout, so the build leaves no ``build/``
directory behind and stale build output cannot leak into the wheel.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

from agnostic_saliency import messages

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCES = shutil.ignore_patterns(".venv", ".git", "build", "dist", "site", "*.egg-info",
                                      "__pycache__", ".*_cache", ".hypothesis", "results")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The core distribution's wheel, built with ``pip wheel --no-deps``.

    With a setuptools that builds wheels by itself (70.1 or later) in this environment
    the build takes seconds and no network; otherwise pip fetches setuptools for an
    isolated build.
    """
    work = tmp_path_factory.mktemp("wheel")
    source, out = work / "source", work / "dist"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
               "-q", "-w", str(out), str(source)]
    if _setuptools_version() >= (70, 1):
        command.insert(4, "--no-build-isolation")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = out.glob("agnostic_saliency-*.whl")
    archive = zipfile.ZipFile(path)
    yield archive
    archive.close()


def _setuptools_version() -> tuple[int, ...]:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [item for item in wheel.namelist()
                 if re.fullmatch(rf"agnostic_saliency-[^/]+\.dist-info/{name}", item)]
    return wheel.read(member).decode()


def test_wheel_holds_only_the_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    strays = [name for name in names if not re.match(r"agnostic_saliency(/|-[^/]+\.dist-info/)",
                                                     name)]
    assert not strays, f"files outside agnostic_saliency/ in the wheel: {strays}"
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    for required in ("agnostic_saliency/py.typed", "agnostic_saliency/__init__.py",
                     "agnostic_saliency/testing/conformance/__init__.py",
                     "agnostic_saliency/testing/reference.py"):
        assert required in names


def test_wheel_declares_no_backend_and_its_entry_points_resolve(wheel: zipfile.ZipFile
                                                                 ) -> None:
    """The reference backend is a test tool, registered by ``agnostic_saliency.testing``;
    the core declares no backend (the four built-ins are distributions of their own)."""
    entry_points = configparser.ConfigParser(delimiters=("=",))
    entry_points.optionxform = str  # type: ignore[assignment,method-assign]
    entry_points.read_string(_dist_info(wheel, "entry_points.txt"))
    assert "agnostic_saliency.backends" not in entry_points.sections()
    names = set(wheel.namelist())
    for group in entry_points.sections():
        for name, target in entry_points[group].items():
            module = target.split(":")[0].replace(".", "/")
            assert {f"{module}.py", f"{module}/__init__.py"} & names, \
                f"entry point {name} = {target} ({group}) names a module missing from the wheel"


def test_wheel_depends_on_numpy_and_tqdm_only(wheel: zipfile.ZipFile) -> None:
    metadata = Parser().parsestr(_dist_info(wheel, "METADATA"))
    required = [line for line in metadata.get_all("Requires-Dist") or []
                if "extra ==" not in line]
    assert [re.split(r"[\s<>=!~;\[]", line)[0] for line in required] == ["numpy", "tqdm"]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package of a dotted name
        return False


def test_docs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: every page, link and API reference resolves, no warning."""
    missing = [name for name in ("mkdocs", "material", "mkdocstrings",
                                 "mkdocstrings_handlers.python") if not _installed(name)]
    if missing:
        pytest.skip(f"documentation tools not installed ({', '.join(missing)}): "
                    "pip install mkdocs-material 'mkdocstrings[python]'")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["NO_MKDOCS_2_WARNING"] = "1"  # Material's banner about MkDocs 2; not a build warning
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert (tmp_path / "index.html").is_file()


_SNIPPETS = sorted((ROOT / "docs" / "snippets").glob("*.py"))
_RUN_SNIPPET = """
import runpy, sys, warnings
import agnostic_saliency
warnings.simplefilter("error", agnostic_saliency.SaliencyWarning)
maps = runpy.run_path(sys.argv[1])["maps"]
assert maps.shape == (4, 32, 32) and maps.dtype == "float32", (maps.shape, maps.dtype)
assert (maps.reshape(4, -1).max(axis=1) > 0).all()
"""


def _imported_frameworks(path: Path) -> list[str]:
    """Top-level modules a snippet imports, other than numpy and ours."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module.split(".")[0])
    if "keras" in modules:
        modules.append(os.environ.get("KERAS_BACKEND", "tensorflow"))
    return sorted(set(modules) - {"numpy", "agnostic_saliency"})


@pytest.mark.slow
@pytest.mark.parametrize("path", _SNIPPETS, ids=[path.stem for path in _SNIPPETS])
def test_docs_framework_examples_run(path: Path) -> None:
    """Each five-line example of the getting-started page runs and gives non-zero maps."""
    missing = [name for name in _imported_frameworks(path) if not _installed(name)]
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)}")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    result = subprocess.run([sys.executable, "-c", _RUN_SNIPPET, str(path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_failure_page_has_one_entry_per_message() -> None:
    """docs/failures.md keeps up with agnostic_saliency.messages: no message left out."""
    helpers = {"describe_output"}  # builds part of a message, is not one
    modules = [messages, *(importlib.import_module(f"{backend}._messages") for backend in (
        "agnostic_saliency_torch",) if importlib.util.find_spec(backend) is not None)]
    functions = {name for module in modules for name, value in vars(module).items()
                 if inspect.isfunction(value) and value.__module__ == module.__name__
                 and not name.startswith("_") and name not in helpers}
    page = (ROOT / "docs" / "failures.md").read_text()
    entries = set(re.findall(r"\{ #(\w+) \}", page))
    assert not functions - entries, f"messages without an entry: {sorted(functions - entries)}"
    assert not entries - functions, f"entries without a message: {sorted(entries - functions)}"
