"""The command line end to end: the demo, and `explain` on every saved-model format.

Each format is saved by its framework, explained by the CLI in a child process,
and the `.npy` it writes is compared with the Python API's maps.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import Saliency
from agnostic_saliency.cli import main
from agnostic_saliency.testing import make_spec
from agnostic_saliency.testing.builders import (
    build_jax_function,
    build_keras,
    build_tensorflow,
    build_torch,
)

CLI = [sys.executable, "-m", "agnostic_saliency.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def _inputs(tmp_path: Path, channels_first: bool = False) -> tuple[np.ndarray, Path]:
    x = np.random.default_rng(0).normal(size=(7, 7, 6, 3)).astype(np.float32)
    if channels_first:
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    path = tmp_path / "inputs.npy"
    np.save(path, x)
    return x, path


def test_demo_writes_a_grid_and_prints_the_agreement_table(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "grid.png"
    result = _run("demo", "--out", str(out))
    assert result.returncode == 0, result.stderr
    for framework in ("torch", "tensorflow", "keras", "jax"):
        assert f"{framework}: 16 maps" in result.stdout
    assert "spearman" in result.stdout.lower()
    with Image.open(out) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert width > 400 and height > 400 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def _keras_file(tmp_path: Path) -> tuple[Path, Any, bool]:
    model = build_keras(make_spec("cnn"))
    path = tmp_path / "model.keras"
    model.save(path)
    return path, model, False


def _torchscript_file(tmp_path: Path) -> tuple[Path, Any, bool]:
    import torch

    model = build_torch(make_spec("cnn", layout="channels_first"))
    path = tmp_path / "model.pt"
    torch.jit.trace(model, torch.zeros(2, 3, 7, 6)).save(str(path))
    return path, model, True


def _torch_export_file(tmp_path: Path) -> tuple[Path, Any, bool]:
    import torch

    model = build_torch(make_spec("cnn", layout="channels_first"))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.zeros(2, 3, 7, 6),),
                                  dynamic_shapes={"input": {0: batch}})
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    return path, model, True


def _saved_model_folder(tmp_path: Path) -> tuple[Path, Any, bool]:
    import tensorflow as tf

    module = build_tensorflow(make_spec("cnn"))
    module.serve = tf.function(module.__call__,
                               input_signature=[tf.TensorSpec([None, 7, 6, 3], tf.float32)])
    path = tmp_path / "saved"
    tf.saved_model.save(module, str(path), signatures=module.serve)
    return path, module, False


def _jax_export_file(tmp_path: Path) -> tuple[Path, Any, bool]:
    import jax
    from jax import export

    forward = build_jax_function(make_spec("cnn"))
    shape = export.symbolic_shape("b, 7, 6, 3")
    exported = export.export(jax.jit(forward))(jax.ShapeDtypeStruct(shape, np.float32))
    path = tmp_path / "model.jax"
    path.write_bytes(exported.serialize(vjp_order=1))
    return path, forward, False


FORMATS = {"keras": (_keras_file, "keras", None), "torchscript": (_torchscript_file, "torch", None),
           "torch.export": (_torch_export_file, "torch", None),
           "savedmodel": (_saved_model_folder, "tensorflow", None),
           "jax.export": (_jax_export_file, "jax", "jax")}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_explain_saved_model_matches_the_python_api(tmp_path: Path, kind: str) -> None:
    save, framework, backend = FORMATS[kind]
    pytest.importorskip(framework)
    path, model, channels_first = save(tmp_path)
    x, inputs = _inputs(tmp_path, channels_first)
    out = tmp_path / "maps.npy"
    result = _run("explain", str(path), str(inputs), "--out", str(out), "--targets", "2",
                  "--batch-size", "3", "--png", str(tmp_path / "pngs"))
    assert result.returncode == 0, result.stderr
    assert "7 of 7 samples (100%)" in result.stderr  # progress lines in a log (no terminal)
    expected = Saliency(model, backend=backend).explain(x, 2)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-7)
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 7


def test_explain_with_smoothgrad_and_target_file_streams_into_the_output(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    path, model, _ = _keras_file(tmp_path)
    x, inputs = _inputs(tmp_path)
    targets = tmp_path / "targets.npy"
    np.save(targets, np.array([0, 1, 2, 0, 1, 2, 0]))
    out = tmp_path / "maps.npy"
    assert main(["explain", str(path), str(inputs), "--out", str(out), "--targets",
                 str(targets), "--method", "smoothgrad", "--seed", "4", "--batch-size", "2",
                 "--quiet"]) == 0
    from agnostic_saliency import SmoothGrad

    expected = SmoothGrad(model, seed=4).explain(x, np.load(targets))
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: (tmp / "missing.keras", tmp / "x.npy"), "model .*missing.keras.* does not exist"),
    (lambda tmp: (tmp / "model.onnx", tmp / "x.npy"),
     r"no installed backend loads 'model.onnx' \(backends that load saved models: .*keras"),
    (lambda tmp: (tmp, tmp / "x.npy"), r"no installed backend loads 'test_user_mistakes"),
    (lambda tmp: (tmp / "model.pt", tmp / "x.npy"), "is not a TorchScript file"),
    (lambda tmp: (tmp / "model.keras", tmp / "x.csv"), "inputs .*x.csv.* does not exist; check"),
])
def test_user_mistakes_give_one_line_and_exit_status_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "model.pt").write_bytes(b"not torchscript")
    build_keras(make_spec("cnn")).save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", np.zeros((2, 7, 6, 3), np.float32))
    model, inputs = make(tmp_path)
    status = main(["explain", str(model), str(inputs), "--out", str(tmp_path / "o.npy")])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("agnostic-saliency: error: ") and len(error.strip().splitlines()) == 1
    import re

    assert re.search(message, error), error


def test_strict_turns_a_zero_map_warning_into_one_line_and_exit_status_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")

    class PositivePart(torch.nn.Module):  # one output: the sum of relu(x)
        def forward(self, x: Any) -> Any:
            return torch.relu(x).sum(dim=1)

    torch.jit.trace(PositivePart(), torch.ones(2, 4)).save(str(tmp_path / "model.pt"))
    x = np.ones((3, 4), np.float32)
    x[1] = -1  # relu is flat there: sample 1's map is identically zero
    np.save(tmp_path / "x.npy", x)
    args = ["explain", str(tmp_path / "model.pt"), str(tmp_path / "x.npy"), "--out",
            str(tmp_path / "o.npy"), "--quiet"]
    with pytest.warns(UserWarning, match=r"identically zero for samples \[1\]"):
        assert main(args) == 0
    assert main([*args, "--strict"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert "identically zero for samples [1]" in error and "strict=True" in error


def test_mismatched_input_shape_is_one_line_in_a_child_process(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    path, _, _ = _keras_file(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((2, 7, 6, 4), np.float32))
    result = _run("explain", str(path), str(tmp_path / "x.npy"), "--out",
                  str(tmp_path / "o.npy"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "samples 0-1: model failed on inputs of shape (2, 7, 6, 4)" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_backends_command_lists_the_installed_backends(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    assert main(["backends"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"reference", "torch", "tensorflow", "keras", "jax"} <= set(listed)
