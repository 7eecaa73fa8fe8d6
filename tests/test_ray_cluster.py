"""``agnostic_saliency.ray`` on a two-node Ray cluster on loopback (a head and one worker
node, one CPU each, both on this machine): actors on both nodes, the same maps."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pytest
import ray
import ray._private.ray_constants
from ray.cluster_utils import Cluster
from ray_support import deadline, loopback_only

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
    with loopback_only():
        node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
        cluster = Cluster(initialize_head=True, head_node_args=node)
        try:
            cluster.add_node(**{key: value for key, value in node.items()
                                if key != "include_dashboard"})
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            # Blocks all live on the head node: without this, Ray would send every
            # batch to the head node's actor, which is free again by the next one.
            context.execution_options.actor_locality_enabled = False
            context.wait_for_min_actors_s = 120  # both actors up before the first batch
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


@pytest.fixture(autouse=True)
def _deadline() -> Iterator[None]:
    """Fail instead of hanging: five minutes a test."""
    with deadline(300):
        yield


def test_two_nodes_give_the_single_process_maps(two_nodes: Cluster) -> None:
    assert len([node for node in ray.nodes() if node["Alive"]]) == 2
    x = np.random.default_rng(7).normal(size=(N, *SPEC.input_shape)).astype(np.float32)
    rows = [{"image": image, "key": index} for index, image in enumerate(x)]
    ds = ray.data.from_items(rows, override_num_blocks=8)  # 8 blocks ready at once
    result = saliency_ray.explain(ds, FACTORY, method="smoothgrad", batch_size=4,
                                  concurrency=2, **OPTIONS).take_all()
    result.sort(key=lambda row: row["key"])
    ids = saliency_ray.content_ids(x)
    expected, _ = SmoothGrad(FACTORY(), **OPTIONS).explain_with_targets(x, sample_ids=ids)
    assert np.array_equal(np.stack([row["saliency"] for row in result]), expected)
    summary = saliency_ray.summarize(row["saliency_provenance"] for row in result)
    assert summary["rows"] == N
    # One CPU per node and one per actor: the two actors ran on the two nodes.
    assert len(summary["rows_per_node"]) == 2
    assert sum(summary["rows_per_node"].values()) == N
