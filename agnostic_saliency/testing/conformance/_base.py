"""The suite's base: what a backend's test class implements, its options and helpers.

The checks live in mixins of :class:`SuiteBase` (one module per topic) that
:class:`~agnostic_saliency.testing.conformance.BackendConformanceTests` puts together.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from agnostic_saliency import Saliency, get_backend
from agnostic_saliency.backend import Backend, BackendBase, as_backend_base
from agnostic_saliency.testing.composite import (
    MaskedModel,
    ProductModel,
    StaticBatchModel,
)
from agnostic_saliency.testing.models import Layout, ModelSpec, make_spec
from agnostic_saliency.testing.reference import NumpyModel

__all__ = ["SuiteBase"]


class SuiteBase:
    """The settings and model builders every group of checks reads; a backend's
    tests set them on :class:`~agnostic_saliency.testing.conformance.BackendConformanceTests`,
    which documents each attribute."""

    layout: ClassVar[Layout] = "channels_last"
    supports_float64: ClassVar[bool] = True
    detectable: ClassVar[bool] = True
    rtol: ClassVar[float] = 1e-4
    atol: ClassVar[float] = 1e-6
    expected_failures: ClassVar[dict[str, str]] = {}
    use_full_precision: ClassVar[bool] = True

    # --- to implement ---------------------------------------------------------------

    def backend(self) -> Backend | str:
        """The backend under test, or its registered name."""
        raise NotImplementedError

    def build_model(self, spec: ModelSpec) -> Any:
        """Build ``spec.layers`` in the framework for inputs of ``spec.input_shape``."""
        raise NotImplementedError

    def to_framework(self, array: np.ndarray) -> Any:
        """Convert an array to the framework's tensor type (default: keep NumPy)."""
        return array

    # --- models of the plugin checks (override where the default cannot work) -------

    def build_static_batch_model(self, spec: ModelSpec, batch: int) -> Any:
        """``spec`` as a model that raises for any batch size but ``batch``. Default:
        the built model in a plain callable (:class:`StaticBatchModel`)."""
        return StaticBatchModel(self.build_model(spec), batch)

    def build_product_model(self, first: ModelSpec, second: ModelSpec,
                            names: tuple[str, str] | None = None) -> Any:
        """``model(a, b) = first(a) * second(b)``, class by class: two inputs, passed
        positionally, or (with ``names``) as those keyword arguments (the dict input of
        a Keras model). Used where the backend declares ``structured_inputs``.
        Default: a plain callable (:class:`ProductModel`)."""
        return ProductModel(self.build_model(first), self.build_model(second), names)

    def build_masked_model(self, spec: ModelSpec) -> Any:
        """``model(x, mask) = spec(x * mask)``, ``mask`` an int32 array of ``x``'s shape.
        Used where the backend declares ``structured_inputs``. Default: a plain
        callable (:class:`MaskedModel`)."""
        return MaskedModel(self.build_model(spec))

    def build_embedding_model(self, spec: ModelSpec, table: np.ndarray) -> tuple[Any, Any]:
        """``(model, layer)``: ``layer`` maps int32 token ids ``(N, L)`` to the rows
        ``table[ids]`` (your framework's embedding layer, holding ``table``), and
        ``model(ids) = spec(layer(ids) reshaped to (N, L * width))``. Used where the
        backend declares ``layer_outputs``; no default."""
        raise NotImplementedError(
            f"{type(self).__name__} does not build an embedding model: implement "
            "build_embedding_model(spec, table), or list the check in expected_failures "
            "with the reason")

    # --- helpers --------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _expected_failure(self, request: pytest.FixtureRequest) -> None:
        name = request.node.originalname if hasattr(request.node, "originalname") else ""
        reason = self.expected_failures.get(name)
        if reason:
            request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))

    @pytest.fixture(autouse=True)
    def _full_precision(self) -> Iterator[None]:
        full_precision = getattr(self.resolved_backend(), "full_precision", None)
        if not (self.use_full_precision and callable(full_precision)):
            yield
            return
        with full_precision():
            yield

    def resolved_backend(self) -> BackendBase:
        backend = self.backend()
        return get_backend(backend) if isinstance(backend, str) else as_backend_base(backend)

    def spec(self, name: str, dtype: type = np.float32, seed: int = 0) -> ModelSpec:
        return make_spec(name, layout=self.layout, dtype=dtype, seed=seed)

    def model(self, spec: ModelSpec) -> Any:
        return self.build_model(spec)

    def inputs(self, spec: ModelSpec, n: int = 5, seed: int = 1,
               dtype: type = np.float32) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.normal(size=(n, *spec.input_shape)).astype(dtype)

    def saliency(self, model: Any, **kwargs: Any) -> Saliency:
        return Saliency(model, backend=self.resolved_backend(), **kwargs)

    def exact_gradient(self, spec: ModelSpec, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
        exact = spec.cast(np.float64)
        return NumpyModel(exact).input_gradient(x.astype(np.float64), weights)

    def one_hot(self, targets: np.ndarray, n_outputs: int) -> np.ndarray:
        return np.eye(n_outputs)[targets]

    def assert_close(self, actual: np.ndarray, expected: np.ndarray, scale: float = 1.0
                     ) -> None:
        np.testing.assert_allclose(actual, expected, rtol=self.rtol,
                                   atol=self.atol * max(scale, 1.0))

    def channel_axis(self) -> int:
        return 1 if self.layout == "channels_first" else -1

    def to_layout(self, canonical: np.ndarray) -> np.ndarray:
        """Move the channels of a channels-last image array to this backend's layout."""
        return np.moveaxis(canonical, -1, 1) if self.layout == "channels_first" else canonical

