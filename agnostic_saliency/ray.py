"""Saliency maps of a Ray Data set, streamed through a pool of actors (``pip install
'agnostic-saliency[ray]'``).

Each actor builds the model once with the caller's factory and keeps one explainer;
batches stream through ``Dataset.map_batches`` and never gather on the driver.
Seeded noise (SmoothGrad and its kin) is keyed by each row's id, never by its
position, so the maps do not depend on the sharding, the number of actors or the
order in which Ray returns rows: they equal
``explainer.explain_with_targets(x, targets, sample_ids=ids)`` in one process.

Importing :mod:`agnostic_saliency` never imports this module or Ray.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_saliency._ray_actor import (
    PROVENANCE_SUFFIX,
    ExplainBatches,
    content_ids,
    resolve_method,
    thread_env,
)
from agnostic_saliency._ray_summary import Summary
from agnostic_saliency.explainer import GradientExplainer

__all__ = ["content_ids", "explain", "run_ray_job", "summarize"]

ModelFactory = Callable[[], Any] | str | os.PathLike[str]

#: Retries of a dead actor and of its batches; finite, so a model that always
#: crashes its process ends the run with an error instead of restarting forever.
DEFAULT_RESTARTS = 3


def _ray() -> Any:
    try:
        import ray
        import ray.data  # the Data library: the [data] extra
    except ImportError as error:
        raise ImportError(f"agnostic_saliency.ray needs Ray Data ({error}): "
                          "pip install 'agnostic-saliency[ray]'") from error
    return ray


def explain(ds: Any, model_factory: ModelFactory, *,
            method: str | type[GradientExplainer] = "saliency", column: str = "image",
            target_column: str | None = None, id_column: str | None = None,
            output_column: str = "saliency", keep_inputs: bool = True,
            batch_size: int = 32, concurrency: int = 2,
            num_gpus: float = 0, num_cpus: float = 1, env_vars: Mapping[str, str] | None = None,
            ray_remote_args: Mapping[str, Any] | None = None,
            **method_options: Any) -> Any:
    """The maps of ``ds[column]`` as a new column, computed by a pool of Ray actors.

    Lazy, as Ray Data is: nothing runs until the result is consumed (written,
    iterated, materialized).

    Parameters
    ----------
    ds
        A ``ray.data.Dataset`` whose ``column`` holds the inputs, one sample per row.
    model_factory
        A picklable ``() -> model`` (a module-level function, a ``functools.partial``)
        that each actor calls once, or the path of a saved model that every node can
        read (loaded as ``agnostic-saliency explain`` loads it).
    method
        An explainer's name (``"saliency"``, ``"smoothgrad"``, ``"integratedgradients"``,
        ...) or class; ``method_options`` go to it (``seed=``, ``nb_samples=``,
        ``backend=``, ``reducer=``...). A method with a ``seed`` and none given gets
        one drawn on the driver, shared by every actor and kept in the provenance.
    column, target_column
        The inputs' column; the targets' column (class indices or weight rows), or
        ``None`` for the predicted class.
    id_column
        Non-negative integer ids that key each row's noise. ``None`` adds
        ``"sample_id"``: :func:`content_ids` of the row's input.
    output_column
        The maps' column. ``<output_column>_target`` gets the class explained (when
        there is one), ``<output_column>_provenance`` a JSON record of the batch's
        actor (host, pid, node, backend, method, options, versions), read by
        :func:`summarize`.
    keep_inputs
        Keep the inputs' column in the result; ``False`` drops it (the maps are
        what is written, and the inputs would double the traffic).
    batch_size, concurrency
        Rows per call of an actor; the number of actors.
    num_gpus, num_cpus
        Per actor. The framework thread pools of an actor are held to ``num_cpus``
        (environment variables set in its ``runtime_env``). A factory puts the model
        on the GPU that Ray assigns (``CUDA_VISIBLE_DEVICES``).
    env_vars
        More environment variables for the actors, e.g. ``{"KERAS_BACKEND": "jax"}``.
    ray_remote_args
        More options for the actors (``max_restarts``, ``max_task_retries``,
        ``memory``, ``runtime_env``...); ours are defaults.

    Returns
    -------
    ray.data.Dataset
        ``ds`` with the added columns.

    Raises
    ------
    ValueError, TypeError
        On the driver, before anything runs, for an unknown method or option. Errors
        of the factory or of a batch reach the driver when the data set runs.
    """
    ray = _ray()
    cls, options = resolve_method(method, method_options)
    remote = {"max_restarts": DEFAULT_RESTARTS, "max_task_retries": DEFAULT_RESTARTS,
              **(ray_remote_args or {})}
    runtime_env = dict(remote.pop("runtime_env", None) or {})
    runtime_env["env_vars"] = thread_env(num_cpus, {**runtime_env.get("env_vars", {}),
                                                    **(env_vars or {})})
    return ds.map_batches(
        ExplainBatches,
        fn_constructor_args=(model_factory, cls, options, column, target_column, id_column,
                             output_column, batch_size, keep_inputs),
        batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus, num_gpus=num_gpus or None, runtime_env=runtime_env, **remote)


def summarize(source: Any, column: str = "saliency" + PROVENANCE_SUFFIX) -> dict[str, Any]:
    """One summary of a run from its provenance column: rows, batches, rows per worker
    and per node, method, backend, options, versions.

    Parameters
    ----------
    source
        A Ray Dataset (only ``column`` is read: cheap on Parquet written by a run),
        or an iterable of the column's values.
    """
    summary = Summary()
    if hasattr(source, "iter_batches"):
        for batch in source.select_columns([column]).iter_batches(batch_format="numpy"):
            summary.add(batch[column])
    else:
        summary.add(source)
    return summary.result()


def run_ray_job(model_path_or_factory: ModelFactory, data: str | os.PathLike[str],
                out: str | os.PathLike[str], *, address: str | None = None, workers: int = 2,
                gpus_per_worker: float = 0, cpus_per_worker: float = 1,
                method: str | type[GradientExplainer] = "saliency",
                targets: int | str | Any = None, batch_size: int = 32, progress: bool = True,
                actor_timeout_s: float = 600,
                **options: Any) -> dict[str, Any]:
    """Explain the array file ``data`` on Ray and write the maps to ``out`` in id order.

    What ``agnostic-saliency explain --ray [ADDRESS]`` runs. Sample ``i`` is row ``i``
    of ``data`` and of ``out``, and its id, so the maps equal those of the command
    without ``--ray``.

    Parameters
    ----------
    model_path_or_factory
        A saved model's path or a picklable ``() -> model`` (see :func:`explain`).
    data
        A ``.npy`` file or a ``.zarr`` array that every worker can read (a shared
        file system on several machines).
    out
        ``.npy`` (summary in ``<out>.json``) or ``.zarr`` (summary in its attributes).
    address
        A running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
        ``None`` starts Ray on this machine for the run.
    workers, gpus_per_worker, cpus_per_worker
        Actors, and GPUs and CPUs per actor.
    targets
        ``None`` for the predicted class, an int for every sample, or class indices
        (an array or the path of a ``.npy``).
    actor_timeout_s
        Longest wait for the actors to start before the run fails (a cluster short
        of the resources they ask for) instead of waiting forever.
    options
        The method's options (``seed=``, ``backend=``...).

    Returns
    -------
    dict
        The run's summary (see :func:`summarize`).
    """
    from agnostic_saliency import _ray_io

    ray = _ray()
    path = str(data)
    n = _ray_io.array_length(path)
    targets = os.fspath(targets) if isinstance(targets, Path) else targets
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or "local",
                 include_dashboard=False if address is None else None,
                 log_to_driver=progress)
    context = ray.data.DataContext.get_current()
    previous = context.enable_progress_bars, context.wait_for_min_actors_s
    try:
        context.enable_progress_bars = progress
        # Every actor starts before the first batch (so all share the work), and actors
        # that cannot start end the run with Ray's error instead of a wait without end.
        context.wait_for_min_actors_s = int(actor_timeout_s)
        _check_gpus(ray, gpus_per_worker)
        ds = _id_blocks(ray, n, batch_size).map_batches(
            _ray_io.read_rows, fn_kwargs={"path": path, "column": "image", "targets": targets},
            # Reading rows is light: its tasks reserve no CPU, so actors that hold
            # every CPU do not starve the tasks that feed them.
            batch_format="numpy", batch_size=None, num_cpus=0)
        result = explain(ds, model_path_or_factory, method=method, column="image",
                         keep_inputs=False,
                         target_column=None if targets is None else "target", id_column="id",
                         batch_size=batch_size, concurrency=workers, num_gpus=gpus_per_worker,
                         num_cpus=cpus_per_worker, **options)
        return _ray_io.write_maps(result, out, n, batch_size=batch_size)
    finally:
        context.enable_progress_bars, context.wait_for_min_actors_s = previous
        if started:
            ray.shutdown()


def _id_blocks(ray: Any, n: int, batch_size: int, batches_per_block: int = 8) -> Any:
    """The ids ``0..n-1`` as a data set of blocks of a few batches each.

    Made from the driver's memory (8 bytes a row) rather than ``ray.data.range``,
    whose read tasks need a CPU that actors holding every CPU never give back. A
    block is what one reading task holds, hence a few batches, not ``n / workers``.
    """
    rows = max(1, batch_size * batches_per_block)
    ids = np.arange(n, dtype=np.int64)
    return ray.data.from_numpy([ids[start:start + rows] for start in range(0, n, rows)])


def _check_gpus(ray: Any, gpus_per_worker: float) -> None:
    """Refuse GPU actors on a cluster without GPUs (Ray would wait for them forever)."""
    available = float(ray.cluster_resources().get("GPU", 0))
    if gpus_per_worker > available:
        raise ValueError(f"gpus_per_worker={gpus_per_worker} but the Ray cluster has "
                         f"{available:g} GPUs: use 0, or start Ray on machines with GPUs "
                         "(ray start --num-gpus=N).")

