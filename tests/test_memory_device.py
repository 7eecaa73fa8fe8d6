"""``batch_size="auto"`` on a device, and the out-of-memory back-off on the CPU.

No GPU is needed: a backend that reports fixed device numbers (and a peak counter
that rises with each call's samples, as an allocator's would) shows that the budget
comes from the device's free memory and the learned chunk from the device's peak.
Each built-in backend reports ``None`` (the host) for a model on the CPU. Real
allocation failures on the CPU (a model that asks for petabytes above a batch size)
show that PyTorch's, JAX's and TensorFlow's errors halve the chunk, and that one
sample that does not fit raises the framework's error with a note.
"""

from __future__ import annotations

import sys
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from agnostic_saliency import Saliency, SaliencyWarning
from agnostic_saliency._memory import default_budget, first_chunk, learned_chunk
from agnostic_saliency.backend import DeviceMemory
from agnostic_saliency.testing.models import Dense, ModelSpec
from agnostic_saliency.testing.reference import NumpyModel, ReferenceBackend

GIB, MIB = 1 << 30, 1 << 20
FEATURES = 8192  # float64: 64 KiB a sample, a first guess of 4 MiB a sample


class FakeDevice(ReferenceBackend):
    """The reference backend, with a model "on a device" of ``free`` bytes whose
    allocator holds ``in_use`` bytes and peaks at ``in_use + cost * samples`` during
    a call (``cost=None``: a device without a peak counter)."""

    name = "fake-device"

    def __init__(self, free: int, cost: int | None, peak: int = 0) -> None:
        self.free, self.cost, self.in_use = free, cost, GIB
        self.peak = max(peak, self.in_use)
        self.calls: list[int] = []
        self.reads = 0

    def device_memory(self, model: Any) -> DeviceMemory | None:
        self.reads += 1
        return DeviceMemory(self.free, 80 * GIB, self.in_use,
                            None if self.cost is None else self.peak)

    def gradient(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(len(inputs))
        if self.cost is not None:
            self.peak = max(self.peak, self.in_use + self.cost * len(inputs))
        return super().gradient(model, inputs, *args, **kwargs)


def _dense(features: int = FEATURES) -> tuple[NumpyModel, np.ndarray]:
    rng = np.random.default_rng(0)
    spec = ModelSpec("dense", (Dense(rng.normal(size=(features, 2)), np.zeros(2)),),
                     (features,))
    return NumpyModel(spec), rng.normal(size=(500, features))


def test_budget_is_a_tenth_of_the_free_device_memory_and_chunks_follow_the_device_peak() -> None:
    model, x = _dense()
    backend = FakeDevice(free=12 * GIB, cost=8 * MIB)
    maps = Saliency(model, backend=backend, reducer=None).explain(x, 1)
    budget = int(12 * GIB * 0.1)
    guess = budget // (FEATURES * 8 * 64)
    learned = budget // (8 * MIB)
    assert (guess, learned) == (307, 153)  # the arithmetic of the rule, by hand
    assert backend.calls == [guess, learned, len(x) - guess - learned]
    np.testing.assert_array_equal(maps, np.broadcast_to(np.abs(model.spec.layers[0].weight[:, 1]),
                                                        x.shape))
    # The host budget (at least 1 GiB, 10 % of MemAvailable) would give other chunks.
    assert default_budget() != budget


def test_a_device_with_little_free_memory_gets_all_of_it_and_never_the_floor() -> None:
    model, x = _dense()
    backend = FakeDevice(free=256 * MIB, cost=2 * MIB)
    Saliency(model, backend=backend, reducer=None).explain(x[:100], 1)
    assert backend.calls == [64, 36]  # 256 MiB / 4 MiB guessed, then 256 MiB / 2 MiB > 36


def test_an_explicit_budget_is_of_device_memory_measured_by_the_device_peak() -> None:
    model, x = _dense()
    backend = FakeDevice(free=12 * GIB, cost=16 * MIB)
    Saliency(model, backend=backend, reducer=None, memory_budget=400 * MIB).explain(x, 1)
    assert backend.calls[:2] == [100, 25]  # 400 MiB / 4 MiB, then 400 MiB / 16 MiB


def test_without_a_device_peak_counter_the_first_guess_stays() -> None:
    model, x = _dense()
    backend = FakeDevice(free=12 * GIB, cost=None)
    Saliency(model, backend=backend, reducer=None).explain(x, 1)
    assert backend.calls == [307, 193]


def test_a_peak_already_higher_bounds_the_cost_by_the_room_below_it() -> None:
    model, x = _dense()
    # 1 GiB in use, an old peak of 3 GiB: the first chunk's rise (307 * 1 MiB) stays
    # below it, so its cost is taken as the whole room, 2 GiB / 307 samples.
    backend = FakeDevice(free=12 * GIB, cost=MIB, peak=3 * GIB)
    Saliency(model, backend=backend, reducer=None).explain(x, 1)
    budget = int(12 * GIB * 0.1)
    assert backend.calls[1] == learned_chunk(2 * GIB / 307, budget) == 184


def test_device_budget_rule() -> None:
    assert default_budget(DeviceMemory(20 * GIB)) == 2 * GIB
    assert default_budget(DeviceMemory(4 * GIB)) == GIB  # the floor, where that much is free
    assert default_budget(DeviceMemory(100 * MIB)) == 100 * MIB  # never more than is free
    assert default_budget(DeviceMemory(None)) == GIB  # free memory unknown: the floor
    assert first_chunk(10, 100, GIB) == 10


# --- each built-in backend: None for a model on the CPU --------------------------------

def test_torch_reports_the_host_for_cpu_models() -> None:
    import torch

    from agnostic_saliency import get_backend

    backend = get_backend("torch")
    assert backend.device_memory(torch.nn.Linear(3, 2)) is None
    assert backend.device_memory(torch.nn.ReLU()) is None  # no weights at all
    program = torch.export.export(torch.nn.Linear(3, 2), (torch.ones(1, 3),))
    assert backend.device_memory(program) is None


def _on(device: str) -> Any:
    """A stand-in for a module whose one weight is on ``device`` (no such device here)."""
    import torch

    weight = SimpleNamespace(device=torch.device(device))
    return SimpleNamespace(parameters=lambda: iter([weight]), buffers=lambda: iter([]))


def test_torch_reads_a_cuda_device_through_its_public_counters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from agnostic_saliency import get_backend

    asked: list[Any] = []
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device: asked.append(device) or (10 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 3 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 5 * GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 7 * GIB)
    reset = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: reset.append(a))
    memory = get_backend("torch").device_memory(_on("cuda:1"))
    # Free for PyTorch: the driver's 10 GiB plus the 2 GiB its cache holds unused.
    assert memory == DeviceMemory(12 * GIB, 80 * GIB, 3 * GIB, 7 * GIB)
    assert asked == [torch.device("cuda:1")] and not reset


