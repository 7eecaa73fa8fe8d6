"""Saved JAX functions for the command line: serialized ``jax.export`` programs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SUFFIXES", "load_model"]

SUFFIXES = (".jax", ".jaxexport")


def load_model(path: Path) -> Any:
    """The ``call`` of a deserialized ``jax.export.Exported`` (save it with ``vjp_order=1``)."""
    from jax import export

    return export.deserialize(bytearray(path.read_bytes())).call
