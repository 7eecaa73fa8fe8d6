"""Checks on batches of many samples: class indices and gradients, short and long."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from test_frontend import AnsweringBackend

from agnostic_saliency import Saliency, SaliencyWarning
from agnostic_saliency._outputs import check_gradient
from agnostic_saliency.testing import NumpyModel, make_spec

FEW = 512
#: Batch sizes from a few to many.
LENGTHS = [3, FEW - 1, FEW + 1]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize(("bad", "match"), [
    (3, r"target 3 out of range for a model with 3 outputs"),
    (-1, r"target -1 out of range.*negative indices are not accepted"),
    (2**40, r"target 1099511627776 out of range"),
])
def test_every_class_index_is_range_checked(n: int, bad: int, match: str) -> None:
    targets = np.arange(n) % 3
    targets[n // 2] = bad
    explainer = Saliency(NumpyModel(make_spec("mlp")), backend="reference")
    with pytest.raises(ValueError, match=match):
        explainer.explain(np.ones((n, 6), np.float32), targets)


@pytest.mark.parametrize("n", LENGTHS)
def test_class_indices_at_both_ends_of_the_range_are_accepted(n: int) -> None:
    targets = np.arange(n) % 3
    targets[[0, -1]] = [0, 2]
    model = NumpyModel(make_spec("mlp"))
    x = np.random.default_rng(n).normal(size=(n, 6)).astype(np.float32)
    maps = Saliency(model, backend="reference").explain(x, targets)
    expected = np.abs(model.input_gradient(x.astype(np.float64), np.eye(3)[targets]))
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


def _three_outputs(x: np.ndarray) -> np.ndarray:
    return x[:, :3] * np.float32(0.5)


@pytest.mark.parametrize("absolute", [True, False])
@pytest.mark.parametrize("n", LENGTHS)
def test_wide_rows_check_every_value(n: int, absolute: bool) -> None:
    """Rows of 784 values, summed per row by one matrix-vector product: NaN, Inf and
    a zero row in one sample are reported; a denormal alone, and a row of huge
    values whose sum overflows, are accepted exactly."""
    x = np.ones((n, 784), np.float32)
    marked = n // 2
    x[marked] = 2

    def explainer(fill: Any) -> Saliency:
        def answer(inputs: np.ndarray) -> np.ndarray:
            gradient = np.full_like(inputs, -0.5)
            rows = inputs[:, 0] == 2
            gradient[rows] = 0
            fill(gradient, rows)
            return gradient

        return Saliency(_three_outputs, backend=AnsweringBackend(answer), absolute=absolute,
                        reducer=None)

    def one(value: float) -> Any:
        def fill(gradient: np.ndarray, rows: np.ndarray) -> None:
            gradient[rows, 400] = value
        return fill

    for value in (np.nan, np.inf, -np.inf):
        with pytest.raises(FloatingPointError, match=rf"NaN or Inf for samples \[{marked}\]"):
            explainer(one(value)).explain(x, 0)
    with pytest.warns(SaliencyWarning, match=rf"identically zero for samples \[{marked}\]"):
        explainer(one(0.0)).explain(x, 0)
    tiny, huge = np.float32(1e-45), np.float32(3e38)

    def everywhere(gradient: np.ndarray, rows: np.ndarray) -> None:
        gradient[rows] = -huge  # 784 of them sum to more than float32 holds

    for fill, column, value in ((one(-tiny), 400, tiny), (everywhere, 0, huge)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            maps = explainer(fill).explain(x, 0)
        assert maps[marked, column] == (value if absolute else -value)
        assert np.all(maps[marked - 1] == (0.5 if absolute else -0.5))


def test_a_magnitude_with_negative_values_is_looked_at_exactly() -> None:
    """Row sums of a backend's magnitude map that break its promise (values below 0)
    may cancel to 0: such rows are looked at value by value, not called zero."""
    rows = np.zeros((FEW + 1, 4), np.float32)
    rows[:, 0] = 1
    rows[1] = [1, -1, 0, 0]  # sums to 0, but is not 0
    rows[2] = 0
    _, nonzero = check_gradient(rows, rows.shape, "fake", slice(0, len(rows)),
                                nonnegative=True)
    assert isinstance(nonzero, np.ndarray)
    np.testing.assert_array_equal(np.flatnonzero(~nonzero), [2])


@pytest.mark.parametrize("n", LENGTHS)
def test_rows_that_the_quick_look_misses_are_checked_exactly(n: int) -> None:
    """The quick look at a few columns never decides that a row is zero: a row whose
    first column is 0, or whose only non-zero value is off the probed columns, is
    summed exactly; only an all-zero row is reported."""
    rows = np.ones((n, 784), np.float32)
    rows[:, 0] = 0  # every row fails the look at the first column
    _, nonzero = check_gradient(rows, rows.shape, "fake", slice(0, n), nonnegative=True)
    assert nonzero is True
    rows[1] = 0
    rows[1, 3] = np.float32(1e-45)  # one denormal, off the probed columns
    rows[2] = 0
    _, nonzero = check_gradient(rows, rows.shape, "fake", slice(0, n), nonnegative=True)
    assert isinstance(nonzero, np.ndarray)
    np.testing.assert_array_equal(np.flatnonzero(~nonzero), [2])
    rows[2, 700] = np.nan
    with pytest.raises(FloatingPointError, match=r"NaN or Inf for samples \[2\]"):
        check_gradient(rows, rows.shape, "fake", slice(0, n), nonnegative=True)