def test_torch_reads_an_mps_device_without_a_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from agnostic_saliency import get_backend

    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * GIB)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 6 * GIB)
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: 4 * GIB)
    memory = get_backend("torch").device_memory(_on("mps"))
    assert memory == DeviceMemory(10 * GIB, 16 * GIB, 4 * GIB, None)


def test_jax_reports_the_host_for_cpu_models() -> None:
    import equinox as eqx
    import jax
    from flax import nnx

    from agnostic_saliency import get_backend

    backend = get_backend("jax")
    assert jax.devices()[0].memory_stats() is None  # what a device would report, on the CPU
    assert backend.device_memory(nnx.Linear(3, 2, rngs=nnx.Rngs(0))) is None
    assert backend.device_memory(eqx.nn.Linear(3, 2, key=jax.random.key(0))) is None
    assert backend.device_memory(jax.jit(lambda x: x * 2)) is None


STATS = {"bytes_limit": 60 * GIB, "bytes_in_use": 20 * GIB, "peak_bytes_in_use": 25 * GIB}


def test_jax_reads_a_device_through_memory_stats() -> None:
    from agnostic_saliency_jax import _memory
    from agnostic_saliency_keras import _memory as keras_memory

    gpu = SimpleNamespace(platform="gpu", memory_stats=lambda: dict(STATS))
    expected = DeviceMemory(40 * GIB, 60 * GIB, 20 * GIB, 25 * GIB)
    assert _memory.jax_memory(gpu) == expected
    assert keras_memory._jax_memory(gpu) == expected
    bare = SimpleNamespace(platform="gpu", memory_stats=lambda: None)
    assert _memory.jax_memory(bare) == DeviceMemory(None)


