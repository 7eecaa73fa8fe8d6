"""Provenance records: versions without importing a framework, every method's resolved
definitions, the targets rules, fingerprints that change with any input byte, and the
batch sizes the explainer reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import GradientInput, IntegratedGradients, Saliency, SmoothGrad, VarGrad
from agnostic_saliency._provenance import definitions, fingerprint, provenance, targets_rule
from agnostic_saliency.testing import NumpyModel, make_spec


def _model() -> NumpyModel:
    return NumpyModel(make_spec("cnn"))


def test_versions_come_from_metadata_and_import_no_framework() -> None:
    code = textwrap.dedent("""
        import json, sys
        import numpy as np
        from agnostic_saliency import Saliency
        from agnostic_saliency.testing import NumpyModel, make_spec
        explainer = Saliency(NumpyModel(make_spec("cnn")), backend="reference")
        x = np.random.default_rng(0).normal(size=(4, 7, 6, 3))
        explainer.explain_dataset(x, batch_size=3, progress=False)
        frameworks = [m for m in ("torch", "tensorflow", "jax", "keras", "zarr", "tqdm")
                      if m in sys.modules]
        print(json.dumps([explainer.last_provenance, frameworks]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    record, imported = json.loads(result.stdout)
    assert imported == []  # no framework, and no zarr or tqdm when nothing asks for them
    assert record["versions"]["agnostic-saliency"] == metadata.version("agnostic-saliency")
    assert record["versions"]["numpy"] == np.__version__
    assert not {"torch", "tensorflow", "jax", "keras"} & set(record["versions"])
    assert record["backend"] == "reference" and record["method"] == "Saliency"
    assert record["samples"] == 4 and record["batch_sizes"] == [1, 3]
    assert record["dtype"] == "float64" and record["output"] is None


@pytest.mark.parametrize(("explainer", "expected"), [
    (lambda m: Saliency(m, preset="captum"), {"reducer": None, "absolute": True}),
    (lambda m: GradientInput(m), {"reducer": "mean", "absolute": False}),
    (lambda m: SmoothGrad(m, preset="pair", seed=3),
     {"nb_samples": 25, "noise": 0.15, "noise_scale": "relative", "average": "square",
      "seed": 3, "reducer": None}),
    (lambda m: VarGrad(m, nb_samples=4), {"nb_samples": 4, "ddof": 1, "seed": None}),
    (lambda m: IntegratedGradients(m, steps=9, baseline_value=np.full((7, 6, 3), 0.5)),
     {"steps": 9, "quadrature": "trapezoid", "reducer": "mean"}),
])
def test_definitions_are_the_resolved_public_attributes(explainer: Any,
                                                        expected: dict[str, Any]) -> None:
    found = definitions(explainer(_model()))
    assert {key: found[key] for key in expected} == expected
    assert "model" not in found and json.loads(json.dumps(found)) == found
    if "steps" in expected:  # an array too large to list is named by shape and hash
        assert found["baseline_value"]["shape"] == [7, 6, 3]


def test_targets_rules() -> None:
    assert targets_rule(None) == "predicted class (argmax of the output)"
    assert targets_rule(np.int64(2)) == "class 2 for every sample"
    assert targets_rule(np.array([0, 1])) == "given class index per sample"
    assert targets_rule(np.ones((2, 3))) == "weights over the outputs, one row per sample"


def test_fingerprints_change_with_any_byte_target_or_id() -> None:
    x = np.random.default_rng(0).normal(size=(5, 4, 3)).astype(np.float32)
    base = fingerprint(x, np.arange(5), np.arange(5))
    assert fingerprint(x.copy(), np.arange(5), np.arange(5)) == base
    changed = x.copy()
    changed.reshape(-1).view(np.uint8)[37] ^= 1  # one bit of one value
    assert fingerprint(changed, np.arange(5), np.arange(5)) != base
    assert fingerprint(x, np.arange(1, 6), np.arange(5)) != base
    assert fingerprint(x, np.arange(5), np.arange(1, 6)) != base
    assert fingerprint(x, None, np.arange(5)) != fingerprint(x, 0, np.arange(5))
    assert fingerprint(x.astype(np.float64), np.arange(5), np.arange(5)) != base
    assert fingerprint(x.reshape(5, 3, 4), np.arange(5), np.arange(5)) != base


def test_batch_sizes_the_explainer_reports_are_recorded() -> None:
    """Batches of 4, 4 and 2 rows, each in model calls of at most 3 samples."""
    explainer = Saliency(_model(), backend="reference", batch_size=3)
    x = np.random.default_rng(0).normal(size=(10, 7, 6, 3))
    explainer.explain_dataset(x, 1, batch_size=4, progress=False)
    assert explainer.last_batch_sizes == [2]
    record = explainer.last_provenance
    assert record is not None
    assert record["model_batch_sizes"] == [1, 2, 3] and record["batch_sizes"] == [2, 4]
    assert record["targets"] == ["class 1 for every sample"]
    assert "last_batch_sizes" not in record["definitions"]


def test_a_record_for_any_call() -> None:
    explainer = Saliency(_model(), backend="reference")
    x = np.zeros((2, 7, 6, 3))
    record = provenance(explainer, samples=2, inputs_fingerprint=fingerprint(x),
                        targets=[targets_rule(None)], batch_sizes=[2], model_batch_sizes=None,
                        started="2026-01-01T00:00:00.000+00:00", dtype=np.float64)
    assert record["started"] < record["finished"] and record["device"] is None
    assert record["model_batch_sizes"] is None and record["dtype"] == "float64"
