"""The Ray Data actor of :func:`agnostic_saliency.ray.explain`, and what it needs.

Nothing here imports Ray or a framework: the actor class is a plain callable class
that Ray Data instantiates once per actor process, and the model is built by the
user's factory inside that process.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_saliency import __version__
from agnostic_saliency.explainer import GradientExplainer

__all__ = ["ExplainBatches", "content_ids", "resolve_method", "thread_env"]

#: Columns the actor adds besides the maps: ``<output>_target`` and ``<output>_provenance``.
TARGET_SUFFIX = "_target"
PROVENANCE_SUFFIX = "_provenance"
#: The id column added when the caller names none.
ADDED_ID_COLUMN = "sample_id"


def _methods() -> dict[str, type[GradientExplainer]]:
    from agnostic_saliency import methods
    from agnostic_saliency.saliency import Saliency

    return {"saliency": Saliency, "gradientinput": methods.GradientInput,
            "smoothgrad": methods.SmoothGrad, "squaregrad": methods.SquareGrad,
            "vargrad": methods.VarGrad, "integratedgradients": methods.IntegratedGradients}


def resolve_method(method: str | type[GradientExplainer], options: Mapping[str, Any]
                   ) -> tuple[type[GradientExplainer], dict[str, Any]]:
    """The explainer class named by ``method`` and its checked options.

    A method with a ``seed`` parameter and none given gets one drawn here, on the
    driver, so that every actor draws the same noise for a sample id.

    Raises
    ------
    ValueError
        If ``method`` names no explainer of the library.
    TypeError
        If ``options`` has a keyword the explainer does not take.
    """
    known = _methods()
    if isinstance(method, type) and issubclass(method, GradientExplainer):
        cls = method
    else:
        key = str(method).lower().replace("_", "").replace("-", "")
        if key not in known:
            raise ValueError(
                f"method={method!r} names no explainer; expected one of {sorted(known)} or "
                "a GradientExplainer subclass: pass e.g. method='smoothgrad'.")
        cls = known[key]
    checked = dict(options)
    accepted = _keywords(cls)
    unknown = sorted(set(checked) - accepted)
    if unknown:
        raise TypeError(f"{cls.__name__} takes no option {unknown}; its options are "
                        f"{sorted(accepted)}.")
    if "seed" in accepted and checked.get("seed") is None:
        checked["seed"] = int(np.random.SeedSequence().entropy) % 2**63  # type: ignore[arg-type]
    return cls, checked


def _keywords(cls: type) -> set[str]:
    """The keyword options of ``cls``: its own and those it passes on to its bases."""
    names: set[str] = set()
    for base in cls.__mro__:
        if isinstance(base, type) and issubclass(base, GradientExplainer):
            names |= {name for name, parameter in inspect.signature(base).parameters.items()
                      if parameter.kind is parameter.KEYWORD_ONLY}
    return names


def content_ids(inputs: Any) -> np.ndarray:
    """A stable id per sample, from the sample's bytes: the noise key when no id is given.

    The id of a sample depends only on its dtype, shape and values (a 63-bit BLAKE2b
    digest of its little-endian bytes), never on its position, its batch or the
    worker: a data set explained in any sharding and order gets the same ids, and
    ``explain_with_targets(x, t, sample_ids=content_ids(x))`` in one process gives
    the same maps. Equal samples share an id, hence their noise.

    Parameters
    ----------
    inputs
        A batch, ``(N, ...)``.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` non-negative int64.
    """
    x = np.asarray(inputs)
    little = x.dtype.newbyteorder("<") if x.dtype.byteorder == ">" else x.dtype
    header = f"{little.str}{x.shape[1:]}".encode()
    ids = np.empty(len(x), dtype=np.int64)
    for index in range(len(x)):
        digest = hashlib.blake2b(header, digest_size=8)
        digest.update(np.ascontiguousarray(x[index], dtype=little).tobytes())
        ids[index] = int.from_bytes(digest.digest(), "little") & (2**63 - 1)
    return ids


def thread_env(num_cpus: float, env_vars: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables that hold every framework's thread pools to ``num_cpus``.

    Set in an actor's ``runtime_env``, they act before any framework is imported in
    its process: OpenMP/BLAS (PyTorch, NumPy), TensorFlow's intra- and inter-op
    pools, XLA's CPU pool (JAX). The caller's own ``env_vars`` win.
    """
    threads = str(max(1, int(num_cpus)))
    env = {name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                      "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                      "TF_NUM_INTEROP_THREADS")}
    xla = os.environ.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = (f"{xla} --xla_cpu_multi_thread_eigen=false "
                        f"intra_op_parallelism_threads={threads}").strip()
    env.update(env_vars or {})
    return env


def build_model(factory: Callable[[], Any] | str | os.PathLike[str]) -> tuple[Any, str | None]:
    """The model of ``factory`` (called once), or of the saved model at that path,
    and the backend that loaded it (``None`` for a factory: detection decides)."""
    if isinstance(factory, (str, os.PathLike)):
        from agnostic_saliency._cli_explain import load_model

        model, backend = load_model(str(factory))
        return model, backend
    return factory(), None


class ExplainBatches:
    """Ray Data actor: one explainer per process, each batch's maps by its sample ids.

    Parameters
    ----------
    factory
        Picklable ``() -> model``, or the path of a saved model.
    method, options
        The explainer class and its options (see :func:`resolve_method`).
    column, target_column, id_column, output_column, batch_size, keep_inputs
        As in :func:`agnostic_saliency.ray.explain`.
    """

    def __init__(self, factory: Callable[[], Any] | str | os.PathLike[str],
                 method: type[GradientExplainer], options: dict[str, Any], column: str,
                 target_column: str | None, id_column: str | None, output_column: str,
                 batch_size: int, keep_inputs: bool = True) -> None:
        try:
            model, backend = build_model(factory)
        except Exception as error:
            raise RuntimeError(
                f"the model factory {_name(factory)} failed in a Ray actor on "
                f"{socket.gethostname()} (pid {os.getpid()}): {type(error).__name__}: {error}. "
                "Call it once in a plain Python process to debug it.") from error
        if backend is not None:
            options = {"backend": backend, **options}
        self.explainer = method(model, **options)
        self.column, self.target_column = column, target_column
        self.id_column, self.output_column = id_column, output_column
        self.batch_size, self.keep_inputs = batch_size, keep_inputs
        self.worker = {"host": socket.gethostname(), "pid": os.getpid(),
                       "node": _node_id(), "backend": self.explainer.backend.name,
                       "method": method.__name__, "options": _describe(options),
                       "library": __version__}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch with its maps, explained classes, ids and provenance added."""
        if self.column not in batch:
            raise KeyError(f"the data set has no column {self.column!r} (its columns: "
                           f"{sorted(batch)}); pass column= the name of the inputs' column.")
        started = time.perf_counter()
        x = np.asarray(batch[self.column])
        if x.dtype == object:
            x = np.stack(list(x))  # variable-shape tensor columns arrive as object arrays
        ids = self._ids(batch, x)
        targets = None if self.target_column is None else np.asarray(batch[self.target_column])
        maps, indices = self._explain(x, targets, ids)
        out = dict(batch)
        if not self.keep_inputs:
            del out[self.column]
        out[self.output_column] = maps
        if self.id_column is None:
            out[ADDED_ID_COLUMN] = ids
        if indices is not None:
            out[self.output_column + TARGET_SUFFIX] = np.asarray(indices, dtype=np.int64)
        record = {**self.worker, "batch": uuid.uuid4().hex, "rows": len(x),
                  "seconds": time.perf_counter() - started}
        out[self.output_column + PROVENANCE_SUFFIX] = np.full(len(x), json.dumps(record),
                                                              dtype=object)
        return out

    def _explain(self, x: np.ndarray, targets: np.ndarray | None, ids: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """The batch's maps, computed on a batch of the fixed size ``batch_size``.

        Ray cuts batches as blocks arrive, so a batch may be short. Its last row is
        repeated up to the fixed size (and to two rows at least): XLA compiles one
        program per input shape, whose kernels may round a row differently, and a
        one-row batch takes BLAS's matrix-vector path, which rounds differently from
        the matrix-matrix path. A map then does not depend on how Ray cut batches.
        """
        n = len(x)
        pad = max(self.batch_size, 2) - n
        if pad <= 0:
            return self.explainer.explain_with_targets(x, targets, sample_ids=ids)
        maps, indices = self.explainer.explain_with_targets(
            _repeat_last(x, pad), None if targets is None else _repeat_last(targets, pad),
            sample_ids=_repeat_last(ids, pad))
        return maps[:n], None if indices is None else indices[:n]

    def _ids(self, batch: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        if self.id_column is None:
            if ADDED_ID_COLUMN in batch:
                raise ValueError(f"the data set has a column {ADDED_ID_COLUMN!r}, which "
                                 "explain() adds when id_column is None; pass "
                                 f"id_column={ADDED_ID_COLUMN!r} to use it as the ids.")
            return content_ids(x)
        if self.id_column not in batch:
            raise KeyError(f"the data set has no id column {self.id_column!r} (its columns: "
                           f"{sorted(batch)}); pass id_column=None for ids from the contents.")
        return np.asarray(batch[self.id_column])


def _repeat_last(array: np.ndarray, count: int) -> np.ndarray:
    return np.concatenate([array, np.repeat(array[-1:], count, axis=0)])


def _name(factory: object) -> str:
    if isinstance(factory, (str, Path, os.PathLike)):
        return repr(os.fspath(factory))
    return getattr(factory, "__qualname__", None) or repr(factory)


def _node_id() -> str | None:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not inside Ray (a direct call in tests or a debugger)
        return None


def _describe(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options as JSON values (objects by their repr)."""
    return {key: value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)
            for key, value in options.items()}
