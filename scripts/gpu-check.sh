#!/usr/bin/env bash
# The checks that need a CUDA GPU (CI has none), in one run:
#   1. the GPU tests (tests/gpu) and the PyTorch and JAX backend suites, JAX's on the GPU;
#   2. scripts/gpu_precision.py: how far float32 maps on the GPU are from float64 ones;
#   3. the benchmark on the GPU (PyTorch and JAX; the machine we use has no TensorFlow);
#   4. benchmarks/gpu_resnets.py: PyTorch on ResNets, where the GPU has work to overlap.
#
# Usage: scripts/gpu-check.sh [OUT_DIR] [BENCHMARK_ROUNDS]
#
# Needs a Python (PYTHON, default python3) with CUDA builds of PyTorch and JAX, Flax,
# Equinox, torchvision, NumPy, pytest, pytest-xdist and hypothesis. This checkout's
# library and its torch and jax backends are installed into a temporary folder without
# dependencies:
# from wheels in .whl/ where there are some (pip wheel --no-deps -w .whl . backends/torch
# backends/jax, for a machine without a package index), else from the source folders.
# Every step runs; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
rounds=${2:-10}
python=${PYTHON:-python3}
mkdir -p "$out"
site=$(mktemp -d)
if compgen -G ".whl/agnostic_saliency*.whl" >/dev/null; then
    sources=(.whl/agnostic_saliency*.whl)
else
    sources=(. backends/torch backends/jax)
fi
"$python" -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" \
    "${sources[@]}" || exit 1
export PYTHONPATH=$site XLA_PYTHON_CLIENT_PREALLOCATE=false AGNOSTIC_SALIENCY_GPU=1
export PYTHONUNBUFFERED=1
nvidia-smi -L
status=0
"$python" -m pytest -q -n 8 -p no:cacheprovider --durations=5 tests/gpu \
    tests/backends/test_backend_torch.py tests/backends/test_torch_inputs_in_place.py \
    tests/backends/test_torch_models.py tests/backends/test_torch_dispatch.py \
    tests/backends/test_backend_jax.py 2>&1 | tee "$out/tests.log" || status=1
"$python" scripts/gpu_precision.py 2>&1 | tee "$out/precision.txt" || status=1
"$python" benchmarks/run.py --device cuda --frameworks torch jax --rounds "$rounds" \
    --out "$out/benchmark" 2>&1 | tee "$out/benchmark.log" || status=1
"$python" benchmarks/gpu_resnets.py --rounds "$((2 * rounds))" 2>&1 \
    | tee "$out/resnets.md" || status=1
exit $status
