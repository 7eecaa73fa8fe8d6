"""``explain_batches`` and ``explain_dataset``: every source gives ``explain``'s maps.

The oracle is one ``explain`` call on the whole array: a PyTorch ``DataLoader``, a
``tf.data.Dataset``, a generator, a memmap and a Zarr array, cut into any batch
size, with ids given in any order, give its exact maps (SmoothGrad's noise is
keyed by each sample's global id). Outputs (memory, ``.npy``, Zarr) hold the same
values, and failures leave no complete-looking file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

from agnostic_saliency import Saliency, SmoothGrad
from agnostic_saliency.datasets import MANIFEST, provenance_path
from agnostic_saliency.datasets._progress import Progress

N = 23


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5)).eval()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return (rng.normal(size=(N, 3, 8, 8)).astype(np.float32),
            rng.integers(0, 5, size=N).astype(np.int64))


@pytest.fixture(scope="module")
def explainer() -> SmoothGrad:
    return SmoothGrad(_model(), nb_samples=3, seed=7)


def _generator(x: np.ndarray, y: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, Any]]:
    for start in range(0, len(x), size):
        yield x[start:start + size], y[start:start + size]


def _sources(x: np.ndarray, y: np.ndarray, tmp_path: Path) -> dict[str, Any]:
    import tensorflow as tf

    np.save(tmp_path / "x.npy", x)
    store = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=x.shape, chunks=(4, 3, 8, 8),
                              dtype=x.dtype)
    store[:] = x
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=5)
    return {
        "dataloader": (loader, None),
        "tf.data": (tf.data.Dataset.from_tensor_slices((x, y)).batch(6), None),
        "generator": (_generator(x, y, 4), None),
        "memmap": (np.load(tmp_path / "x.npy", mmap_mode="r"), y),
        "zarr": (zarr.open_array(str(tmp_path / "x.zarr"), mode="r"), y),
        "mapping": ({"inputs": x, "targets": y}, None),
        "tuple": ((x, y), None),
    }


def test_every_source_gives_the_maps_of_one_explain_call(
        data: tuple[np.ndarray, np.ndarray], explainer: SmoothGrad, tmp_path: Path) -> None:
    x, y = data
    expected = explainer.explain(x, y)
    for name, (source, targets) in _sources(x, y, tmp_path).items():
        maps = np.concatenate(list(explainer.explain_batches(source, targets, batch_size=3)))
        np.testing.assert_array_equal(maps, expected, err_msg=name)


@pytest.mark.parametrize("batch_size", [1, 4, 7, N])
def test_smoothgrad_maps_do_not_depend_on_the_batch_size(
        data: tuple[np.ndarray, np.ndarray], explainer: SmoothGrad, batch_size: int) -> None:
    x, y = data
    maps = explainer.explain_dataset(x, y, batch_size=batch_size, progress=False)
    np.testing.assert_array_equal(maps, explainer.explain(x, y))
    assert explainer.last_provenance is not None
    assert explainer.last_provenance["batch_sizes"] == sorted({batch_size, N % batch_size} - {0})


def test_ids_key_the_noise_whatever_the_order(data: tuple[np.ndarray, np.ndarray],
                                              explainer: SmoothGrad) -> None:
    x, y = data
    order = np.random.default_rng(3).permutation(N)
    batches = [{"image": x[order[i:i + 5]], "label": y[order[i:i + 5]], "ids": order[i:i + 5]}
               for i in range(0, N, 5)]
    maps = np.concatenate(list(explainer.explain_batches(
        batches, keys={"inputs": "image", "targets": "label"})))
    np.testing.assert_array_equal(maps, explainer.explain(x, y)[order])


def test_npy_output_is_a_valid_file_with_its_provenance(
        data: tuple[np.ndarray, np.ndarray], explainer: SmoothGrad, tmp_path: Path) -> None:
    x, y = data
    out = tmp_path / "maps.npy"
    explainer.explain_dataset(_generator(x, y, 5), out=out, progress=False)
    np.testing.assert_array_equal(np.load(out), explainer.explain(x, y))
    record = json.loads(provenance_path(out).read_text())
    assert record == explainer.last_provenance
    assert record["samples"] == N and record["method"] == "SmoothGrad"
    assert record["definitions"]["seed"] == 7 and record["definitions"]["nb_samples"] == 3
    assert record["targets"] == ["given class index per sample"]
    assert record["versions"]["torch"] == torch.__version__
    assert record["started"] <= record["finished"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npy", "maps.npy.provenance.json"]


def test_a_failed_run_leaves_the_earlier_npy_and_no_partial_file(
        data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, _ = data
    out = tmp_path / "maps.npy"
    explainer = Saliency(_model())
    earlier = explainer.explain_dataset(x, out=out, progress=False).copy()

    def failing() -> Iterator[np.ndarray]:
        yield x[:5]
        yield x[5:10]
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        explainer.explain_dataset(failing(), out=out, progress=False)
    np.testing.assert_array_equal(np.load(out), earlier)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npy", "maps.npy.provenance.json"]


def test_zarr_output_has_one_compressed_chunk_per_batch_and_the_provenance(
        data: tuple[np.ndarray, np.ndarray], explainer: SmoothGrad, tmp_path: Path) -> None:
    x, y = data
    out = tmp_path / "maps.zarr"
    maps = explainer.explain_dataset(x, y, out=out, batch_size=5, progress=False)
    np.testing.assert_array_equal(maps[:], explainer.explain(x, y))
    assert maps.chunks == (5, 8, 8) and maps.compressors  # compressed
    chunks = sorted(p.relative_to(out).as_posix() for p in (out / "c").rglob("*") if p.is_file())
    assert chunks == [f"c/{i}/0/0" for i in range(5)]
    assert maps.attrs["provenance"] == explainer.last_provenance
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and len(manifest["chunks"]) == 5
    with pytest.raises(FileExistsError, match="pass resume=True"):
        explainer.explain_dataset(x, y, out=out, batch_size=5, progress=False)


def test_uneven_batches_are_refused_by_a_zarr_store(data: tuple[np.ndarray, np.ndarray],
                                                   tmp_path: Path) -> None:
    x, _ = data
    with pytest.raises(ValueError, match=r"batch 2 \(samples 8-13\) has 6 samples after "
                                         "batches of 4"):
        Saliency(_model()).explain_dataset(iter([x[:4], x[4:8], x[8:14]]),
                                           out=tmp_path / "m.zarr", progress=False)


def test_errors_and_warnings_name_absolute_sample_indices(
        data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    bad = x.copy()
    bad[13, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^samples 12-15: inputs contain 1 non-finite"):
        Saliency(_model()).explain_dataset(bad, batch_size=4, progress=False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.ReLU(),
                                torch.nn.Linear(3 * 8 * 8, 1, bias=False)).eval()
    torch.nn.init.ones_(model[2].weight)
    dead = np.abs(x)
    dead[17] = -1.0  # relu is flat there: sample 17's map is identically zero
    with pytest.warns(UserWarning, match=r"identically zero for samples \[17\]"):
        Saliency(model).explain_dataset(dead, batch_size=4, progress=False)


def test_progress_writes_a_line_every_few_percent_in_logs() -> None:
    stream = io.StringIO()
    progress = Progress(None, 1000, stream)
    for _ in range(100):
        progress.update(10)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and lines[0].startswith("agnostic-saliency: 50 of 1000 samples (5%)")
    assert lines[-1].startswith("agnostic-saliency: 1000 of 1000 samples (100%)")
    silent = io.StringIO()
    Progress(False, 1000, silent).update(1000)
    assert silent.getvalue() == ""


def test_resume_and_npy_are_refused_with_the_next_step(tmp_path: Path) -> None:
    explainer = Saliency(_model())
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="a .npy file is written whole and cannot resume"):
        explainer.explain_dataset(x, out=tmp_path / "m.npy", resume=True)
    with pytest.raises(ValueError, match="expected '.npy', '.zarr'"):
        explainer.explain_dataset(x, out=tmp_path / "m.h5")


def test_progress_on_a_terminal_is_a_tqdm_bar_with_rate_and_eta() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(None, 100, stream)
    progress.update(40)
    progress.update(60)
    progress.close()
    text = stream.getvalue()
    assert "100/100" in text and "sample/s" in text and "<" in text  # elapsed<remaining
    assert "agnostic-saliency:" not in text  # no log lines on a terminal
