"""Tools for backend authors: the conformance suite, a model zoo and a NumPy reference.

The NumPy reference backend is a test tool, not a plugin: importing this package
registers it (as ``"reference"``), so that tests can explain :class:`NumpyModel`
objects; on a user's machine :func:`agnostic_saliency.list_backends` names only the
installed framework backends. ``BackendConformanceTests`` needs pytest; it is
imported on first access so that the reference backend stays usable without pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agnostic_saliency.testing.models import ModelSpec, make_spec
from agnostic_saliency.testing.reference import (
    LayeredModel,
    NumpyModel,
    ReferenceBackend,
    use_reference_backend,
)

if TYPE_CHECKING:
    from agnostic_saliency.testing.conformance import BackendConformanceTests

__all__ = ["BackendConformanceTests", "LayeredModel", "ModelSpec", "NumpyModel",
           "ReferenceBackend", "make_spec", "use_reference_backend"]

use_reference_backend()


def __getattr__(name: str) -> Any:
    if name == "BackendConformanceTests":
        from agnostic_saliency.testing.conformance import BackendConformanceTests

        return BackendConformanceTests
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
