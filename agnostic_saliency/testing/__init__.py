"""Tools for backend authors: the conformance suite, a model zoo and a NumPy reference.

``BackendConformanceTests`` needs pytest; it is imported on first access so that
the reference backend stays usable without pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agnostic_saliency.testing.models import ModelSpec, make_spec
from agnostic_saliency.testing.reference import NumpyModel, ReferenceBackend

if TYPE_CHECKING:
    from agnostic_saliency.testing.conformance import BackendConformanceTests

__all__ = ["BackendConformanceTests", "ModelSpec", "NumpyModel", "ReferenceBackend", "make_spec"]


def __getattr__(name: str) -> Any:
    if name == "BackendConformanceTests":
        from agnostic_saliency.testing.conformance import BackendConformanceTests

        return BackendConformanceTests
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
