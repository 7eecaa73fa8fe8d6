"""Saved TensorFlow models for the command line: SavedModel folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["is_saved_model", "load_model"]


def is_saved_model(path: Path) -> bool:
    """Whether ``path`` is a SavedModel folder (checked without importing TensorFlow)."""
    return path.is_dir() and (path / "saved_model.pb").exists()


def load_model(path: Path) -> Any:
    """The loaded object if it is callable, else its ``serving_default`` signature.

    A signature with one output returns that tensor; with several, the dict (which
    the frontend then reports, asking for an output selector).
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if callable(loaded):
        return loaded

    def serve(x: Any) -> Any:
        # ``loaded`` must stay referenced: its variables die with it.
        outputs = loaded.signatures["serving_default"](x)
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs

    return serve
