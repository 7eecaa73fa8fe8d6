"""The conformance suite against the JAX backend, plus what is specific to JAX.

Three kinds of model run the suite: a plain function closing over jnp weights, a
Flax NNX module built from real ``nnx.Linear``/``nnx.Conv`` layers and an Equinox
module. Without ``jax_enable_x64`` JAX computes float64 inputs in float32, so the
suites run with ``supports_float64 = False`` and :func:`test_float64_under_x64`
checks float64 maps against the float64 reference at 1e-10.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import pytest

from agnostic_saliency import Saliency, messages
from agnostic_saliency.backend import CallOptions
from agnostic_saliency.testing import BackendConformanceTests, ModelSpec, NumpyModel, make_spec

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nnx = pytest.importorskip("flax.nnx")
eqx = pytest.importorskip("equinox")

from agnostic_saliency_jax import JaxBackend  # noqa: E402
from jax_models import (  # noqa: E402
    BUILDERS,
    EqxEmbedded,
    EqxLookup,
    NnxEmbedded,
    SpecModule,
    build_equinox,
    build_function,
    build_nnx,
    kinds_and_params,
)

# --- the conformance suite ---------------------------------------------------------------


class _JaxSuite(BackendConformanceTests):
    layout = "channels_last"
    supports_float64 = False  # see test_float64_under_x64

    def backend(self) -> str:
        return "jax"

    def to_framework(self, array: np.ndarray) -> Any:
        return jnp.asarray(array)


class TestJaxBackend(_JaxSuite):
    detectable = False  # plain functions need backend="jax"
    expected_failures: ClassVar[dict[str, str]] = {
        "test_pickled_explainer_gives_identical_maps":
            "a lambda closing over jnp arrays cannot be pickled (deep copies are checked)",
        "test_layer_output_maps_are_the_l2_norm_of_its_gradient":
            "a plain function has no submodule that layer= could name (NNX and Equinox "
            "modules run the check)",
    }

    def build_model(self, spec: ModelSpec) -> Any:
        # One function per spec: a new closure is a new model to JAX and compiles
        # again, and the suite would mostly time XLA compiling identical programs.
        key = spec.name + "".join(f"{value.dtype}{value.shape}{value.tobytes().hex()}"
                                  for layer in spec.layers for value in vars(layer).values())
        return _FUNCTIONS.setdefault(key, build_function(spec))


_FUNCTIONS: dict[str, Callable[[Any], Any]] = {}


class TestFlaxNNX(_JaxSuite):
    def build_model(self, spec: ModelSpec) -> Any:
        return build_nnx(spec)

    def build_embedding_model(self, spec: ModelSpec, table: np.ndarray) -> tuple[Any, Any]:
        model = NnxEmbedded(spec, table)
        return model, model.embed


class TestEquinox(_JaxSuite):
    def build_model(self, spec: ModelSpec) -> Any:
        return build_equinox(spec)

    def build_embedding_model(self, spec: ModelSpec, table: np.ndarray) -> tuple[Any, Any]:
        kinds, params = kinds_and_params(spec)
        model = EqxEmbedded(EqxLookup(jnp.asarray(table)), SpecModule(params, kinds))
        return model, model.embed


# --- helpers -----------------------------------------------------------------------------


def _inputs(spec: ModelSpec, n: int = 5, seed: int = 1, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *spec.input_shape)).astype(dtype)


def _exact(spec: ModelSpec, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    weights = np.eye(spec.n_outputs)[targets]
    return NumpyModel(spec.cast(np.float64)).input_gradient(x.astype(np.float64), weights)


def _signed(model: Any, backend: Any = "jax", **kwargs: Any) -> Saliency:
    return Saliency(model, backend=backend, reducer=None, absolute=False, **kwargs)


each_kind = pytest.mark.parametrize("kind", list(BUILDERS))

# --- dtypes ------------------------------------------------------------------------------


@each_kind
def test_float64_under_x64(kind: str) -> None:
    spec, targets = make_spec("cnn", dtype=np.float64), np.array([0, 1, 2, 1, 0])
    x = _inputs(spec, dtype=np.float64)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error", messages.SaliencyWarning)
        maps = _signed(BUILDERS[kind](spec)).explain(x, targets)
    assert maps.dtype == np.float64
    np.testing.assert_allclose(maps, _exact(spec, x, targets), rtol=1e-10, atol=1e-12)


def test_float64_without_x64_is_computed_in_float32_with_a_warning() -> None:
    spec, targets = make_spec("mlp"), np.array([0, 1, 2, 1, 0])
    x = _inputs(spec, dtype=np.float64)
    with pytest.warns(messages.SaliencyWarning,
                      match="float64 but the model computes in float32") as record:
        maps = _signed(build_function(spec)).explain(x, targets)
    assert {w.filename for w in record if w.category is messages.SaliencyWarning} == {__file__}
    assert maps.dtype == np.float64
    np.testing.assert_allclose(maps, _exact(spec, x, targets), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_inputs_give_float32_maps(dtype: str) -> None:
    spec = make_spec("mlp")
    x = _inputs(spec).astype(jnp.dtype(dtype))
    maps = Saliency(build_equinox(spec)).explain(x, 1)
    expected = np.abs(_exact(spec, x.astype(np.float32), np.ones(5, int)))
    assert maps.dtype == np.float32
    np.testing.assert_allclose(maps, expected, rtol=2e-2, atol=1e-2)


def test_bfloat16_arrays_convert_to_float32() -> None:
    array = JaxBackend().to_numpy(jnp.arange(3, dtype=jnp.bfloat16))
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, [0, 1, 2])


# --- compilation and caching -------------------------------------------------------------


@each_kind
def test_equal_shapes_compile_once(kind: str) -> None:
    spec, backend = make_spec("cnn"), JaxBackend()
    explainer, x = Saliency(BUILDERS[kind](spec), backend=backend), _inputs(spec)
    first = explainer.explain(x, 1)
    for _ in range(9):
        np.testing.assert_array_equal(explainer.explain(x, 1), first)
    assert backend.trace_count == 1
    explainer.explain(_inputs(spec, n=3), 1)  # a new batch size traces once more
    explainer.explain(_inputs(spec, n=3, seed=2), 2)
    assert backend.trace_count == 2


def test_maps_reduced_in_the_program_compile_once_beside_the_signed_gradient() -> None:
    spec, backend = make_spec("cnn"), JaxBackend()
    model, x = build_function(spec), _inputs(spec)
    with backend.full_precision():  # two programs: on a GPU, TF32 would round them apart
        signed = _signed(model, backend).explain(x, 1)  # the plain gradient program
        for _ in range(3):
            maps = Saliency(model, backend=backend).explain(x, 1)  # |g| then max, in XLA
        assert backend.trace_count == 2
        unreduced = Saliency(model, backend=backend, reducer=None).explain(x, 1)
    assert backend.trace_count == 2  # |g| alone comes from NumPy, off the plain program
    np.testing.assert_allclose(maps, np.abs(signed).max(axis=-1), rtol=1e-6)
    np.testing.assert_array_equal(unreduced, np.abs(signed))


@each_kind
def test_second_model_does_not_evict_the_first(kind: str) -> None:
    backend, specs = JaxBackend(), [make_spec("mlp"), make_spec("cnn")]
    explainers = [Saliency(BUILDERS[kind](spec), backend=backend) for spec in specs]
    for _ in range(3):
        for spec, explainer in zip(specs, explainers, strict=True):
            explainer.explain(_inputs(spec), 0)
    assert backend.trace_count == 2 and backend.cache_len == 2


def test_cache_is_bounded() -> None:
    backend, specs = JaxBackend(cache_size=1), [make_spec("mlp"), make_spec("cnn")]
    explainers = [Saliency(build_function(spec), backend=backend) for spec in specs]
    for _ in range(2):
        for spec, explainer in zip(specs, explainers, strict=True):
            explainer.explain(_inputs(spec), 0)
    assert backend.trace_count == 4 and backend.cache_len == 1


def test_cache_does_not_keep_functions_alive() -> None:
    spec, backend = make_spec("mlp"), JaxBackend()
    function = build_function(spec)
    Saliency(function, backend=backend).explain(_inputs(spec), 0)
    reference = weakref.ref(function)
    del function
    gc.collect()
    assert reference() is None
    second = build_function(spec)
    Saliency(second, backend=backend).explain(_inputs(spec), 0)
    assert backend.cache_len == 1  # the collected function's entry was purged


def test_updated_nnx_params_are_used_without_recompiling() -> None:
    old, new = make_spec("cnn", seed=0), make_spec("cnn", seed=5)
    model, backend = build_nnx(old), JaxBackend()
    x, targets = _inputs(old), np.array([0, 1, 2, 1, 0])
    explainer = _signed(model, backend)
    np.testing.assert_allclose(explainer.explain(x, targets), _exact(old, x, targets),
                               rtol=1e-4, atol=1e-6)
    for module, fresh in zip(model.layers, build_nnx(new).layers, strict=True):
        if isinstance(module, (nnx.Linear, nnx.Conv)):
            module.kernel[...], module.bias[...] = fresh.kernel[...], fresh.bias[...]
    np.testing.assert_allclose(explainer.explain(x, targets), _exact(new, x, targets),
                               rtol=1e-4, atol=1e-6)
    assert backend.trace_count == 1


class _NotAPytree(nnx.Module, pytree=False):
    """An NNX module that is no pytree: the backend splits it with ``nnx.split``."""

    def __init__(self, spec: ModelSpec) -> None:
        self.body = build_nnx(spec)

    def __call__(self, x: Any) -> Any:
        return self.body(x)


class _Tied(nnx.Module):
    """One Linear layer applied twice: a shared Variable appears twice in the pytree."""

    def __init__(self, spec: ModelSpec) -> None:
        self.first = build_nnx(spec)
        self.second = self.first

    def __call__(self, x: Any) -> Any:
        return self.second(x) + jnp.tanh(self.first(x))


def test_nnx_module_that_is_no_pytree_is_split_and_explained_exactly() -> None:
    spec, backend = make_spec("cnn"), JaxBackend()
    model = _NotAPytree(spec)
    assert jax.tree.leaves(model) == [model]  # really no pytree
    x, targets = _inputs(spec), np.array([0, 1, 2, 1, 0])
    for _ in range(2):
        np.testing.assert_allclose(_signed(model, backend).explain(x, targets),
                                   _exact(spec, x, targets), rtol=1e-4, atol=1e-6)
    assert backend.trace_count == 1


def test_nnx_module_with_a_shared_layer_matches_jax_grad_of_nnx_merge() -> None:
    spec = make_spec("mlp")
    model, x = _Tied(spec), _inputs(spec)
    graphdef, state = nnx.split(model)

    def score(inputs: Any) -> Any:
        return nnx.merge(graphdef, state)(inputs)[:, 1].sum()

    with JaxBackend().full_precision():  # the two programs round alike only without TF32
        np.testing.assert_allclose(_signed(model).explain(x, 1), jax.grad(score)(x),
                                   rtol=1e-6, atol=1e-7)


def test_nnx_training_mode_is_checked_again_after_every_switch() -> None:
    spec = make_spec("mlp")
    model, x, backend = _Noisy(spec), _inputs(spec), JaxBackend()
    model.eval()
    maps = Saliency(model, backend=backend).explain(x, 0)
    model.train()
    with pytest.raises(ValueError, match=r"training mode.*\[dropout, norm\]"):
        Saliency(model, backend=backend).explain(x, 0)
    with pytest.raises(ValueError, match="training mode"):
        Saliency(model, backend=backend).predict(x)
    model.eval()
    np.testing.assert_array_equal(Saliency(model, backend=backend).explain(x, 0), maps)


def test_new_equinox_params_reuse_the_compiled_function() -> None:
    old, new = make_spec("cnn", seed=0), make_spec("cnn", seed=5)
    model, backend = build_equinox(old), JaxBackend()
    x, targets = _inputs(old), np.array([0, 1, 2, 1, 0])
    _signed(model, backend).explain(x, targets)
    updated = eqx.tree_at(lambda m: m.params, model, build_equinox(new).params)
    np.testing.assert_allclose(_signed(updated, backend).explain(x, targets),
                               _exact(new, x, targets), rtol=1e-4, atol=1e-6)
    assert backend.trace_count == 1


# --- detection and errors ----------------------------------------------------------------


def test_detection() -> None:
    spec, backend = make_spec("mlp"), JaxBackend()
    assert backend.can_handle(jax.jit(build_function(spec)))
    assert backend.can_handle(build_nnx(spec)) and backend.can_handle(build_equinox(spec))
    assert not backend.can_handle(build_function(spec)) and not backend.can_handle(np.ones(2))
    assert Saliency(jax.jit(build_function(spec))).backend.name == "jax"


def test_plain_function_needs_backend_jax() -> None:
    with pytest.raises(TypeError, match="pass backend='jax'"):
        Saliency(build_function(make_spec("mlp")))


def test_out_of_range_target_never_reaches_jax() -> None:
    calls = []

    class Spy(JaxBackend):
        def gradient(self, *args: Any) -> np.ndarray:
            calls.append(args)
            return super().gradient(*args)

    spec = make_spec("mlp")
    with pytest.raises(ValueError, match="target 3 out of range"):
        Saliency(build_function(spec), backend=Spy()).explain(_inputs(spec), 3)
    assert calls == []  # JAX indexing would have clamped 3 to 2 silently


def test_model_failure_names_the_input_shape() -> None:
    spec = make_spec("mlp")
    with pytest.raises(ValueError, match=r"model failed on inputs of shape \(\d, 4\)"):
        Saliency(build_function(spec), backend="jax").explain(np.ones((2, 4), np.float32), 0)
    weights = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"model failed on inputs of shape \(2, 4\)"):
        JaxBackend().gradient(build_function(spec), np.ones((2, 4), np.float32), weights,
                              None, CallOptions())


def test_operator_of_wrong_shape_is_refused() -> None:
    spec = make_spec("mlp")
    explainer = Saliency(build_function(spec), backend="jax",
                         operator=lambda model, x, targets: model(x))
    with pytest.raises(ValueError, match=r"operator returned scores of shape \(5, 3\)"):
        explainer.explain(_inputs(spec))


def test_operator_receives_targets_as_jax_arrays() -> None:
    spec, targets = make_spec("mlp"), np.array([0, 1, 2, 1, 0])

    def operator(model: Any, x: Any, chosen: Any) -> Any:
        return jnp.take_along_axis(model(x), chosen[:, None], axis=1)[:, 0]

    maps = _signed(build_function(spec), operator=operator).explain(_inputs(spec), targets)
    np.testing.assert_allclose(maps, _exact(spec, _inputs(spec), targets), rtol=1e-4, atol=1e-6)


def test_dict_outputs_are_reported_and_selectable() -> None:
    spec = make_spec("mlp")
    inner = build_function(spec)

    def model(x: Any) -> dict[str, Any]:
        return {"logits": inner(x), "hidden": x * 2}

    outputs = JaxBackend().predict(model, _inputs(spec), CallOptions())
    assert set(outputs) == {"logits", "hidden"} and isinstance(outputs["logits"], np.ndarray)
    with pytest.raises(TypeError, match="keys"):
        Saliency(model, backend="jax").explain(_inputs(spec), 0)
    selected = Saliency(model, backend="jax", output_selector=lambda out: out["logits"])
    np.testing.assert_array_equal(selected.explain(_inputs(spec), 0),
                                  Saliency(inner, backend="jax").explain(_inputs(spec), 0))


def test_non_array_outputs_are_returned_for_the_frontend_to_report() -> None:
    class Output:  # not a pytree: jit cannot return it, predict runs eagerly
        def __init__(self, logits: Any) -> None:
            self.logits = logits

    spec = make_spec("mlp")
    inner = build_function(spec)
    outputs = JaxBackend().predict(lambda x: Output(inner(x)), _inputs(spec), CallOptions())
    assert isinstance(outputs, Output)
    with pytest.raises(TypeError, match="an object of type Output"):
        Saliency(lambda x: Output(inner(x)), backend="jax").explain(_inputs(spec), 0)


def test_importing_the_plugin_imports_no_framework() -> None:
    code = ("import sys, agnostic_saliency_jax; "
            "print([m for m in ('jax', 'flax', 'equinox') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


# --- state and threads -------------------------------------------------------------------


class _Noisy(nnx.Module):
    def __init__(self, spec: ModelSpec) -> None:
        self.body = build_nnx(spec)
        self.dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=1))
        self.norm = nnx.BatchNorm(spec.n_outputs, rngs=nnx.Rngs(0))

    def __call__(self, x: Any) -> Any:
        return self.norm(self.dropout(self.body(x)))


def _leaves(model: Any) -> list[np.ndarray]:
    return [np.asarray(jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                       else leaf) for leaf in jax.tree.leaves(nnx.state(model))]


@pytest.mark.filterwarnings("ignore:saliency is identically zero")  # dropped out samples
def test_nnx_training_mode_is_refused_and_state_never_changes() -> None:
    spec = make_spec("mlp")
    model, x = _Noisy(spec), _inputs(spec)
    with pytest.raises(ValueError, match=r"training mode.*\[dropout, norm\]"):
        Saliency(model).explain(x, 0)
    before = _leaves(model)
    allowed = Saliency(model, allow_training_mode=True)
    np.testing.assert_array_equal(allowed.explain(x, 0), allowed.explain(x, 0))
    allowed.predict(x)
    for old, now in zip(before, _leaves(model), strict=True):
        np.testing.assert_array_equal(old, now)
    model.eval()
    assert np.all(np.isfinite(Saliency(model).explain(x, 0)))


@each_kind
def test_threads_agree_with_sequential(kind: str) -> None:
    spec = make_spec("cnn")
    explainer = Saliency(BUILDERS[kind](spec), backend=JaxBackend())
    jobs = [(_inputs(spec, n=4, seed=seed), seed % 3) for seed in range(8)]
    barrier = threading.Barrier(4)  # four threads start together on a cold cache

    def run(job: tuple[np.ndarray, int]) -> np.ndarray:
        barrier.wait(timeout=60)
        return explainer.explain(*job)

    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(run, jobs))
    for (x, target), maps in zip(jobs, parallel, strict=True):
        np.testing.assert_array_equal(maps, explainer.explain(x, target))


def test_out_of_memory_is_raised_as_it_is_and_recognised() -> None:
    """XLA's ``RESOURCE_EXHAUSTED`` reaches the frontend as it is (to retry with smaller
    chunks), and ``is_out_of_memory`` says what it is."""

    def greedy(x: Any) -> Any:  # sorts 2**38 copies of the batch: no host has that memory
        return x * 2.0 + jnp.sort(jnp.tile(x.ravel(), 1 << 38))[0]

    backend, x = JaxBackend(), np.ones((2, 3), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sort's uint64 index without x64
        with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED") as caught:
            backend.gradient(greedy, x, np.ones((2, 3), np.float32), None, CallOptions())
    assert backend.is_out_of_memory(caught.value)
    assert backend.is_out_of_memory(MemoryError())
    assert not backend.is_out_of_memory(ValueError("RESOURCE_EXHAUSTED"))