def _tf_gpu(monkeypatch: pytest.MonkeyPatch, limit_mib: int | None) -> list[str]:
    """TensorFlow's public device queries answering as for one GPU (none is here)."""
    import tensorflow as tf

    asked: list[str] = []
    monkeypatch.setattr(tf.config.experimental, "get_memory_info", lambda name: asked.append(
        name) or {"current": 2 * GIB, "peak": 3 * GIB})
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["gpu0"])
    config = None if limit_mib is None else [
        tf.config.LogicalDeviceConfiguration(memory_limit=limit_mib)]
    monkeypatch.setattr(tf.config, "get_logical_device_configuration", lambda device: config)
    return asked


@pytest.mark.parametrize("limit_mib", [8192, None])
def test_tensorflow_reads_a_gpu_through_get_memory_info(
        monkeypatch: pytest.MonkeyPatch, limit_mib: int | None) -> None:
    from agnostic_saliency_keras import _memory as keras_memory
    from agnostic_saliency_tensorflow import _memory

    asked = _tf_gpu(monkeypatch, limit_mib)
    name = "/job:localhost/replica:0/task:0/device:GPU:0"
    expected = (DeviceMemory(6 * GIB, 8 * GIB, 2 * GIB, 3 * GIB) if limit_mib
                else DeviceMemory(None, None, 2 * GIB, 3 * GIB))  # no limit: free unknown
    assert _memory.tf_memory(name) == expected
    assert keras_memory._tf_memory(name) == expected
    assert asked == ["GPU:0", "GPU:0"]
    assert _memory.tf_memory("/job:localhost/replica:0/task:0/device:CPU:0") is None


def test_tensorflow_reports_the_host_for_cpu_models() -> None:
    import tensorflow as tf

    from agnostic_saliency import get_backend

    class Module(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.ones((3, 2)))

        def __call__(self, x: Any) -> Any:
            return x @ self.w

    backend = get_backend("tensorflow")
    assert backend.device_memory(Module()) is None
    assert backend.device_memory(tf.function(lambda x: x * 2)) is None


