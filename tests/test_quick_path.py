"""The short way through ``Saliency.explain`` (``agnostic_saliency._quick``): taken
for repeated calls with a prepared input signature and class indices, it gives the
general path's maps exactly, and the general path's errors and warnings; every
other call goes the general path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agnostic_saliency import Saliency, SaliencyWarning, messages
from agnostic_saliency.backend import STRICT
from agnostic_saliency.explainer import GradientExplainer
from agnostic_saliency.testing import NumpyModel, make_spec
from agnostic_saliency.testing.reference import ReferenceBackend

N = 5


class _Dispatching(ReferenceBackend):
    """Starts nothing: computes when waited for, like PyTorch on the CPU."""

    def dispatch_gradient(self, *args: Any, **kwargs: Any) -> Any:
        return lambda: self.gradient(*args, **kwargs)


class _Plain(ReferenceBackend):
    """Signed gradients for one-hot weights only: no magnitude maps, no class indices."""

    class_index_targets = False
    magnitude_maps = ()


class _Failing(_Dispatching):
    """Its dispatch fails once armed (a model that fails on some call)."""

    armed = False

    def dispatch_gradient(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            raise ValueError("the model failed")
        return super().dispatch_gradient(*args, **kwargs)


class _Zeroing(ReferenceBackend):
    """Signed gradients with the rows of samples 1 and 3 zeroed."""

    class_index_targets = False
    magnitude_maps = ()

    def gradient(self, *args: Any, **kwargs: Any) -> Any:
        gradient = super().gradient(*args, **kwargs)
        gradient[[1, 3]] = 0
        return gradient


BACKENDS = {"reference": ReferenceBackend, "dispatching": _Dispatching, "plain": _Plain}


@pytest.fixture
def general_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per call that went the general path (``_compute``)."""
    calls: list[int] = []
    compute = GradientExplainer._compute

    def counting(self: GradientExplainer, x: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(x))
        return compute(self, x, *args, **kwargs)

    monkeypatch.setattr(GradientExplainer, "_compute", counting)
    return calls


