"""A conformance suite that passes everything is worthless: each mutant must fail it.

All mutants run in one inner pytest session (one class each); the outer tests
then read which checks failed for which class.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

CLASS = """
class Test{name}(BackendConformanceTests):
    def backend(self):
        return {backend}

    def build_model(self, spec):
        return NumpyModel(spec)

    def build_embedding_model(self, spec, table):
        return layered_embedding_model(spec, table)
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
    "ReducesBeforeAbsolute": ["test_linear_image_map_is_channel_max_of_weights",
                              "test_raw_gradient_contract"],
    "ReusesItsBuffer": ["test_writeable_answers_are_handed_over"],
    "ReducesTheLastAxis": ["test_ambiguous_channel_axis_is_refused_then_explicit_axes_reduce"],
    "ScalesStructuredGradients": ["test_two_inputs_give_each_input_its_gradient",
                                  "test_layer_output_maps_are_the_l2_norm_of_its_gradient"],
    "ShiftsClassIndices": ["test_targets_reach_the_backend_in_its_declared_form",
                           "test_linear_vector_map_is_abs_weight_column",
                           "test_signed_gradient_matches_exact_gradient"],
}


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Run the suite once for every mutant and the unbroken backend; failed checks per class."""
    folder = tmp_path_factory.mktemp("mutants")
    source = ["import sys", f"sys.path.insert(0, {str(Path(__file__).parent)!r})",
              "from agnostic_saliency.testing import BackendConformanceTests, NumpyModel",
              "from agnostic_saliency.testing.composite import layered_embedding_model",
              "import mutants"]
    source += [CLASS.format(name=name, backend=f"mutants.{name}()") for name in MUST_FAIL]
    source.append(CLASS.format(name="Unbroken", backend="'reference'"))
    (folder / "test_mutants.py").write_text("\n".join(source))
    recorder = pytest.main([str(folder), "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                            "--junitxml", str(folder / "report.xml")])
    assert recorder in (0, 1), f"the inner session crashed with exit code {recorder}"
    return _failed_by_class(folder / "report.xml")


def _failed_by_class(report: Path) -> dict[str, set[str]]:
    import xml.etree.ElementTree as ElementTree

    failed: dict[str, set[str]] = defaultdict(set)
    passed: dict[str, int] = defaultdict(int)
    for case in ElementTree.parse(report).iter("testcase"):
        name = case.get("classname", "").split(".")[-1].removeprefix("Test")
        check = case.get("name", "").split("[")[0]
        if case.find("failure") is not None or case.find("error") is not None:
            failed[name].add(check)
        elif case.find("skipped") is None:
            passed[name] += 1
    failed["__passed_Unbroken"] = {str(passed["Unbroken"])}
    return failed


@pytest.mark.parametrize("mutant", sorted(MUST_FAIL))
def test_suite_rejects_broken_backend(failures: dict[str, set[str]], mutant: str) -> None:
    missing = sorted(set(MUST_FAIL[mutant]) - failures[mutant])
    assert not missing, f"{mutant} passed checks that should catch it: {missing}"


def test_unbroken_backend_passes_the_whole_suite(failures: dict[str, set[str]]) -> None:
    assert not failures["Unbroken"]
    assert int(next(iter(failures["__passed_Unbroken"]))) >= 40
