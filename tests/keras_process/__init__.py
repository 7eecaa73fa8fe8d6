"""Keras test helpers and the suite run in child processes, one per Keras backend.

Keras fixes its backend when it is imported, so the JAX and PyTorch runs of the
conformance suite happen in child processes (``keras_suite.py``, started by
``tests/backends/test_backend_keras.py``). No module here matches ``test_*.py``:
normal collection skips them, and the child is given the suite's path explicitly.
"""
