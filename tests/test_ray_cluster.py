"""``agnostic_saliency.ray`` on a two-node Ray cluster on loopback (a head and one worker
node, one CPU each, both on this machine): actors on both nodes, the same maps."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from agnostic_saliency import SmoothGrad
from agnostic_saliency import ray as saliency_ray
from agnostic_saliency.testing.builders import build_torch
from agnostic_saliency.testing.models import make_spec

SPEC = make_spec("cnn", "channels_first")
FACTORY = functools.partial(build_torch, SPEC)
OPTIONS = {"nb_samples": 3, "noise": 0.3, "seed": 2}
N = 32


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Cluster]:
    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    try:
        cluster.add_node(**{key: value for key, value in node.items()
                            if key != "include_dashboard"})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_two_nodes_give_the_single_process_maps(two_nodes: Cluster, tmp_path: Path) -> None:
    assert len([node for node in ray.nodes() if node["Alive"]]) == 2
    x = np.random.default_rng(7).normal(size=(N, *SPEC.input_shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)  # one machine: both nodes read the same file
    summary = saliency_ray.run_ray_job(FACTORY, tmp_path / "x.npy", tmp_path / "maps.zarr",
                                       workers=2, method="smoothgrad", batch_size=4,
                                       progress=False, **OPTIONS)
    expected, _ = SmoothGrad(FACTORY(), **OPTIONS).explain_with_targets(x)
    import zarr

    assert np.array_equal(zarr.open_array(str(tmp_path / "maps.zarr"), mode="r")[:], expected)
    assert summary["rows"] == N
    # One CPU per node and one per actor: the two actors ran on the two nodes.
    assert len(summary["rows_per_node"]) == 2
    assert sum(summary["rows_per_node"].values()) == N