def test_keras_reports_the_host_for_cpu_models() -> None:
    import keras

    from agnostic_saliency import get_backend

    backend = get_backend("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert keras.backend.backend() == "tensorflow"  # tests/conftest.py
    assert backend.device_memory(model) is None
    assert backend.device_memory(keras.layers.ReLU()) is None  # no weights


def test_keras_reads_the_weights_device_of_each_framework() -> None:
    """Keras on JAX or PyTorch holds a weight's value as that framework's array: the
    reader looks at its device (here on the CPU) without Keras on that framework."""
    import jax.numpy as jnp
    import torch
    from agnostic_saliency_keras import _memory

    def model(value: Any) -> Any:
        return SimpleNamespace(weights=[SimpleNamespace(value=value)])

    assert _memory.device_memory(model(torch.ones(2)), "torch") is None
    assert _memory.device_memory(model(jnp.ones(2)), "jax") is None
    assert _memory.device_memory(model(SimpleNamespace(device="/device:CPU:0")),
                                 "tensorflow") is None


# --- real allocation failures on the CPU ------------------------------------------------

def _backoff(explain: Any) -> tuple[np.ndarray, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = explain()
    return maps, [str(w.message) for w in caught if issubclass(w.category, SaliencyWarning)]


def _torch_model(limit: int, forward_too: bool = False) -> Any:
    import torch

    class Greedy(torch.nn.Module):
        """A linear model whose backward graph (and forward pass, with ``forward_too``)
        needs petabytes above ``limit`` samples."""

        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if (forward_too or torch.is_grad_enabled()) and x.shape[0] > limit:
                torch.empty(1 << 50)  # PyTorch's CPU allocator refuses: a RuntimeError
            return self.linear(x)

    torch.manual_seed(0)
    return Greedy().eval()


def test_torch_cpu_allocation_failure_halves_the_chunk() -> None:
    model = _torch_model(limit=3)
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    maps, messages = _backoff(lambda: Saliency(model, batch_size=10, reducer=None).explain(x, 1))
    assert any("DefaultCPUAllocator" in m and "retrying with 5" in m for m in messages)
    small = Saliency(model, batch_size=2, reducer=None).explain(x, 1)
    np.testing.assert_array_equal(maps, small)
    weight = model.linear.weight.detach().numpy()[1]
    np.testing.assert_allclose(maps, np.broadcast_to(np.abs(weight), x.shape), rtol=1e-6)


def test_torch_forward_passes_for_predicted_targets_halve_too() -> None:
    model = _torch_model(limit=3, forward_too=True)
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    maps, messages = _backoff(lambda: Saliency(model, batch_size=10, reducer=None,
                                               absolute=False).explain(x))
    assert sum("retrying with 5" in m for m in messages) == 2  # predictions, then gradients
    weight = model.linear.weight.detach().numpy()
    predicted = np.argmax(x @ weight.T + model.linear.bias.detach().numpy(), axis=1)
    np.testing.assert_allclose(maps, weight[predicted], rtol=1e-6)


def test_torch_recognises_its_cpu_allocator_narrowly() -> None:
    import torch

    from agnostic_saliency import get_backend

    backend = get_backend("torch")
    with pytest.raises(RuntimeError) as raised:
        torch.empty(1 << 50)  # refused at once: nothing is really allocated
    assert backend.is_out_of_memory(raised.value)
    assert not backend.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not backend.is_out_of_memory(ValueError("DefaultCPUAllocator: can't allocate memory"))


def test_torch_one_sample_that_does_not_fit_raises_with_a_note() -> None:
    model = _torch_model(limit=0)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    explainer = Saliency(model, batch_size=4)
    with pytest.warns(SaliencyWarning, match="retrying with 2"):
        with pytest.raises(RuntimeError, match="DefaultCPUAllocator") as raised:
            explainer.explain_with_targets(x, 1, sample_ids=np.arange(100, 104))
    notes = getattr(raised.value, "__notes__", [])
    if sys.version_info >= (3, 11):
        assert any("one sample per model call (sample 100, shape (3,))" in n for n in notes)
        assert any("device with more memory" in n for n in notes)


def test_jax_resource_exhausted_halves_the_chunk() -> None:
    import jax
    import jax.numpy as jnp

    weight = np.random.default_rng(1).normal(size=(3, 2)).astype(np.float32)

    def model(x: Any) -> Any:
        out = x @ weight
        if x.shape[0] > 3:  # static under jit: a large batch's program needs 40 TB
            big = jax.lax.optimization_barrier(jnp.broadcast_to(x[:, :1], (x.shape[0], 1 << 40)))
            out = out + big[:, :1] * 0
        return out

    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    targets = np.ones(10, dtype=np.int64)
    maps, messages = _backoff(lambda: Saliency(model, backend="jax", batch_size=10,
                                               reducer=None).explain(x, targets))
    assert any("RESOURCE_EXHAUSTED" in m and "retrying with 5" in m for m in messages)
    np.testing.assert_array_equal(maps, np.broadcast_to(np.abs(weight[:, 1]), x.shape))


def test_tensorflow_resource_exhausted_halves_the_chunk() -> None:
    import tensorflow as tf
    from agnostic_saliency_tensorflow import TensorFlowBackend

    weight = np.random.default_rng(1).normal(size=(3, 2)).astype(np.float32)

    class Greedy(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(weight)

        def __call__(self, x: Any) -> Any:
            size = tf.where(tf.shape(x)[0] > 3, tf.constant(1 << 40, tf.int64),
                            tf.constant(1, tf.int64))
            big = tf.zeros(tf.reshape(size, [1]))  # 4 TB above 3 samples
            return x @ self.w + tf.reduce_sum(big[:1]) * 0

    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    # An operator: no forward pass to resolve targets, whose predictions do not halve.
    # Without XLA, which would never materialize the unused zeros.
    explainer = Saliency(Greedy(), backend=TensorFlowBackend(jit_compile=False),
                         batch_size=10, reducer=None,
                         operator=lambda model, inputs, targets: model(inputs)[:, 1])
    maps, messages = _backoff(lambda: explainer.explain(x))
    assert any("ResourceExhaustedError" in m and "retrying with 5" in m for m in messages), messages
    np.testing.assert_allclose(maps, np.broadcast_to(np.abs(weight[:, 1]), x.shape))
