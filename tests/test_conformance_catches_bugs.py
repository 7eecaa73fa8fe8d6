"""A conformance suite that passes everything is worthless: each mutant must fail it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SUITE = """
import sys
sys.path.insert(0, {tests!r})
from agnostic_saliency.testing import BackendConformanceTests, NumpyModel
import mutants

class TestMutant(BackendConformanceTests):
    def backend(self):
        return {backend}

    def build_model(self, spec):
        return NumpyModel(spec)
"""

# Checks that must fail for each mutant (others may fail too).
MUST_FAIL = {
    "SignFlipped": ["test_signed_gradient_matches_exact_gradient",
                    "test_gradient_matches_finite_differences_of_predict",
                    "test_raw_gradient_contract"],
    "SpatiallyFlipped": ["test_linear_image_map_is_channel_max_of_weights",
                         "test_raw_gradient_contract"],
    "IgnoresTargets": ["test_linear_vector_map_is_abs_weight_column",
                       "test_different_targets_give_their_own_weights"],
    "BatchCoupled": ["test_samples_are_explained_independently",
                     "test_batch_size_does_not_change_maps",
                     "test_signed_gradient_matches_exact_gradient"],
    "LowPrecision": ["test_float64_inputs_give_float64_maps",
                     "test_gradient_matches_finite_differences_of_predict"],
    "ScaledPredictions": ["test_predict_matches_reference_forward",
                          "test_gradient_matches_finite_differences_of_predict"],
    "MutatesInputs": ["test_inputs_and_model_are_left_unchanged"],
}


@pytest.mark.parametrize("mutant", sorted(MUST_FAIL))
def test_suite_rejects_broken_backend(pytester: pytest.Pytester, mutant: str) -> None:
    tests_dir = str(Path(__file__).parent)
    pytester.makepyfile(test_mutant=SUITE.format(tests=tests_dir, backend=f"mutants.{mutant}()"))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    failed = {report.nodeid.split("::")[-1].split("[")[0]
              for report in result.reprec.getreports("pytest_runtest_logreport")
              if report.failed}
    missing = sorted(set(MUST_FAIL[mutant]) - failed)
    assert not missing, f"{mutant} passed checks that should catch it: {missing}"


def test_unbroken_backend_passes_the_whole_suite(pytester: pytest.Pytester) -> None:
    tests_dir = str(Path(__file__).parent)
    pytester.makepyfile(test_mutant=SUITE.format(tests=tests_dir, backend="'reference'"))
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=35)
