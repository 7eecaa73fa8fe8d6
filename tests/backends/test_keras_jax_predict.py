"""Keras-on-JAX predictions through a jitted forward pass: equal to Keras' eager call,
with changed weights and no retrace, eager for a model that cannot be traced, and the
same Deletion value as the eager path. Runs in a child process with ``KERAS_BACKEND=jax``
(:mod:`keras_process.keras_jax_predict_suite`)."""

from __future__ import annotations

from keras_process.children import ROOT, run_suite

SUITE = ROOT / "tests" / "keras_process" / "keras_jax_predict_suite.py"


def test_jax_predict_suite_in_a_child_process() -> None:
    run_suite(SUITE, "jax")
