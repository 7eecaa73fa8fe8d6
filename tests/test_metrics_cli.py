"""`agnostic-saliency evaluate` and the metric plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from metrics_cases import image_spec, images, pixel_maps, targets

from agnostic_saliency import Saliency
from agnostic_saliency._cli_evaluate import parse_settings
from agnostic_saliency._plot_metrics import plot_curves, plot_randomization
from agnostic_saliency.cli import main
from agnostic_saliency.metrics import Deletion, Insertion, MuFidelity
from agnostic_saliency.sanity import model_randomization
from agnostic_saliency.testing.builders import build_torch


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Path]]:
    import torch

    folder = tmp_path_factory.mktemp("evaluate")
    model = build_torch(image_spec().for_layout("channels_first"))
    x = np.ascontiguousarray(images().transpose(0, 3, 1, 2))
    paths = {"model": folder / "model.pt", "inputs": folder / "x.npy",
             "maps": folder / "maps.npy", "targets": folder / "t.npy"}
    torch.jit.trace(model, torch.from_numpy(x)).save(str(paths["model"]))
    np.save(paths["inputs"], x)
    np.save(paths["maps"], pixel_maps())
    np.save(paths["targets"], targets())
    return model, paths


def _args(paths: dict[str, Path], *extra: str) -> list[str]:
    return ["evaluate", str(paths["model"]), str(paths["inputs"]), str(paths["maps"]),
            "--targets", str(paths["targets"]), *extra]


def test_evaluate_prints_the_apis_value(saved: tuple[Any, dict[str, Path]],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model, paths = saved
    x = np.load(paths["inputs"])
    for metric, extra, expected in [
        ("deletion", [], Deletion(model).evaluate(x, targets(), pixel_maps())),
        ("insertion", ["--preset", "quantus", "--set", "features_per_step=16"],
         Insertion(model, preset="quantus", features_per_step=16).evaluate(
             x, targets(), pixel_maps())),
        ("mufidelity", ["--set", "nb_samples=12", "--set", "correlation=pearson"],
         MuFidelity(model, nb_samples=12, correlation="pearson").evaluate(
             x, targets(), pixel_maps())),
    ]:
        assert main(_args(paths, "--metric", metric, *extra)) == 0
        printed = capsys.readouterr().out.strip()
        assert printed.startswith(f"{metric} (")
        assert float(printed.rsplit(" ", 1)[1]) == pytest.approx(expected, rel=1e-5)


def test_evaluate_draws_the_curve(saved: tuple[Any, dict[str, Path]], tmp_path: Path) -> None:
    from PIL import Image

    _, paths = saved
    png = tmp_path / "curve.png"
    assert main(_args(paths, "--metric", "deletion", "--curve-png", str(png))) == 0
    with Image.open(png) as image:
        assert image.size[0] > 200


def test_evaluate_reports_mistakes_in_one_line(saved: tuple[Any, dict[str, Path]],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _, paths = saved
    assert main(_args(paths, "--metric", "deletion", "--set", "stepz=3")) == 2
    assert "unknown settings ['stepz']" in capsys.readouterr().err
    assert main(_args(paths, "--metric", "average_drop", "--curve-png", "x.png")) == 2
    assert "has no curve" in capsys.readouterr().err


def test_settings_parse_as_literals() -> None:
    assert parse_settings(["steps=20", "baseline=min", "grid_size=None"]) == {
        "steps": 20, "baseline": "min", "grid_size": None}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_settings(["steps"])


def test_curve_and_randomization_plots_draw_something(
        saved: tuple[Any, dict[str, Path]]) -> None:
    model, paths = saved
    x = np.load(paths["inputs"])
    curves = {"map": Deletion(model).curve(x, targets(), pixel_maps()),
              "negated": Deletion(model).curve(x, targets(), -pixel_maps())}
    pixels = plot_curves(curves, samples=True, return_rgba=True)
    assert pixels.ndim == 3 and len(np.unique(pixels.reshape(-1, 4), axis=0)) > 20
    report = model_randomization(Saliency(model), x, targets())
    pixels = plot_randomization(report, return_rgba=True)
    assert len(np.unique(pixels.reshape(-1, 4), axis=0)) > 20
    assert "spearman" in str(report)