def _case(kind: str, dtype: Any = np.float32) -> tuple[NumpyModel, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    shape = (N, 7, 6, 3) if kind == "cnn" else (N, 6)
    return (NumpyModel(make_spec(kind)), rng.normal(size=shape).astype(dtype),
            rng.integers(0, 3, size=N))


def _expected(model: NumpyModel, x: np.ndarray, targets: np.ndarray, reducer: str | None,
              absolute: bool) -> np.ndarray:
    gradient = model.input_gradient(x.astype(np.float64), np.eye(3)[targets])
    maps = np.abs(gradient) if absolute else gradient
    if reducer is None or x.ndim != 4:
        return maps
    return {"max": np.max, "mean": np.mean}[reducer](maps, axis=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("absolute", [True, False])
@pytest.mark.parametrize("reducer", ["max", "mean", None])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_repeated_calls_take_the_short_way_to_the_general_paths_maps(
        general_calls: list[int], backend: str, kind: str, reducer: str | None,
        absolute: bool, dtype: Any) -> None:
    model, x, targets = _case(kind, dtype)
    explainer = Saliency(model, backend=BACKENDS[backend](), reducer=reducer,
                         absolute=absolute)
    first = explainer.explain(x, targets)
    assert general_calls == [N]  # the first call prepares the signature
    second = explainer.explain(x, targets)
    assert general_calls == [N]  # the second took the short way
    general = GradientExplainer.explain(explainer, x, targets)
    np.testing.assert_array_equal(second, general)
    np.testing.assert_array_equal(second, first)
    assert second.dtype == dtype and second.flags.writeable
    assert not np.shares_memory(second, first) and not np.shares_memory(second, x)
    tolerance = 1e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(second, _expected(model, x, targets, reducer, absolute),
                               rtol=tolerance, atol=tolerance)


def _subclass() -> type[Saliency]:
    class Mine(Saliency):
        pass

    return Mine


@pytest.mark.parametrize(("change", "make"), [
    ("targets as a list", lambda x, t: (x, t.tolist(), {})),
    ("predicted targets", lambda x, t: (x, None, {})),
    ("one int target", lambda x, t: (x, 1, {})),
    ("int32 targets", lambda x, t: (x, t.astype(np.int32), {})),
    ("one target for all", lambda x, t: (x, t[:1], {})),
    ("inputs not contiguous", lambda x, t: (np.asfortranarray(x), t, {})),
    ("several chunks", lambda x, t: (x, t, {"batch_size": 2})),
    ("an operator", lambda x, t: (x, t, {"operator": lambda m, x, t: m(x)[:, 0]})),
    ("a subclass", lambda x, t: (x, t, {"cls": _subclass()})),
])
def test_other_calls_go_the_general_path(general_calls: list[int], change: str,
                                         make: Any) -> None:
    model, x, targets = _case("mlp")
    x, targets, options = make(x, targets)
    cls = options.pop("cls", Saliency)
    explainer = cls(model, backend="reference", **options)
    first = explainer.explain(x, targets)
    second = explainer.explain(x, targets)
    assert len(general_calls) == 2, change
    np.testing.assert_array_equal(first, second)


def test_a_single_output_model_goes_the_general_path(general_calls: list[int]) -> None:
    explainer = Saliency(lambda x: x.sum(axis=1), backend="reference")
    x = np.ones((N, 3), np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(explainer.explain(x, np.zeros(N, np.int64)), 1)
    assert len(general_calls) == 2


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_bad_inputs_and_targets_of_a_prepared_call_raise_the_general_paths_errors(
        backend: str) -> None:
    model, x, targets = _case("mlp")
    explainer = Saliency(model, backend=BACKENDS[backend]())
    explainer.explain(x, targets)
    x[2, 4] = np.nan
    with pytest.raises(ValueError) as error:
        explainer.explain(x, targets)
    assert str(error.value) == messages.inputs_not_finite(1, 2)
    x[2, 4] = 0
    targets[1] = 3
    with pytest.raises(ValueError) as error:
        explainer.explain(x, targets)
    assert str(error.value) == messages.targets_out_of_range(3, 3)


def test_a_failing_dispatch_reports_bad_inputs_first_and_its_own_error_otherwise() -> None:
    model, x, targets = _case("mlp")
    backend = _Failing()
    explainer = Saliency(model, backend=backend)
    explainer.explain(x, targets)
    backend.armed = True
    with pytest.raises(ValueError, match="the model failed"):
        explainer.explain(x, targets)
    x[0, 0] = np.inf
    with pytest.raises(ValueError) as error:
        explainer.explain(x, targets)
    assert str(error.value) == messages.inputs_not_finite(1, 0)
    assert "the model failed" in str(error.value.__context__)


def test_zero_maps_of_a_prepared_call_warn_and_strict_raises(general_calls: list[int]) -> None:
    model, x, targets = _case("mlp")
    for strict in (False, True):
        explainer = Saliency(model, backend=_Zeroing(), strict=strict)
        for _ in range(2):
            if strict:
                with pytest.raises(RuntimeError, match=r"identically zero for samples \[1, 3\]"):
                    explainer.explain(x, targets)
            else:
                with pytest.warns(SaliencyWarning,
                                  match=r"identically zero for samples \[1, 3\]"):
                    maps = explainer.explain(x, targets)
                assert not maps[[1, 3]].any() and maps[[0, 2, 4]].all()
    assert general_calls == [N, N]  # one prepared call per explainer, then the short way


def test_a_prepared_call_sets_strict_to_its_explainers_and_leaves_it_as_it_was(
        general_calls: list[int]) -> None:
    # The short way skips setting the flag where it holds the explainer's value
    # already; inside a strict context a lenient explainer still only warns.
    model, x, targets = _case("mlp")
    lenient, strict = (Saliency(model, backend=_Zeroing(), strict=flag) for flag in (False, True))
    for explainer in (lenient, strict):
        with pytest.warns(SaliencyWarning) if explainer is lenient else pytest.raises(RuntimeError):
            explainer.explain(x, targets)  # prepares the call: the general path
    for ambient in (False, True):
        token = STRICT.set(ambient)
        try:
            with pytest.warns(SaliencyWarning, match=r"identically zero for samples \[1, 3\]"):
                lenient.explain(x, targets)
            assert STRICT.get() is ambient
            with pytest.raises(RuntimeError, match=r"identically zero for samples \[1, 3\]"):
                strict.explain(x, targets)
            assert STRICT.get() is ambient
        finally:
            STRICT.reset(token)
    assert general_calls == [N, N]  # both later calls of each took the short way
