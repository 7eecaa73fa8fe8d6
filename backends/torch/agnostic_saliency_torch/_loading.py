"""Saved PyTorch models for the command line: TorchScript files and torch.export programs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agnostic_saliency import messages

__all__ = ["SUFFIXES", "load_model"]

SUFFIXES = (".pt", ".pth", ".ts", ".pt2")


def load_model(path: Path) -> Any:
    """A TorchScript module (``.pt``, ``.pth``, ``.ts``) or a ``torch.export`` program (``.pt2``).

    Raises
    ------
    ValueError
        If a ``.pt``-like file is not TorchScript.
    """
    import torch

    if path.suffix.lower() == ".pt2":
        # An exported graph is frozen: its modules' training flags change nothing.
        module = torch.export.load(str(path)).module()
        for submodule in module.modules():
            submodule.training = False
        return module
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    except RuntimeError as error:
        raise ValueError(messages.not_torchscript(str(path), error)) from None
