"""Registry and detection: names, plugins that fail, explicit overrides, messages."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata

import numpy as np
import pytest
from fake_plugins import EagerBackend, FakeBackend, FakeModel, Incomplete, RaisingBackend

from agnostic_saliency import Saliency, SaliencyWarning, get_backend, list_backends, registry
from agnostic_saliency import register_backend as register
from agnostic_saliency.testing import NumpyModel, ReferenceBackend, make_spec

GROUP = registry.ENTRY_POINT_GROUP


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with a private copy of the registry's state."""
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    monkeypatch.setattr(registry, "_failed", set(registry._failed))
    monkeypatch.setattr(registry, "_entry_points", None)
    yield


def _with_entry_points(monkeypatch: pytest.MonkeyPatch, *entries: tuple[str, str]) -> None:
    real = list(metadata.entry_points(group=GROUP))
    fake = [metadata.EntryPoint(name, value, GROUP) for name, value in entries]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: real + fake)


def test_installed_backends_are_listed_and_cached() -> None:
    assert {"reference", "torch"} <= set(list_backends())
    assert get_backend("reference") is get_backend("reference")
    assert isinstance(get_backend("reference"), ReferenceBackend)


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'pytoch'.*'reference'|reference"):
        get_backend("pytoch")


def test_plugin_from_entry_point_is_discovered_and_detected(
        isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_entry_points(monkeypatch, ("fake", "fake_plugins:FakeBackend"))
    assert "fake" in list_backends()
    assert isinstance(Saliency(FakeModel()).backend, FakeBackend)


def test_plugin_that_fails_to_import_warns_and_is_skipped(
        isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_entry_points(monkeypatch, ("broken", "no_such_module_xyz:Backend"))
    # Detection loads only the plugins named after the model's framework first.
    assert Saliency(NumpyModel(make_spec("mlp"))).backend.name == "reference"
    with pytest.warns(SaliencyWarning,
                      match="'broken'.*failed to load.*ModuleNotFoundError") as record:
        with pytest.raises(TypeError, match="unsupported model type"):
            Saliency(object())  # no backend claims it: every plugin is asked
    assert {w.filename for w in record if w.category is SaliencyWarning} == {__file__}
    assert "broken" not in list_backends()


def test_plugin_object_lacking_the_protocol_is_reported(
        isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_entry_points(monkeypatch, ("incomplete", "fake_plugins:Incomplete"))
    assert "incomplete" in list_backends()
    with pytest.warns(SaliencyWarning, match="not a backend: it lacks.*modules"):
        registry._all_backends()
    assert "incomplete" not in list_backends()


def test_two_plugins_with_one_name_are_reported(
        isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_entry_points(monkeypatch, ("fake", "fake_plugins:FakeBackend"),
                       ("fake", "fake_plugins:EagerBackend"))
    with pytest.warns(SaliencyWarning, match="several installed plugins claim.*'fake'"):
        names = list_backends()
    assert names.count("fake") == 1


def test_can_handle_that_raises_does_not_break_detection(isolated: None) -> None:
    register(RaisingBackend())
    with pytest.warns(SaliencyWarning, match="'raising' raised while checking.*exploded") as record:
        backend = Saliency(NumpyModel(make_spec("mlp"))).backend
    assert {w.filename for w in record if w.category is SaliencyWarning} == {__file__}
    assert backend.name == "reference"


def test_higher_priority_backend_is_asked_first(isolated: None) -> None:
    register(EagerBackend())
    assert Saliency(NumpyModel(make_spec("mlp"))).backend.name == "eager"


def test_explicit_backend_wins_over_detection(isolated: None) -> None:
    register(EagerBackend())
    model = NumpyModel(make_spec("mlp"))
    assert Saliency(model, backend="reference").backend.name == "reference"
    custom = FakeBackend()
    assert Saliency(model, backend=custom).backend is custom


def test_subclass_of_a_framework_type_is_detected() -> None:
    class MyModel(NumpyModel):
        pass

    assert Saliency(MyModel(make_spec("mlp"))).backend.name == "reference"


def test_register_refuses_a_taken_name_without_replace(isolated: None) -> None:
    first, second = FakeBackend(), FakeBackend()
    assert register(first) is first
    assert register(first) is first
    with pytest.raises(ValueError, match="already registered as 'fake'; pass replace=True"):
        register(second)
    register(second, replace=True)
    assert get_backend("fake") is second


def test_register_refuses_an_installed_plugin_name(isolated: None) -> None:
    with pytest.raises(ValueError, match="already registered as 'reference'"):
        register(ReferenceBackend())


def test_register_refuses_an_object_that_is_not_a_backend(isolated: None) -> None:
    with pytest.raises(TypeError, match=r"not a backend: it lacks \[modules, priority"):
        register(Incomplete())  # type: ignore[arg-type]


def test_plain_function_needs_an_explicit_backend() -> None:
    def forward(x: np.ndarray) -> np.ndarray:
        return x

    with pytest.raises(TypeError, match="plain function 'test_plain_function.*forward'.*"
                                        "backend='jax'"):
        Saliency(forward)


def test_unknown_model_type_names_the_supported_kinds() -> None:
    with pytest.raises(TypeError, match="unsupported model type fake_plugins.FakeModel.*"
                                        "Pass backend= to force one"):
        Saliency(FakeModel())


def test_framework_model_without_its_backend_says_what_to_install(
        isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(registry, "_registered", {"reference": get_backend("reference")})
    monkeypatch.setattr(registry, "_entry_points", {})
    with pytest.raises(TypeError, match=r"comes from 'torch'.*agnostic-saliency\[torch\]"):
        Saliency(torch.nn.Linear(2, 2))


def test_nothing_installed_says_how_to_install(
        isolated: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registered", {})
    monkeypatch.setattr(registry, "_entry_points", {})
    with pytest.raises(TypeError, match=r"no saliency backend is installed.*\[all\]"):
        Saliency(FakeModel())
