"""``agnostic_saliency.ray`` on a real one-node Ray (2 CPUs, loopback only).

The maps that Ray's actors compute, in whatever sharding and order Ray returns
them, equal the single-process ``explain_with_targets(x, t, sample_ids=ids)`` of
the same rows exactly; a worker killed mid-run is retried; a broken model
factory ends the run with its error on the driver.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import ray._private.ray_constants
import ray.cloudpickle
from ray_support import deadline, loopback_only

from agnostic_saliency import Saliency, SmoothGrad, VarGrad
from agnostic_saliency import ray as saliency_ray
from agnostic_saliency.testing.builders import build_jax_function, build_torch
from agnostic_saliency.testing.models import make_spec

# Helpers defined here travel to the actors by value (workers cannot import this file).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

N = 24  # not a multiple of the batch sizes 7 and 5: those runs have short batches
TORCH_SPEC = make_spec("cnn", "channels_first")
JAX_SPEC = make_spec("cnn")
FACTORIES = {"torch": (functools.partial(build_torch, TORCH_SPEC), TORCH_SPEC, {}),
             "jax": (functools.partial(build_jax_function, JAX_SPEC), JAX_SPEC,
                     {"backend": "jax"})}
SMOOTH = {"nb_samples": 3, "noise": 0.3, "seed": 11}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    with loopback_only():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(autouse=True)
def _deadline() -> Iterator[None]:
    """Fail instead of hanging: five minutes a test."""
    with deadline(300):
        yield


def _inputs(spec: Any, n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *spec.input_shape)).astype(np.float32)


def _dataset(x: np.ndarray, **columns: np.ndarray) -> Any:
    """Rows with a ``key`` (their position), in 5 blocks read in a shuffled block order."""
    rows = [{"image": row, "key": index, **{name: values[index] for name, values in
                                             columns.items()}} for index, row in enumerate(x)]
    return ray.data.from_items(rows, override_num_blocks=5).randomize_block_order(seed=3)


def _by_key(rows: list[dict[str, Any]], column: str) -> np.ndarray:
    return np.stack([row[column] for row in sorted(rows, key=lambda row: row["key"])])


@pytest.mark.parametrize(("framework", "concurrency"),
                         [("torch", 1), ("torch", 2), ("jax", 2)])
def test_maps_equal_single_process(local_ray: None, framework: str, concurrency: int) -> None:
    factory, spec, options = FACTORIES[framework]
    x = _inputs(spec)
    ds = saliency_ray.explain(_dataset(x), factory, method="saliency", batch_size=4,
                              concurrency=concurrency, num_cpus=0.5, **options)
    ds = saliency_ray.explain(ds, factory, method="SmoothGrad", output_column="smooth",
                              id_column="sample_id", batch_size=7, concurrency=concurrency,
                              num_cpus=0.5, **options, **SMOOTH)
    rows = ds.take_all()
    assert len(rows) == N

    ids = saliency_ray.content_ids(x)
    assert np.array_equal(_by_key(rows, "sample_id"), ids)
    model = factory()
    saliency, classes = Saliency(model, **options).explain_with_targets(x, sample_ids=ids)
    smooth, _ = SmoothGrad(model, **options, **SMOOTH).explain_with_targets(x, sample_ids=ids)
    assert np.array_equal(_by_key(rows, "saliency"), saliency)
    assert np.array_equal(_by_key(rows, "smooth"), smooth)
    assert np.array_equal(_by_key(rows, "saliency_target"), classes)
    # The noise really is per sample: other ids give other maps.
    other, _ = SmoothGrad(model, **options, **SMOOTH).explain_with_targets(x, sample_ids=ids + 1)
    assert not np.array_equal(other, smooth)

    summary = saliency_ray.summarize(row["smooth_provenance"] for row in rows)
    assert summary["rows"] == N and summary["method"] == "SmoothGrad"
    assert summary["backend"] == framework and summary["options"]["seed"] == SMOOTH["seed"]
    assert len(summary["rows_per_worker"]) <= concurrency
    assert sum(summary["rows_per_worker"].values()) == N


def test_given_ids_targets_through_parquet(local_ray: None, tmp_path: Path) -> None:
    factory, spec, _ = FACTORIES["torch"]
    x = _inputs(spec, seed=1)
    labels = np.arange(N) % 3
    options = {"nb_samples": 4, "seed": 5}
    ds = saliency_ray.explain(_dataset(x, label=labels), factory, method="vargrad",
                              target_column="label", id_column="key", batch_size=5, **options)
    ds.write_parquet(str(tmp_path / "maps"))
    back = ray.data.read_parquet(str(tmp_path / "maps"))
    rows = back.take_all()
    expected, _ = VarGrad(factory(), **options).explain_with_targets(
        x, labels, sample_ids=np.arange(N))
    assert np.array_equal(_by_key(rows, "saliency"), expected)
    assert np.array_equal(_by_key(rows, "saliency_target"), labels)
    assert "sample_id" not in rows[0]  # the given ids are the ids
    summary = saliency_ray.summarize(back)
    assert summary["rows"] == N and summary["method"] == "VarGrad"
    assert summary["options"] == options


def test_run_ray_job_writes_npy_and_zarr_in_id_order(local_ray: None, tmp_path: Path) -> None:
    import torch
    import zarr

    x = _inputs(TORCH_SPEC, seed=2)
    np.save(tmp_path / "x.npy", x)
    model = build_torch(TORCH_SPEC)
    torch.jit.save(torch.jit.trace(model, torch.from_numpy(x[:2])), tmp_path / "model.pt")
    summary = saliency_ray.run_ray_job(str(tmp_path / "model.pt"), tmp_path / "x.npy",
                                       tmp_path / "maps.npy", workers=2, method="smoothgrad",
                                       batch_size=6, progress=False, **SMOOTH)
    scripted = torch.jit.load(tmp_path / "model.pt")  # what the actors loaded
    expected, _ = SmoothGrad(scripted, **SMOOTH).explain_with_targets(x)  # ids 0..N-1
    assert np.array_equal(np.load(tmp_path / "maps.npy"), expected)
    assert summary["rows"] == N and summary["backend"] == "torch"
    assert json.loads((tmp_path / "maps.npy.json").read_text()) == summary
    assert ray.is_initialized()  # a cluster it did not start stays up

    targets = np.arange(N) % 3
    np.save(tmp_path / "targets.npy", targets)
    summary = saliency_ray.run_ray_job(FACTORIES["torch"][0], str(tmp_path / "x.npy"),
                                       str(tmp_path / "maps.zarr"), workers=1,
                                       targets=str(tmp_path / "targets.npy"), batch_size=8,
                                       progress=False)
    stored = zarr.open_array(str(tmp_path / "maps.zarr"), mode="r")
    assert stored.metadata.zarr_format == 3 and stored.chunks[0] == 8
    assert np.array_equal(stored[:], Saliency(model).explain(x, targets))
    assert stored.attrs["agnostic_saliency"]["rows"] == N


class DiesOnce:
    """A model factory whose model kills its process in its first forward pass, once
    for the whole run (a marker file remembers it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self) -> Any:
        import torch

        inner, marker = build_torch(TORCH_SPEC), self.marker

        class Dying(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: Any) -> Any:
                if not marker.exists():
                    marker.touch()
                    os._exit(1)  # the worker process dies mid-batch
                return self.inner(x)

        return Dying().eval()


