"""Backends used by the registry tests, loaded through fake entry points."""

from __future__ import annotations

from typing import Any

import numpy as np

from agnostic_saliency.testing.reference import NumpyModel, ReferenceBackend


class FakeModel:
    """A model type of a 'framework' named after this test module."""


class FakeBackend(ReferenceBackend):
    """Claims ``FakeModel`` instances; answers like the reference backend otherwise."""

    name = "fake"
    modules = ("fake_plugins",)
    priority = 0

    def can_handle(self, model: Any) -> bool:
        return isinstance(model, FakeModel)


class EagerBackend(ReferenceBackend):
    """Claims every NumpyModel, with a high priority."""

    name = "eager"
    modules = ("agnostic_saliency",)
    priority = 50

    def can_handle(self, model: Any) -> bool:
        return isinstance(model, NumpyModel)


class RaisingBackend(ReferenceBackend):
    """A plugin whose ``can_handle`` is broken."""

    name = "raising"
    modules = ("agnostic_saliency",)
    priority = 100

    def can_handle(self, model: Any) -> bool:
        raise RuntimeError("can_handle exploded")


class Incomplete:
    """Lacks most of the protocol."""

    name = "incomplete"

    def gradient(self, *args: Any) -> np.ndarray:
        return np.zeros(1)
