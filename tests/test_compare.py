"""Comparison metrics and compare(), checked by hand, with scipy and with loop versions."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import GradientInput, IntegratedGradients, Saliency
from agnostic_saliency._metrics import _ranks
from agnostic_saliency.compare import (
    ComparisonReport,
    compare,
    max_abs_error,
    relative_error,
    spearman,
    ssim,
    top_k_overlap,
)
from agnostic_saliency.registry import get_backend
from agnostic_saliency.testing import NumpyModel, make_spec

C1, C2 = 0.01 ** 2, 0.03 ** 2


# --- errors --------------------------------------------------------------------------------


def test_errors_by_hand() -> None:
    maps = np.array([[1.0, -2.0, 3.0], [0.0, 0.0, 0.0]])
    reference = np.array([[1.0, -1.0, 5.0], [0.0, 0.0, 4.0]])
    np.testing.assert_array_equal(max_abs_error(maps, reference), [2.0, 4.0])
    np.testing.assert_allclose(relative_error(maps, reference), [2.0 / 5.0, 1.0])


def test_relative_error_of_a_zero_reference() -> None:
    zero = np.zeros((2, 3))
    maps = np.array([[0.0, 0.0, 0.0], [0.0, 1e-9, 0.0]])
    np.testing.assert_array_equal(relative_error(maps, zero), [0.0, np.inf])


@pytest.mark.parametrize(("a", "b", "match"), [
    (np.zeros((2, 3)), np.zeros((2, 4)), r"maps of different shapes \(maps: \(2, 3\), other: "
                                         r"\(2, 4\)\)"),
    (np.zeros(3), np.zeros(3), r"maps of shape \(3,\) have no batch axis"),
    (np.zeros((0, 3)), np.zeros((0, 3)), r"no samples"),
    (np.array([[np.nan, 1.0]]), np.zeros((1, 2)), r"maps contain NaN or Inf"),
])
def test_metrics_refuse_bad_maps(a: np.ndarray, b: np.ndarray, match: str) -> None:
    for metric in (max_abs_error, relative_error, spearman, top_k_overlap, ssim):
        with pytest.raises(ValueError, match=match):
            metric(a, b)


# --- ranks and spearman --------------------------------------------------------------------


def test_ranks_average_ties_by_hand() -> None:
    np.testing.assert_array_equal(_ranks(np.array([[3.0, 1.0, 3.0, 2.0], [5.0, 5.0, 5.0, 0.0]])),
                                  [[3.5, 1.0, 3.5, 2.0], [3.0, 3.0, 3.0, 1.0]])


def test_ranks_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(0).integers(0, 5, size=(6, 40)).astype(float)
    np.testing.assert_array_equal(_ranks(x), stats.rankdata(x, axis=1))


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=(5, 8, 7)).astype(float)
    b = a + rng.integers(-3, 4, size=a.shape)
    expected = [stats.spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(len(a))]
    np.testing.assert_allclose(spearman(a, b), expected, rtol=1e-12)


def test_spearman_of_monotone_and_reversed_maps() -> None:
    a = np.random.default_rng(2).normal(size=(3, 50))
    np.testing.assert_allclose(spearman(a, np.exp(a)), 1.0)
    np.testing.assert_allclose(spearman(a, -a), -1.0)


def test_spearman_of_a_constant_map_is_nan() -> None:
    a = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    result = spearman(a, np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    assert result[0] == pytest.approx(1.0)
    assert np.isnan(result[1])


# --- top-k ---------------------------------------------------------------------------------


def test_top_k_overlap_by_hand() -> None:
    a = np.arange(10.0)[None]
    b = np.array([[9.0, 1, 2, 3, 4, 5, 6, 7, 8, 0]])  # top 2: positions {0, 8} vs {8, 9}
    np.testing.assert_array_equal(top_k_overlap(a, b, 0.2), [0.5])
    np.testing.assert_array_equal(top_k_overlap(a, b, 0.1), [0.0])  # {0} vs {9}
    np.testing.assert_allclose(top_k_overlap(a, b, 0.5), [0.8])  # {0,5,6,7,8} vs {5,...,9}
    np.testing.assert_array_equal(top_k_overlap(a, a[:, ::-1], 0.3), [0.0])
    np.testing.assert_array_equal(top_k_overlap(a, b, 1.0), [1.0])


def test_top_k_breaks_ties_by_position() -> None:
    a = np.array([[1.0, 3.0, 3.0, 3.0, 0.0, 3.0]])  # k = 2 of 6: the first two 3s, {1, 2}
    np.testing.assert_array_equal(top_k_overlap(a, np.array([[0.0, 5, 4, 0, 0, 0]]), 1 / 3), [1])
    np.testing.assert_array_equal(top_k_overlap(a, np.array([[0.0, 0, 0, 0, 0, 1]]), 1 / 3), [0])
    # k = 3: {1, 2, 3} against {5, 0, 1}
    np.testing.assert_allclose(top_k_overlap(a, np.array([[0.0, 0, 0, 0, 0, 1]]), 0.5), [1 / 3])


def test_top_k_keeps_at_least_one_position() -> None:
    a = np.array([[0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(top_k_overlap(a, a, 0.01), [1.0])
    np.testing.assert_array_equal(top_k_overlap(a, np.array([[2.0, 1.0, 0.0]]), 0.01), [0.0])


@pytest.mark.parametrize("k", [0, -0.1, 1.5, True, "10%"])
def test_top_k_refuses_a_bad_fraction(k: Any) -> None:
    with pytest.raises(ValueError, match=r"top_k=.* is not a fraction of the positions; pass"):
        top_k_overlap(np.zeros((1, 4)), np.zeros((1, 4)), k)


# --- SSIM ----------------------------------------------------------------------------------


def _ssim_loop(a: np.ndarray, b: np.ndarray) -> float:
    """One sample, straight from Wang et al. 2004: (L,), (H, W) or (H, W, C)."""
    low, high = min(a.min(), b.min()), max(a.max(), b.max())
    span = high - low if high > low else 1.0
    a, b = (a - low) / span, (b - low) / span
    one_d = a.ndim == 1
    if one_d:
        a, b = a[:, None], b[:, None]
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    size = min(11, a.shape[0]) if one_d else min(11, a.shape[0], a.shape[1])
    size -= 1 - size % 2
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * 1.5 ** 2))
    window = g[:, None] if one_d else np.outer(g, g)
    window /= window.sum()
    wh, ww = window.shape
    values = []
    for c in range(a.shape[2]):
        for i in range(a.shape[0] - wh + 1):
            for j in range(a.shape[1] - ww + 1):
                pa, pb = a[i:i + wh, j:j + ww, c], b[i:i + wh, j:j + ww, c]
                ma, mb = (window * pa).sum(), (window * pb).sum()
                va = (window * (pa - ma) ** 2).sum()
                vb = (window * (pb - mb) ** 2).sum()
                cov = (window * (pa - ma) * (pb - mb)).sum()
                values.append((2 * ma * mb + C1) * (2 * cov + C2)
                              / ((ma ** 2 + mb ** 2 + C1) * (va + vb + C2)))
    return float(np.mean(values))


@pytest.mark.parametrize("shape", [(2, 16, 14), (2, 7, 6), (2, 9, 12, 3), (3, 20), (2, 4, 2)])
def test_ssim_matches_a_loop_implementation(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=shape)
    b = a + 0.7 * rng.normal(size=shape)
    expected = [_ssim_loop(a[i], b[i]) for i in range(len(a))]
    np.testing.assert_allclose(ssim(a, b), expected, rtol=1e-10)


def test_ssim_of_identical_and_anticorrelated_maps() -> None:
    a = np.abs(np.random.default_rng(4).normal(size=(3, 12, 12)))
    np.testing.assert_allclose(ssim(a, a), 1.0, rtol=1e-12)
    assert (ssim(a, a + 0.5 * a[:, ::-1]) < 1).all()
    assert (ssim(a, -a) < 0).all()


def test_ssim_by_hand_with_a_one_tap_window() -> None:
    # Length 2 -> a 1-tap window: SSIM per position is (2ab + C1) / (a^2 + b^2 + C1).
    a, b = np.array([[0.0, 2.0]]), np.array([[2.0, 2.0]])  # scaled jointly: [0, 1] and [1, 1]
    np.testing.assert_allclose(ssim(a, b), [(C1 / (1 + C1) + 1.0) / 2], rtol=1e-12)
    np.testing.assert_array_equal(ssim(np.full((1, 4, 4), 3.0), np.full((1, 4, 4), 3.0)), [1.0])


# --- compare -------------------------------------------------------------------------------


class _ChannelsFirst:
    channel_axis = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(get_backend("reference"), name)


def _images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 7, 6, 3))


@pytest.mark.parametrize("reducer", ["max", None])
def test_channels_first_twin_gives_the_same_maps(reducer: Any) -> None:
    last = NumpyModel(make_spec("cnn", dtype=np.float64))
    first = NumpyModel(make_spec("cnn", layout="channels_first", dtype=np.float64))
    x = _images()
    report = compare({"last": Saliency(last, reducer=reducer),
                      "first_backend": Saliency(first, backend=_ChannelsFirst(), reducer=reducer),
                      "first_axis": Saliency(first, channel_axis=1, reducer=reducer)}, x, 2)
    expected = Saliency(last, reducer=reducer).explain(x, 2)
    for maps in report.maps.values():
        assert maps.shape == expected.shape
        np.testing.assert_allclose(maps, expected, rtol=1e-12, atol=1e-15)
    for row in report.rows:
        assert row.max_abs_error < 1e-12
        assert row.relative_error < 1e-10
        assert row.spearman == pytest.approx(1.0)
        assert row.top_k_overlap == 1.0
        assert row.ssim == pytest.approx(1.0)


def test_several_methods_on_one_model() -> None:
    model = NumpyModel(make_spec("cnn", dtype=np.float64))
    x = _images(3, seed=1)
    explainers = {"saliency": Saliency(model), "grad_x_input": GradientInput(model, absolute=True),
                  "ig": IntegratedGradients(model, steps=8)}
    report = compare(explainers, x, [0, 1, 2], top_k=0.2)
    assert [(r.name_a, r.name_b) for r in report.rows] == [
        ("saliency", "grad_x_input"), ("saliency", "ig"), ("grad_x_input", "ig")]
    maps = {name: e.explain(x, [0, 1, 2]) for name, e in explainers.items()}
    row = report.row("ig", "saliency")
    a, b = maps["saliency"], maps["ig"]
    assert row.max_abs_error == pytest.approx(np.abs(a - b).max())
    assert row.relative_error == pytest.approx(
        max(np.abs(a[i] - b[i]).max() / np.abs(a[i]).max() for i in range(3)))
    assert row.spearman == pytest.approx(spearman(a, b).mean())
    assert row.top_k_overlap == pytest.approx(top_k_overlap(a, b, 0.2).mean())
    assert row.ssim == pytest.approx(ssim(a, b).mean())
    np.testing.assert_array_equal(report.per_sample[("saliency", "ig")]["ssim"], ssim(a, b))
    assert row.spearman < 0.99  # different methods really differ


def test_predicted_targets_are_the_first_explainers_for_all() -> None:
    model = NumpyModel(make_spec("cnn", dtype=np.float64))
    x = _images(5, seed=2)
    seen: list[Any] = []

    class Recording:
        def explain(self, inputs: np.ndarray, targets: Any) -> np.ndarray:
            seen.append(targets)
            return Saliency(model).explain(inputs, targets)

    compare({"a": Saliency(model), "b": Recording()}, x)
    np.testing.assert_array_equal(seen[0], np.argmax(model(x), axis=1))


def test_precomputed_maps_and_mixed_entries() -> None:
    model = NumpyModel(make_spec("mlp", dtype=np.float64))
    x = np.random.default_rng(3).normal(size=(4, 6))
    maps = Saliency(model).explain(x, 1)
    report = compare({"mine": Saliency(model), "other_library": maps}, x, 1)
    assert report.rows[0].max_abs_error == 0.0
    report = compare({"a": maps, "b": maps * 2})
    assert report.rows[0].relative_error == pytest.approx(1.0)
    assert report.rows[0].spearman == pytest.approx(1.0)


class _Precision:
    """A reference backend whose full_precision() records what happens."""

    channel_axis = -1

    def __init__(self) -> None:
        self.events: list[str] = []
        self.active = False

    def __getattr__(self, name: str) -> Any:
        return getattr(get_backend("reference"), name)

    @contextlib.contextmanager
    def full_precision(self) -> Iterator[None]:
        self.events.append("enter")
        self.active = True
        try:
            yield
        finally:
            self.active = False
            self.events.append("exit")

    def gradient(self, *args: Any) -> np.ndarray:
        self.events.append(f"gradient active={self.active}")
        return get_backend("reference").gradient(*args)


def test_full_precision_is_entered_once_around_the_comparison() -> None:
    model = NumpyModel(make_spec("cnn"))
    backend, other = _Precision(), _Precision()
    x = _images(2).astype(np.float32)
    compare({"a": Saliency(model, backend=backend), "b": GradientInput(model, backend=backend),
             "c": Saliency(model, backend=other), "plain": Saliency(model)}, x, 0)
    for recorder in (backend, other):
        assert recorder.events[0] == "enter"
        assert recorder.events[-1] == "exit"
        assert recorder.events.count("enter") == 1
        assert all(event == "gradient active=True" for event in recorder.events[1:-1])
    assert backend.events.count("gradient active=True") == 2


def test_full_precision_is_restored_when_explaining_fails() -> None:
    backend = _Precision()
    model = NumpyModel(make_spec("cnn"))
    with pytest.raises(ValueError, match="target 7 out of range"):
        compare({"a": Saliency(model, backend=backend), "b": Saliency(model)},
                _images(2).astype(np.float32), 7)
    assert backend.events == ["enter", "exit"]
    assert not backend.active


def test_compare_refuses_bad_calls() -> None:
    model = NumpyModel(make_spec("cnn"))
    x = _images(2).astype(np.float32)
    with pytest.raises(ValueError, match=r"at least two explainers or maps, got \['a'\]"):
        compare({"a": Saliency(model)}, x)
    with pytest.raises(ValueError, match=r"explainers \['a'\] need inputs"):
        compare({"a": Saliency(model), "b": np.zeros((2, 7, 6))})
    with pytest.raises(ValueError, match=r"different shapes \(a: \(2, 7, 6\), b: \(2, 7, 6, 3\)\)"
                                         r".*same reducer"):
        compare({"a": Saliency(model), "b": Saliency(model, reducer=None)}, x, 0)
    with pytest.raises(ValueError, match=r"explainer 'b' has channel_axis=2"):
        compare({"a": Saliency(model), "b": Saliency(model, channel_axis=2)}, x, 0)
    with pytest.raises(ValueError, match=r"top_k=0"):
        compare({"a": np.zeros((1, 2)), "b": np.zeros((1, 2))}, top_k=0)


# --- report --------------------------------------------------------------------------------


def _report() -> ComparisonReport:
    rng = np.random.default_rng(5)
    a = np.abs(rng.normal(size=(3, 8, 8)))
    return compare({"torch": a, "tensorflow": a + 1e-6, "jax": np.abs(rng.normal(size=a.shape))},
                   top_k=0.25)


def test_table_shows_names_and_numbers() -> None:
    report = _report()
    text = report.table()
    assert str(report) == text
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].split() == ["a", "b", "max", "abs", "err", "rel", "err", "spearman",
                                "top-25%", "overlap", "ssim"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split()[:2] == ["torch", "tensorflow"]
    row = report.row("torch", "tensorflow")
    assert f"{row.max_abs_error:.3e}" in lines[2]
    assert f"{row.relative_error:.3e}" in lines[2]
    assert f"{row.ssim:.4f}" in lines[2]
    assert "1.0000" in lines[2]
    assert {len(line) for line in lines[:2]} == {len(lines[0])}  # aligned columns
    rho = f"{row.spearman:.4f}"
    assert lines[0].index("spearman") + len("spearman") == lines[2].index(rho) + len(rho)


def test_records_and_dict() -> None:
    report = _report()
    records = report.as_records()
    assert [(r["name_a"], r["name_b"]) for r in records] == [
        ("torch", "tensorflow"), ("torch", "jax"), ("tensorflow", "jax")]
    assert records[0]["max_abs_error"] == pytest.approx(1e-6)
    assert records[0]["top_k_overlap"] == 1.0
    data = json.loads(json.dumps(report.to_dict()))
    assert data["names"] == ["torch", "tensorflow", "jax"]
    assert data["shape"] == [3, 8, 8]
    assert data["top_k"] == 0.25
    assert data["rows"] == records
    assert "torch" in repr(report)
    assert math.isfinite(records[2]["spearman"])
    with pytest.raises(KeyError, match=r"no row for the pair \('torch', 'keras'\)"):
        report.row("torch", "keras")


def test_spearman_summary_skips_undefined_samples() -> None:
    a = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    b = np.array([[1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    row = compare({"a": a, "b": b}).rows[0]
    assert row.spearman == pytest.approx(0.5)
    assert np.isnan(compare({"a": a[1:], "b": b[1:]}).rows[0].spearman)


@pytest.mark.parametrize("framework", ["torch", "tensorflow", "jax", "keras"])
def test_framework_backends_offer_full_precision_that_restores_settings(framework: str) -> None:
    module = pytest.importorskip(framework)
    kind = module.backend.backend() if framework == "keras" else framework
    backend = get_backend(framework)
    reduced, full = _precision_values(kind)
    original = _precision(kind)
    _set_precision(kind, reduced)
    try:
        with backend.full_precision():  # type: ignore[attr-defined]
            assert _precision(kind) == full
        assert _precision(kind) == reduced
    finally:
        _set_precision(kind, original)


def _precision_values(kind: str) -> tuple[Any, Any]:
    """A reduced-precision setting, and the setting full_precision() must give."""
    return {"torch": (("high", True), ("highest", False)), "tensorflow": (True, False),
            "jax": ("bfloat16", "highest")}[kind]


def _precision(kind: str) -> Any:
    import sys

    if kind == "torch":
        torch = sys.modules["torch"]
        return torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    if kind == "jax":
        return sys.modules["jax"].config.jax_default_matmul_precision
    return sys.modules["tensorflow"].config.experimental.tensor_float_32_execution_enabled()


def _set_precision(kind: str, value: Any) -> None:
    import sys

    if kind == "torch":
        torch = sys.modules["torch"]
        torch.set_float32_matmul_precision(value[0])
        torch.backends.cudnn.allow_tf32 = value[1]
    elif kind == "jax":
        sys.modules["jax"].config.update("jax_default_matmul_precision", value)
    else:
        sys.modules["tensorflow"].config.experimental.enable_tensor_float_32_execution(value)


def test_channels_first_inputs_are_named_and_taken_with_channel_axis() -> None:
    model = NumpyModel(make_spec("cnn"))
    x = _images(2).astype(np.float32)  # channels-last
    first = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    explainers = {"a": Saliency(model), "b": GradientInput(model)}
    if first.shape[1] in (1, 3, 4) and first.shape[-1] > 4:
        with pytest.raises(ValueError, match=r"look channels-first.*channel_axis=1"):
            compare(explainers, first, 0)
    expected = compare(explainers, x, 0)
    found = compare(explainers, first, 0, channel_axis=1)
    for name in ("a", "b"):
        np.testing.assert_array_equal(found.maps[name], expected.maps[name])
