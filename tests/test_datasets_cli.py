"""``agnostic-saliency explain`` on data sets: Zarr output and --resume after Ctrl-C,
folders of images, .npz keys, method options, and errors that stop before any work.

The oracle is the Python API on the same arrays (for images: read and normalized
here with PIL and NumPy).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from agnostic_saliency import IntegratedGradients, Saliency, SmoothGrad
from agnostic_saliency.cli import main
from agnostic_saliency.datasets import MANIFEST

CLI = [sys.executable, "-m", "agnostic_saliency.cli"]


class _Net(torch.nn.Module):
    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3)
        self.linear = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: Any) -> Any:
        return self.linear(torch.tanh(self.conv(x)).flatten(1))


@pytest.fixture()
def model(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = _Net().eval()
    path = tmp_path / "model.pt"
    torch.jit.trace(net, torch.zeros(2, 3, 8, 8)).save(str(path))
    return path, net


def _inputs(tmp_path: Path, n: int) -> tuple[np.ndarray, Path]:
    x = np.random.default_rng(0).normal(size=(n, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return x, tmp_path / "x.npy"


def test_ctrl_c_exits_130_and_resume_completes_the_zarr_store(
        tmp_path: Path, model: tuple[Path, torch.nn.Module]) -> None:
    path, net = model
    x, inputs = _inputs(tmp_path, 120)
    out = tmp_path / "maps.zarr"
    args = ["explain", str(path), str(inputs), "--out", str(out), "--method", "smoothgrad",
            "--nb-samples", "8", "--batch-size", "4", "--quiet"]
    child = subprocess.Popen([*CLI, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / MANIFEST).exists() or \
            not json.loads((out / MANIFEST).read_text())["chunks"]:
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, error = child.communicate(timeout=120)
    assert child.returncode == 130, error
    assert "Traceback" not in error
    kept = len(json.loads((out / MANIFEST).read_text())["chunks"]) * 4
    assert f"interrupted after {kept} of 120 samples; rerun with --resume" in error
    assert 0 < kept < 120

    assert main([*args, "--resume"]) == 0
    expected = SmoothGrad(net, nb_samples=8, seed=0).explain(x)
    np.testing.assert_allclose(zarr.open_array(str(out), mode="r")[:], expected,
                               rtol=1e-5, atol=1e-7)
    assert zarr.open_array(str(out), mode="r").attrs["provenance"]["samples"] == 120


def _image_folder(tmp_path: Path) -> tuple[Path, list[Path]]:
    rng = np.random.default_rng(5)
    files = []
    for name, count in (("cat", 3), ("dog", 2)):
        folder = tmp_path / "images" / name / "deeper"  # found recursively
        folder.mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(10 + i, 12, 3), dtype=np.uint8)
            files.append(folder / f"{i}.png")
            Image.fromarray(pixels).save(files[-1])
    return tmp_path / "images", sorted(files)


def test_a_folder_of_images_with_class_folders_matches_the_python_api(
        tmp_path: Path, model: tuple[Path, torch.nn.Module]) -> None:
    path, net = model
    folder, files = _image_folder(tmp_path)
    mean, std = np.array([0.4, 0.5, 0.6], np.float32), np.array([0.2, 0.25, 0.3], np.float32)
    images = [np.asarray(Image.open(file).convert("RGB").resize((8, 8), Image.BILINEAR),
                         np.float32) / 255 for file in files]
    x = np.ascontiguousarray(((np.stack(images) - mean) / std).transpose(0, 3, 1, 2))
    out = tmp_path / "maps.npy"
    assert main(["explain", str(path), str(folder), "--out", str(out), "--targets", "folders",
                 "--size", "8", "8", "--normalize", "0.4,0.5,0.6", "0.2,0.25,0.3",
                 "--batch-size", "2", "--quiet"]) == 0
    expected = Saliency(net).explain(x, np.array([0, 0, 0, 1, 1]))
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)


def test_images_of_different_sizes_name_the_image_and_the_next_step(
        tmp_path: Path, model: tuple[Path, torch.nn.Module],
        capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = _image_folder(tmp_path)
    status = main(["explain", str(model[0]), str(folder), "--out", str(tmp_path / "m.npy")])
    error = capsys.readouterr().err
    assert status == 2 and "image 1 (" in error and "pass --size H W" in error, error


def test_method_options_reach_the_method(tmp_path: Path,
                                         model: tuple[Path, torch.nn.Module]) -> None:
    path, net = model
    x, inputs = _inputs(tmp_path, 6)
    out = tmp_path / "maps.npy"
    assert main(["explain", str(path), str(inputs), "--out", str(out), "--method",
                 "integratedgradients", "--steps", "7", "--baseline", "0.5", "--reducer",
                 "none", "--preset", "captum", "--quiet"]) == 0
    expected = IntegratedGradients(net, steps=7, baseline_value=0.5, reducer=None,
                                   preset="captum").explain(x)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)
    record = json.loads((tmp_path / "maps.npy.provenance.json").read_text())
    assert record["definitions"]["steps"] == 7 and record["definitions"]["reducer"] is None


@pytest.mark.parametrize(("extra", "message"), [
    (["--steps", "5"], "--steps does not apply to --method saliency"),
    (["--key", "nope"], "no array 'nope'"),
    ([], r"holds 2 arrays \(a, b\); pass --key NAME"),
])
def test_npz_keys_and_method_options_are_never_guessed(
        tmp_path: Path, model: tuple[Path, torch.nn.Module], capsys: pytest.CaptureFixture[str],
        extra: list[str], message: str) -> None:
    np.savez(tmp_path / "x.npz", a=np.zeros((2, 3, 8, 8), np.float32),
             b=np.ones((2, 3, 8, 8), np.float32))
    status = main(["explain", str(model[0]), str(tmp_path / "x.npz"), "--out",
                   str(tmp_path / "m.npy"), *extra])
    error = capsys.readouterr().err
    import re

    assert status == 2 and re.search(message, error), error
    assert not (tmp_path / "m.npy").exists()


def test_an_unwritable_png_folder_fails_before_any_work(
        tmp_path: Path, model: tuple[Path, torch.nn.Module],
        capsys: pytest.CaptureFixture[str]) -> None:
    _, inputs = _inputs(tmp_path, 3)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    out = tmp_path / "maps.zarr"
    status = main(["explain", str(model[0]), str(inputs), "--out", str(out), "--png",
                   str(blocker / "pngs")])
    error = capsys.readouterr().err
    assert status == 2 and "--png" in error and "cannot write there" in error, error
    assert not out.exists()


def test_a_zarr_array_as_data_and_resume_on_other_data_is_refused(
        tmp_path: Path, model: tuple[Path, torch.nn.Module],
        capsys: pytest.CaptureFixture[str]) -> None:
    path, net = model
    x, inputs = _inputs(tmp_path, 9)
    store = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=x.shape,
                              chunks=(4, 3, 8, 8), dtype=x.dtype)
    store[:] = x
    out = tmp_path / "maps.zarr"
    args = ["explain", str(path), str(tmp_path / "x.zarr"), "--out", str(out), "--quiet",
            "--batch-size", "4"]
    assert main(args) == 0
    np.testing.assert_allclose(zarr.open_array(str(out))[:], Saliency(net).explain(x),
                               rtol=1e-5, atol=1e-7)
    np.save(inputs, x[::-1].copy())
    assert main(["explain", str(path), str(inputs), "--out", str(out), "--quiet",
                 "--batch-size", "4", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "cannot resume" in error and "samples 0-3 (batch 0) differ" in error, error
    assert os.path.exists(out / "zarr.json")