def test_dead_worker_is_retried(local_ray: None, tmp_path: Path) -> None:
    x = _inputs(TORCH_SPEC, seed=4)
    marker = tmp_path / "died"
    ds = saliency_ray.explain(_dataset(x), DiesOnce(marker), method="smoothgrad",
                              id_column="key", batch_size=6, concurrency=2, **SMOOTH)
    rows = ds.take_all()
    assert marker.exists()  # a worker did die
    expected, _ = SmoothGrad(build_torch(TORCH_SPEC), **SMOOTH).explain_with_targets(
        x, sample_ids=np.arange(N))
    assert len(rows) == N
    assert np.array_equal(_by_key(rows, "saliency"), expected)


def broken_factory() -> Any:
    raise OSError("weights.pt is truncated")


def test_failing_factory_reaches_the_driver(local_ray: None) -> None:
    ds = saliency_ray.explain(_dataset(_inputs(TORCH_SPEC)), broken_factory, concurrency=1)
    with pytest.raises(Exception, match="weights.pt is truncated") as caught:
        ds.materialize()
    assert "broken_factory" in str(caught.value)


def test_gpu_actors_without_gpus_are_refused(local_ray: None, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _inputs(TORCH_SPEC))
    with pytest.raises(ValueError, match="gpus_per_worker=1 but the Ray cluster has 0 GPUs"):
        saliency_ray.run_ray_job(FACTORIES["torch"][0], tmp_path / "x.npy",
                                 tmp_path / "maps.npy", gpus_per_worker=1)


