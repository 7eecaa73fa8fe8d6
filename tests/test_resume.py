"""A Zarr store survives ``kill -9`` and Ctrl-C: a resumed job completes it with the bytes
of an uninterrupted one, and refuses other data or definitions.

The job runs in a child process that is killed with SIGKILL at seeded random
times, several times over, each run resuming the last; its chunks are then
compared byte for byte with those of a run that was never interrupted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from agnostic_saliency import SmoothGrad
from agnostic_saliency.datasets import MANIFEST, Interrupted

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL")

N = 200
ROWS = 8

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from agnostic_saliency import SmoothGrad

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 14 * 14, 10)).eval()
    data = np.load(sys.argv[1], mmap_mode="r")
    print("ready", flush=True)
    SmoothGrad(model, nb_samples=16, seed=5).explain_dataset(
        data, out=sys.argv[2], resume=True, batch_size={rows}, progress=False)
    print("done", flush=True)
""").replace("{rows}", str(ROWS))


def _start(inputs: Path, out: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", SCRIPT, str(inputs), str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
    return child


def _done_chunks(out: Path) -> int:
    manifest = out / MANIFEST
    return len(json.loads(manifest.read_text())["chunks"]) if manifest.exists() else 0


def _wait_for_a_new_chunk(out: Path, before: int) -> None:
    """Wait until the job has recorded a chunk more than ``before`` (so it is under way)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if _done_chunks(out) > before:
                return
        except (OSError, ValueError):  # the store is being created
            pass
        time.sleep(0.005)
    raise AssertionError(f"no chunk recorded after {before} in 120 s")


def _chunk_bytes(out: Path) -> dict[str, bytes]:
    return {path.relative_to(out).as_posix(): path.read_bytes()
            for path in sorted((out / "c").rglob("*")) if path.is_file()}


def _metadata_without_attributes(out: Path) -> dict[str, object]:
    metadata = json.loads((out / "zarr.json").read_text())
    metadata.pop("attributes")
    return metadata


def test_killed_at_random_points_then_resumed_gives_the_uninterrupted_bytes(
        tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.random.default_rng(0).normal(size=(N, 3, 16, 16)).astype(np.float32))
    reference = tmp_path / "reference.zarr"
    child = _start(inputs, reference)
    assert child.wait(timeout=300) == 0, child.stderr.read() if child.stderr else ""

    out = tmp_path / "maps.zarr"
    rng = np.random.default_rng(27)
    done = [0]
    for _ in range(4):
        child = _start(inputs, out)
        _wait_for_a_new_chunk(out, done[-1])
        time.sleep(rng.uniform(0.0, 0.1))  # then anywhere: computing, writing a chunk or
        child.send_signal(signal.SIGKILL)  # the manifest
        child.wait(timeout=60)
        done.append(_done_chunks(out))  # the manifest is whole JSON after every kill
    assert done == sorted(done), done  # done chunks are never lost
    assert 0 < done[-1] < N // ROWS, done  # the kills did interrupt the job
    child = _start(inputs, out)
    assert child.wait(timeout=300) == 0, child.stderr.read() if child.stderr else ""

    assert _chunk_bytes(out) == _chunk_bytes(reference)
    assert len(_chunk_bytes(out)) == N // ROWS
    assert _metadata_without_attributes(out) == _metadata_without_attributes(reference)
    assert not list(out.rglob("*.partial"))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5)).eval()


def _interrupted_at(x: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, len(x), 5):
        if start == 5 * batch:
            raise KeyboardInterrupt
        yield x[start:start + 5]


def test_ctrl_c_then_resume_completes_and_other_data_is_refused(tmp_path: Path) -> None:
    x = np.random.default_rng(2).normal(size=(23, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "maps.zarr"
    explainer = SmoothGrad(_model(), nb_samples=3, seed=1)
    with pytest.raises(Interrupted) as interrupted:
        explainer.explain_dataset(_interrupted_at(x, 3), out=out, progress=False)
    assert interrupted.value.kept == 15 and interrupted.value.resumable
    assert "interrupted after 15 of ? samples; rerun with --resume" in str(interrupted.value)
    kept = _chunk_bytes(out)

    other = x.copy()
    other[2] += 1
    with pytest.raises(ValueError, match=r"samples 0-4 \(batch 0\) differ from the inputs"):
        explainer.explain_dataset(other, out=out, resume=True, batch_size=5, progress=False)
    with pytest.raises(ValueError, match=r"other definitions \(seed: 1 -> 2\)"):
        SmoothGrad(_model(), nb_samples=3, seed=2).explain_dataset(
            x, out=out, resume=True, batch_size=5, progress=False)
    with pytest.raises(ValueError, match=r"samples 0-5 \(batch 0\) differ"):
        explainer.explain_dataset(x, out=out, resume=True, batch_size=6, progress=False)
    assert _chunk_bytes(out) == kept  # nothing was merged

    maps = explainer.explain_dataset(x, out=out, resume=True, batch_size=5, progress=False)
    np.testing.assert_array_equal(maps[:], explainer.explain(x))
    assert explainer.last_provenance is not None
    assert explainer.last_provenance["batch_sizes"] == [3, 5]  # batches 3 and 4 computed now
