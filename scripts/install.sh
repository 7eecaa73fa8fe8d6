#!/usr/bin/env bash
# Create .venv (if missing) and install the library, its four backends, every framework
# (CPU builds), the test oracles and the tools. Safe to run again: it installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q -c constraints.txt)
.venv/bin/python -m pip install -q --upgrade pip
"${pip[@]}" -r requirements-dev.txt
# Xplique, tf-keras and Quantus without their dependencies: their pins would replace
# tensorflow-cpu with a CUDA build of several GB.
"${pip[@]}" --no-deps xplique tf-keras quantus
# keras_hub (the nested Keras models of the layer= tests) without its tensorflow-text
# dependency, which would pull the full `tensorflow` beside tensorflow-cpu; its light
# dependencies are in requirements-dev.txt.
"${pip[@]}" --no-deps keras-hub kagglehub 'kagglesdk>=0.1.38,<1.0'
# tensorflow-cpu must stay the only TensorFlow.
if .venv/bin/python -m pip show -q tensorflow 2>/dev/null; then
    .venv/bin/python -m pip uninstall -q -y tensorflow
    "${pip[@]}" --force-reinstall --no-deps tensorflow-cpu
fi
