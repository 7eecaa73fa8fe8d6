"""The conformance suite run against the NumPy reference backend (no framework needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency import get_backend
from agnostic_saliency.testing import BackendConformanceTests, ModelSpec, NumpyModel
from agnostic_saliency.testing.composite import layered_embedding_model


class TestReferenceBackend(BackendConformanceTests):
    layout = "channels_last"

    def backend(self) -> str:
        return "reference"

    def build_model(self, spec: ModelSpec) -> Any:
        return NumpyModel(spec)

    def build_embedding_model(self, spec: ModelSpec, table: np.ndarray) -> tuple[Any, Any]:
        return layered_embedding_model(spec, table)


class TestReferenceBackendChannelsFirst(TestReferenceBackend):
    """The suite's channels-first path, checked without a framework."""

    layout = "channels_first"
    expected_failures = {
        "test_backend_is_registered_instance": "this variant is deliberately not registered",
        "test_detection_picks_this_backend": "detection picks the registered reference backend",
    }

    def backend(self) -> Any:
        return _ChannelsFirstReference()


class _ChannelsFirstReference:
    """The reference backend with a channels-first convention, registered nowhere.

    It takes targets as output weights only, so the suite's weights path runs too.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(get_backend("reference"), name)

    channel_axis = 1
    class_index_targets = False
