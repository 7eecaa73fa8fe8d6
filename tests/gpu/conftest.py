"""Set-up of the GPU tests; each module here is marked ``gpu`` (see ``tests/conftest.py``).

``AGNOSTIC_SALIENCY_GPU_DEVICE`` names the PyTorch device (default ``cuda``);
``cpu`` tries the tests' own logic on a machine without a GPU: there the three
checks of GPU memory and of JAX's platform fail, and the one of two devices skips.
"""

from __future__ import annotations

import os

import pytest

DEVICE = os.environ.get("AGNOSTIC_SALIENCY_GPU_DEVICE", "cuda")


@pytest.fixture(autouse=True, scope="session")
def _device_present() -> None:
    """Fail, not skip, where the GPU is missing: these tests were asked for."""
    import torch

    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"AGNOSTIC_SALIENCY_GPU=1 but PyTorch {torch.__version__} sees no CUDA "
                    "device; run these tests on a GPU machine, or unset AGNOSTIC_SALIENCY_GPU.")