def test_actors_that_cannot_start_end_the_run(local_ray: None, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _inputs(TORCH_SPEC))
    # More CPUs per actor than the cluster has: Ray would wait for them without end.
    with pytest.raises(Exception, match="Timed out while starting actors"):
        saliency_ray.run_ray_job(FACTORIES["torch"][0], tmp_path / "x.npy",
                                 tmp_path / "maps.npy", workers=1, cpus_per_worker=3,
                                 actor_timeout_s=10, progress=False)


def test_unknown_method_and_option_fail_before_running() -> None:
    with pytest.raises(ValueError, match="method='gradcam' names no explainer"):
        saliency_ray.explain(None, broken_factory, method="gradcam")
    with pytest.raises(TypeError, match=r"Saliency takes no option \['nb_samples'\]"):
        saliency_ray.explain(None, broken_factory, nb_samples=3)


def test_unseeded_noise_gets_one_seed_for_every_actor() -> None:
    _, first = saliency_ray.resolve_method("smoothgrad", {})
    _, second = saliency_ray.resolve_method("smoothgrad", {})
    assert isinstance(first["seed"], int) and first["seed"] != second["seed"]
    assert saliency_ray.resolve_method("saliency", {})[1] == {}


def test_content_ids_depend_on_values_only() -> None:
    x = _inputs(TORCH_SPEC, n=6)
    ids = saliency_ray.content_ids(x)
    assert ids.dtype == np.int64 and (ids >= 0).all() and len(set(ids.tolist())) == 6
    assert np.array_equal(saliency_ray.content_ids(x[::-1]), ids[::-1])
    assert np.array_equal(saliency_ray.content_ids(x.astype(">f4")), ids)  # byte order
    assert saliency_ray.content_ids(x[:1] + 1e-6)[0] != ids[0]


def test_importing_the_package_never_imports_ray() -> None:
    code = ("import sys, agnostic_saliency, agnostic_saliency.ray\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'ray', 'torch', 'jax', 'tensorflow', 'keras', 'zarr', 'pyarrow'}))")
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True).stdout
    assert output.strip().splitlines()[-1] == "[]"


def test_the_command_line_on_ray_writes_the_store_it_writes_without(
        local_ray: None, tmp_path: Path) -> None:
    import torch

    from agnostic_saliency.cli import main

    x = _inputs(TORCH_SPEC, seed=5)
    np.save(tmp_path / "x.npy", x)
    model = build_torch(TORCH_SPEC)
    torch.jit.save(torch.jit.trace(model, torch.from_numpy(x[:2])), tmp_path / "model.pt")
    common = [str(tmp_path / "model.pt"), str(tmp_path / "x.npy"), "--method", "smoothgrad",
              "--nb-samples", "3", "--seed", "4", "--batch-size", "5", "--quiet"]
    assert main(["explain", *common, "--out", str(tmp_path / "alone.npy")]) == 0
    assert main(["explain", *common, "--out", str(tmp_path / "ray.npy"), "--ray",
                 "--workers", "2"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "ray.npy"), np.load(tmp_path / "alone.npy"))
