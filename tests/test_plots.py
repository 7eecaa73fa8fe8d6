"""Plots: rendered pixels, colour scales, images checked against maps, framework tensors,
titles, PNG files, and no global matplotlib state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure

from agnostic_saliency import Saliency
from agnostic_saliency.compare import compare
from agnostic_saliency.plots import (
    figure_to_rgba,
    plot_attributions,
    plot_comparison,
    save,
)


def _maps(n: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    blobs = [np.exp(-((yy - rng.uniform(0, size)) ** 2 + (xx - rng.uniform(0, size)) ** 2) / 20)
             for _ in range(n)]
    return np.array(blobs)


def _colours(rgba: np.ndarray) -> int:
    return len(np.unique(rgba.reshape(-1, 4), axis=0))


def _cell_colours(rgba: np.ndarray, ax: Any) -> np.ndarray:
    """The rendered colour at the centre of every cell of the heat map drawn on ``ax``."""
    rows, cols = ax.images[-1].get_array().shape[:2]
    box = ax.get_window_extent()
    x = box.x0 + (np.arange(cols) + 0.5) / cols * box.width
    y = rgba.shape[0] - (box.y1 - (np.arange(rows) + 0.5) / rows * box.height)
    return rgba[y.astype(int)[:, None], x.astype(int)[None, :]].astype(np.int16)


def _panels(fig: Figure) -> list[Any]:
    """The axes that draw maps or images (not the colour bars, not switched-off cells)."""
    return [ax for ax in fig.axes if ax.images]


def _expected_colours(ax: Any) -> np.ndarray:
    image = ax.images[-1]
    return image.to_rgba(image.get_array(), bytes=True).astype(np.int16)


# --- plot_attributions: layout and scales -------------------------------------------------


def test_rgba_has_the_figure_size_and_is_not_blank() -> None:
    fig = plot_attributions(_maps(), figsize=(6, 2))
    rgba = plot_attributions(_maps(), figsize=(6, 2), return_rgba=True)
    assert rgba.dtype == np.uint8
    assert rgba.shape == (round(2 * fig.dpi), round(6 * fig.dpi), 4)
    assert _colours(rgba) > 50
    assert (rgba[..., 3] == 255).all()
    np.testing.assert_array_equal(figure_to_rgba(fig), rgba)


def test_grid_layout_titles_and_a_colour_bar_per_panel() -> None:
    fig = plot_attributions(_maps(5), titles=[f"s{i}" for i in range(5)], cols=2)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == ["s0", "s1", "s2", "s3", "s4"]
    assert len(fig.axes) == 6 + 5  # 3 rows of 2 (the last switched off), 5 colour bars
    assert sum(not ax.axison for ax in fig.axes) == 1
    np.testing.assert_array_equal(panels[3].images[0].get_array(), _maps(5)[3])
    assert len(plot_attributions(_maps(5), colorbar=False).axes) == 8  # 2 rows of 4


def test_each_panel_is_clipped_at_its_own_percentile() -> None:
    maps = _maps(2)
    maps[1] *= 10
    fig = plot_attributions(maps, clip_percentile=90)
    for ax, values in zip(_panels(fig), maps, strict=True):
        norm = ax.images[0].norm
        assert norm.vmin == 0.0
        assert norm.vmax == pytest.approx(np.percentile(values, 90))


def test_shared_scale_gives_every_panel_one_scale_and_one_colour_bar() -> None:
    maps = _maps(3)
    maps[1] *= 10
    fig = plot_attributions(maps, shared_scale=True, clip_percentile=100)
    norms = [ax.images[0].norm for ax in _panels(fig)]
    joint = maps.max()
    assert [(norm.vmin, norm.vmax) for norm in norms] == [(0.0, pytest.approx(joint))] * 3
    assert len(fig.axes) == 3 + 1
    colours = [_expected_colours(ax) for ax in _panels(fig)]
    brightest = [colour[..., :3].sum(axis=-1).max() for colour in colours]
    assert brightest[0] < brightest[1] - 100  # on one scale, the weak map looks weak


def test_magnitude_maps_use_inferno_and_signed_maps_a_diverging_map_centred_at_zero() -> None:
    magnitude = plot_attributions(_maps(1)).axes[0].images[0]
    assert magnitude.get_cmap().name == "inferno"
    signed = _maps(1) - 0.2
    image = plot_attributions(signed, clip_percentile=100).axes[0].images[0]
    assert image.get_cmap().name == "RdBu_r"
    assert image.norm.vmax == pytest.approx(np.abs(signed).max())
    assert image.norm.vmin == -image.norm.vmax
    white = image.to_rgba(np.array([[0.0]]), bytes=True)[0, 0, :3]
    assert white.min() > 240  # zero is the neutral middle of the colour map
    assert plot_attributions(_maps(1), cmap="viridis").axes[0].images[0].get_cmap().name == \
        "viridis"


# --- plot_attributions: over images ------------------------------------------------------


def test_overlay_opacity_grows_with_saliency_over_a_grayscale_image() -> None:
    maps = _maps(2)
    gray = np.linspace(0, 1, 2 * 16 * 16).reshape(2, 16, 16)
    fig = plot_attributions(maps, gray, alpha=0.6, clip_percentile=100)
    image, overlay = fig.axes[0].images
    assert image.get_cmap().name == "gray"
    np.testing.assert_allclose(overlay.get_alpha(), 0.6 * maps[0] / maps[0].max())
    constant = plot_attributions(maps, gray, alpha=0.4, opacity="constant")
    assert constant.axes[0].images[1].get_alpha() == 0.4


def test_where_the_map_is_zero_the_image_shows_unchanged() -> None:
    maps = np.zeros((1, 16, 16))
    maps[0, :8] = 1.0
    gray = np.full((1, 16, 16), 0.5)
    fig = plot_attributions(maps, gray, colorbar=False, figsize=(2, 2))
    rgba = figure_to_rgba(fig)
    cells = _cell_colours(rgba, fig.axes[0])
    assert np.abs(cells[12:, :, :3] - 128).max() <= 1  # plain gray under a zero map
    assert np.abs(cells[:4, :, :3] - 128).max() > 40  # coloured where the map is high


def test_rgb_images_are_drawn_gray_under_the_map_and_in_colour_alone() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    fig = plot_attributions(_maps(2), rgb)
    luminance = rgb[1] / 255.0 @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(_panels(fig)[1].images[0].get_array(), luminance)
    row = plot_comparison({"a": _maps(2)}, rgb).axes[0]
    np.testing.assert_allclose(row.images[0].get_array(), rgb[0] / 255.0)


def test_channels_first_images_and_maps_draw_as_channels_last() -> None:
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(2, 16, 16, 3))
    maps = rng.uniform(size=(2, 16, 16, 3))
    expected = plot_attributions(maps, images, return_rgba=True)
    first = np.moveaxis(maps, -1, 1), np.moveaxis(images, -1, 1)
    detected = plot_attributions(*first, return_rgba=True)
    np.testing.assert_array_equal(detected, expected)
    explicit = plot_attributions(*first, channel_axis=1, return_rgba=True)
    np.testing.assert_array_equal(explicit, expected)
    fig = plot_attributions(maps, reducer="mean")
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), maps[0].mean(axis=-1))


def test_nchw_images_under_reduced_maps_are_aligned() -> None:
    """An NCHW batch under (N, H, W) maps once drew as thin 3-pixel strips."""
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(2, 3, 12, 10))
    maps = rng.uniform(size=(2, 12, 10))
    fig = plot_attributions(maps, images)
    drawn = fig.axes[0].images[0].get_array()
    assert drawn.shape == (12, 10)
    np.testing.assert_allclose(drawn, np.moveaxis(images[0], 0, -1)
                               @ np.array([0.299, 0.587, 0.114]))
    assert fig.axes[0].images[1].get_extent() == [-0.5, 9.5, 11.5, -0.5]


def test_the_explainer_settles_a_channel_axis_the_shapes_leave_open() -> None:
    from agnostic_saliency.testing import NumpyModel, make_spec

    images = np.random.default_rng(4).uniform(size=(2, 4, 4, 4))
    maps = _maps(2, size=4)
    with pytest.raises(ValueError, match=r"cannot tell the channel axis of shape \(2, 4, 4, 4\)"
                                         r".*pass channel_axis=1"):
        plot_attributions(maps, images)
    channels_first = Saliency(NumpyModel(make_spec("cnn", layout="channels_first")),
                              channel_axis=1)
    by_explainer = plot_attributions(maps, images, explainer=channels_first)
    by_argument = plot_attributions(maps, images, channel_axis=1)
    np.testing.assert_array_equal(figure_to_rgba(by_explainer), figure_to_rgba(by_argument))
    channels_last = plot_attributions(maps, images, channel_axis=-1, return_rgba=True)
    assert not np.array_equal(channels_last, figure_to_rgba(by_argument))


@pytest.mark.parametrize(("images", "match"), [
    (np.zeros((2, 32, 32, 3)), r"images of shape \(2, 32, 32, 3\) do not match maps of shape "
                               r"\(2, 16, 16\): the maps are 16x16 pixels; pass the images"),
    (np.zeros((2, 3, 32, 32)), r"images of shape \(2, 3, 32, 32\) do not match"),
    (np.zeros((2, 16, 15)), r"images of shape \(2, 16, 15\) do not match"),
])
def test_images_of_another_size_are_refused(images: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plot_attributions(_maps(2), images)
    with pytest.raises(ValueError, match=match):
        plot_comparison({"a": _maps(2)}, images)


# --- framework tensors ---------------------------------------------------------------------


def test_torch_tensors_that_need_grad_are_drawn_like_numpy() -> None:
    import torch

    images = np.random.default_rng(5).uniform(size=(2, 3, 16, 16)).astype(np.float32)
    maps = _maps(2).astype(np.float32)
    expected = plot_attributions(maps, images, targets=[1, 2], return_rgba=True)
    tensors = plot_attributions(torch.from_numpy(maps).requires_grad_(True),
                                torch.from_numpy(images), targets=torch.tensor([1, 2]),
                                return_rgba=True)
    np.testing.assert_array_equal(tensors, expected)


def test_tensorflow_and_jax_arrays_are_drawn_like_numpy() -> None:
    import jax.numpy as jnp
    import tensorflow as tf

    images = np.random.default_rng(6).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    maps = _maps(2).astype(np.float32)
    expected = plot_comparison({"a": maps}, images, return_rgba=True)
    for convert in (tf.constant, jnp.asarray):
        drawn = plot_comparison({"a": convert(maps)}, convert(images), return_rgba=True)
        np.testing.assert_array_equal(drawn, expected)


def test_objects_that_are_no_arrays_are_refused() -> None:
    with pytest.raises(TypeError, match=r"maps of type object cannot be read as an array"):
        plot_attributions(object())


# --- titles --------------------------------------------------------------------------------


def test_titles_name_the_target_and_the_predicted_class() -> None:
    logits = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 1.0]])
    fig = plot_attributions(_maps(2), targets=np.array([1, 2]), predicted=logits,
                            class_names=["cat", "dog", "car"])
    assert [ax.get_title() for ax in _panels(fig)] == [
        "target: dog | predicted: dog", "target: car | predicted: cat"]
    fig = plot_attributions(_maps(2), targets=7, class_names={7: "seven"})
    assert [ax.get_title() for ax in _panels(fig)] == ["target: seven"] * 2
    assert _panels(plot_attributions(_maps(1), predicted=[4]))[0].get_title() == "predicted: 4"
    fig = plot_comparison({"a": _maps(2), "b": _maps(2)}, targets=[0, 1], class_names=["x", "y"])
    assert _panels(fig)[2].get_ylabel() == "sample 1\ntarget: y"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"targets": [0, 1, 2]}, r"targets of shape \(3,\) and dtype int64 are not class indices "
                             r"for 2 maps"),
    ({"targets": [0.5, 1.0]}, r"are not class indices"),
    ({"predicted": [0, 5], "class_names": ["a", "b"]},
     r"class index 5 has no name among 2 class_names"),
])
def test_bad_classes_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plot_attributions(_maps(2), **kwargs)


# --- other kinds and bad arguments -------------------------------------------------------


def test_tabular_maps_are_bar_charts() -> None:
    values = np.array([[0.5, -1.0, 2.0, 0.1], [1.0, 1.0, -3.0, 0.0]])
    fig = plot_attributions(values, values * 10, feature_names=["a", "b", "c", "d"])
    bars = fig.axes[0].patches
    assert [bar.get_height() for bar in bars] == pytest.approx(values[0].tolist())
    assert bars[2].get_facecolor() != bars[1].get_facecolor()
    labels = [label.get_text() for label in fig.axes[0].get_xticklabels()]
    assert labels == ["a\n5", "b\n-10", "c\n20", "d\n1"]
    assert _colours(figure_to_rgba(fig)) > 10


def test_series_maps_are_strips_under_lines() -> None:
    rng = np.random.default_rng(3)
    maps, inputs = rng.uniform(size=(2, 30, 3)), rng.normal(size=(2, 30, 3)).cumsum(axis=1)
    fig = plot_attributions(maps, inputs, kind="series", feature_names=["x", "y", "z"])
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), maps[0].T)
    assert len(ax.lines) == 3
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(30))
    assert [label.get_text() for label in ax.get_yticklabels()] == ["x", "y", "z"]
    single = plot_attributions(maps[..., 0], kind="series", return_rgba=True)
    assert _colours(single) > 10


@pytest.mark.parametrize(("call", "match"), [
    (lambda: plot_attributions(_maps(2), titles=["one"]), r"got 1 titles for 2 maps"),
    (lambda: plot_attributions(_maps(2), np.zeros((3, 16, 16))), r"got 3 images for 2 maps"),
    (lambda: plot_attributions(_maps(2), kind="volume"), r"kind='volume' is not one of"),
    (lambda: plot_attributions(np.zeros(4)), r"maps of shape \(4,\) cannot be drawn"),
    (lambda: plot_attributions(np.zeros((2, 3, 4)), kind="tabular"), r"kind='tabular'"),
    (lambda: plot_attributions(_maps(2), clip_percentile=0),
     r"clip_percentile=0 is out of range; pass a value with 0 < clip_percentile <= 100"),
    (lambda: plot_attributions(_maps(2), alpha=2),
     r"alpha=2 is out of range; pass a value with 0 <= alpha <= 1"),
    (lambda: plot_attributions(_maps(2), opacity="half"), r"opacity='half' is not one of"),
    (lambda: plot_attributions(np.zeros((1, 4, 4, 3)), channel_axis=2), r"channel_axis=2"),
    (lambda: plot_attributions(np.zeros((1, 16, 16, 16))),
     r"cannot tell the channel axis of shape \(1, 16, 16, 16\)"),
    (lambda: plot_attributions(np.zeros((2, 3)), feature_names=["a"]),
     r"got 1 feature_names for 3 features; pass one per feature"),
    (lambda: plot_comparison({}), r"got no maps"),
    (lambda: plot_comparison({"a": _maps(2), "b": _maps(3)}), r"different shapes"),
])
def test_bad_arguments_are_refused(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


# --- plot_comparison -----------------------------------------------------------------------


def test_identical_maps_get_identical_colours() -> None:
    maps = _maps(2)
    fig = plot_comparison({"torch": maps, "jax": maps.copy()}, colorbar=False)
    rgba = figure_to_rgba(fig)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["torch", "jax"]
    for left, right in axes:
        assert len(np.unique(_expected_colours(left).reshape(-1, 4), axis=0)) > 20
        np.testing.assert_array_equal(_expected_colours(left), _expected_colours(right))
        np.testing.assert_array_equal(_cell_colours(rgba, left), _cell_colours(rgba, right))
        np.testing.assert_allclose(_cell_colours(rgba, left), _expected_colours(left), atol=1)


def test_rows_share_one_clipping_and_shared_scale_shares_it_across_rows() -> None:
    maps = _maps(2)
    maps[1] *= 5
    fig = plot_comparison({"a": maps, "b": 2 * maps}, clip_percentile=95)
    axes = _panels(fig)
    for row in range(2):
        joint = np.percentile(np.concatenate([maps[row].ravel(), 2 * maps[row].ravel()]), 95)
        norms = [axes[2 * row + col].images[0].norm for col in range(2)]
        assert [norm.vmax for norm in norms] == pytest.approx([joint, joint])
    alone = plot_attributions(maps, clip_percentile=95).axes[0].images[0].norm
    assert alone.vmax < axes[0].images[0].norm.vmax  # alone, "a" would look as strong as "b"
    shared = plot_comparison({"a": maps, "b": 2 * maps}, clip_percentile=95, shared_scale=True)
    everything = np.percentile(np.concatenate([maps.ravel(), 2 * maps.ravel()]), 95)
    assert [ax.images[0].norm.vmax for ax in _panels(shared)] == pytest.approx([everything] * 4)
    assert len(shared.axes) == 4 + 1


def test_comparison_with_images_and_a_report() -> None:
    maps = _maps(2)
    images = np.random.default_rng(4).uniform(size=(2, 16, 16, 3))
    report = compare({"torch": maps, "tensorflow": maps * 1.01})
    fig = plot_comparison(report, images)
    panels = _panels(fig)
    assert len(panels) == 6
    assert [ax.get_title() for ax in panels[:3]] == ["input", "torch", "tensorflow"]
    assert panels[0].get_ylabel() == "sample 0"
    assert len(fig.axes) == 6 + 2  # one colour bar per row
    rgba = plot_comparison(report, images, return_rgba=True)
    assert rgba.shape[-1] == 4 and _colours(rgba) > 50


def test_comparison_of_tabular_and_series_maps() -> None:
    rng = np.random.default_rng(5)
    tabular = rng.normal(size=(2, 5))
    fig = plot_comparison({"a": tabular, "b": tabular}, colorbar=False)
    colours = [[bar.get_facecolor() for bar in ax.patches] for ax in fig.axes]
    assert colours[0] == colours[1] and colours[2] == colours[3]
    series = rng.uniform(size=(2, 20))
    rgba = plot_comparison({"a": series, "b": series}, series, kind="series", return_rgba=True)
    assert _colours(rgba) > 10


# --- output and global state ---------------------------------------------------------------


def test_png_file_decodes_with_pillow(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    fig = plot_comparison({"a": _maps(2), "b": _maps(2, seed=1)}, figsize=(5, 4))
    path = save(fig, tmp_path / "comparison.png")
    assert path == tmp_path / "comparison.png"
    with image_module.open(path) as png:
        assert png.format == "PNG"
        assert png.size == (round(5 * fig.dpi), round(4 * fig.dpi))
        pixels = np.asarray(png.convert("RGBA"))
    assert _colours(pixels) > 50
    for ax in _panels(fig):  # the heat maps, where the saved file has drawn them
        np.testing.assert_allclose(_cell_colours(pixels, ax), _expected_colours(ax), atol=1)


def test_figure_to_rgba_gives_a_foreign_canvas_back() -> None:
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    original = fig.canvas
    rgba = figure_to_rgba(fig)
    assert rgba.shape == (round(fig.dpi), round(2 * fig.dpi), 4)
    assert fig.canvas is original


def test_plotting_changes_no_global_state() -> None:
    code = (
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import sys, numpy as np\n"
        "from agnostic_saliency.plots import plot_attributions, plot_comparison\n"
        "plot_attributions(np.ones((1, 4, 4)), return_rgba=True)\n"
        "plot_comparison({'a': np.ones((1, 4)), 'b': np.zeros((1, 4))})\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["svg", "False"]


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg",
                 "matplotlib.colors", "matplotlib.cm"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'agnostic-saliency\[plot\]'"):
        plot_attributions(_maps(1))
