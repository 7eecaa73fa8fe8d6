"""Checks of several inputs, side inputs and layer outputs, each where the backend
declares it (``structured_inputs``, ``layer_outputs``), and of the frontend's refusal
where it does not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency.testing.composite import (
    EMBEDDING_LENGTH,
    embedding_gradient,
    embedding_table,
    masked_gradient,
    product_gradients,
)
from agnostic_saliency.testing.conformance._base import SuiteBase

__all__ = ["StructuredChecks"]

#: Batch sizes that must all give the same maps: one sample, a short last chunk, all.
BATCH_SIZES = (1, 2, None)
TARGETS = np.array([0, 1, 2, 1, 0])


class StructuredChecks(SuiteBase):
    """Several inputs (a tuple, a dict), a non-floating side input, and ``layer=``."""

    def refuses(self, what: str, inputs: Any, **kwargs: Any) -> None:
        """The frontend refuses ``inputs`` with its message naming ``what``."""
        name = self.resolved_backend().name
        spec = self.spec("mlp")
        with pytest.raises(TypeError, match=rf"backend {name!r} does not support {what}"):
            self.saliency(self.model(spec), **kwargs).explain(inputs, TARGETS)

    @pytest.mark.parametrize("kind", ["tuple", "dict"])
    def test_two_inputs_give_each_input_its_gradient(self, kind: str) -> None:
        first, second = self.spec("cnn"), self.spec("mlp", seed=3)
        a, b = self.inputs(first), self.inputs(second, seed=2)
        names = ("image", "table")
        inputs: Any = (a, b) if kind == "tuple" else dict(zip(names, (a, b), strict=True))
        if not self.resolved_backend().structured_inputs:
            self.refuses("several inputs", inputs)
            return
        model = self.build_product_model(first, second, None if kind == "tuple" else names)
        weights = self.one_hot(TARGETS, first.n_outputs)
        grad_a, grad_b = product_gradients(first, second, a, b, weights)
        expected = (np.abs(grad_a).max(axis=self.channel_axis()), np.abs(grad_b))
        found = []
        for batch_size in BATCH_SIZES:
            maps = self.saliency(model, batch_size=batch_size).explain(inputs, TARGETS)
            entries = tuple(maps) if kind == "tuple" else (maps["image"], maps["table"])
            assert isinstance(maps, tuple if kind == "tuple" else dict)
            for entry, wanted in zip(entries, expected, strict=True):
                assert entry.shape == wanted.shape
                self.assert_close(entry, wanted, scale=float(wanted.max()))
            found.append(entries)
        for entries in found[1:]:
            for entry, first_entry in zip(entries, found[0], strict=True):
                np.testing.assert_allclose(entry, first_entry, rtol=1e-5, atol=1e-7)

    def test_integer_side_input_is_passed_through_and_gets_none(self) -> None:
        spec = self.spec("mlp")
        x = self.inputs(spec)
        mask = (np.random.default_rng(4).random(x.shape) > 0.4).astype(np.int32)
        mask[:, 0] = 1  # every sample reads something
        if not self.resolved_backend().structured_inputs:
            self.refuses("several inputs", (x, mask))
            return
        model = self.build_masked_model(spec)
        expected = np.abs(masked_gradient(spec, x, mask, self.one_hot(TARGETS, spec.n_outputs)))
        found = []
        for batch_size in BATCH_SIZES:
            maps = self.saliency(model, batch_size=batch_size).explain((x, mask), TARGETS)
            assert isinstance(maps, tuple) and maps[1] is None
            self.assert_close(maps[0], expected, scale=float(expected.max()))
            assert np.all(maps[0][mask == 0] == 0)
            found.append(maps[0])
        for maps in found[1:]:
            np.testing.assert_allclose(maps, found[0], rtol=1e-5, atol=1e-7)

    def test_layer_output_maps_are_the_l2_norm_of_its_gradient(self) -> None:
        spec, table = self.spec("mlp"), embedding_table()
        ids = np.random.default_rng(6).integers(0, len(table), (5, EMBEDDING_LENGTH))
        ids = ids.astype(np.int32)
        if not self.resolved_backend().layer_outputs:
            self.refuses("layer outputs", self.inputs(spec), layer=object())
            return
        model, layer = self.build_embedding_model(spec, table)
        gradient = embedding_gradient(spec, table, ids, self.one_hot(TARGETS, spec.n_outputs))
        expected = np.sqrt(np.sum(gradient ** 2, axis=-1))
        found = []
        for batch_size in BATCH_SIZES:
            maps = self.saliency(model, layer=layer, batch_size=batch_size).explain(ids, TARGETS)
            assert maps.shape == (len(ids), EMBEDDING_LENGTH)
            self.assert_close(maps, expected, scale=float(expected.max()))
            found.append(maps)
        for maps in found[1:]:
            np.testing.assert_allclose(maps, found[0], rtol=1e-5, atol=1e-7)
        signed = self.saliency(model, layer=layer, reducer=None, absolute=False).explain(
            ids, TARGETS)
        self.assert_close(signed, gradient, scale=float(np.abs(gradient).max()))
