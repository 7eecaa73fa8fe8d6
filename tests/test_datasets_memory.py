"""Peak memory of ``explain_dataset`` is bounded by the batch, not by the data set's size.

A memory-mapped data set of 1x and 4x the size (32 and 128 MB: large enough that
holding it, or the maps, would show by tens of MB; small enough to explain in a
few seconds on two cores) is explained into a Zarr store by a small ResNet-style
PyTorch model in a child process, which reports its peak resident memory
(``VmHWM``, /proc/self/status). Pages of the memory map that were read count in
the resident set unless they are released, so this also checks that they are.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: Samples of 3x32x32 float32 (12 KiB each) in the 1x data set: 32 MB.
SAMPLES = 2_600

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from agnostic_saliency import Saliency

    class Block(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(width, width, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(width, width, 3, padding=1)

        def forward(self, x):
            return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), Block(8), Block(8),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    data = np.load(sys.argv[1], mmap_mode="r")
    Saliency(model, batch_size=256).explain_dataset(data, out=sys.argv[2], progress=False)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            print(int(line.split()[1]))
""")


def _peak_kib(tmp_path: Path, samples: int) -> int:
    inputs = tmp_path / f"inputs{samples}.npy"
    data = np.lib.format.open_memmap(inputs, mode="w+", dtype=np.float32,
                                     shape=(samples, 3, 32, 32))
    rng = np.random.default_rng(0)
    for start in range(0, samples, 1000):  # written in pieces: this process stays small too
        stop = min(start + 1000, samples)
        data[start:stop] = rng.normal(size=(stop - start, 3, 32, 32))
    data.flush()
    del data
    out = tmp_path / f"maps{samples}.zarr"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(inputs), str(out)],
                            check=True, capture_output=True, text=True, timeout=300)
    import zarr

    maps = zarr.open_array(str(out), mode="r")
    assert maps.shape == (samples, 32, 32) and maps.chunks == (256, 32, 32)
    assert float(np.abs(maps[samples - 1]).max()) > 0  # the last sample was explained
    inputs.unlink()
    return int(result.stdout.split()[-1])


def test_peak_memory_does_not_grow_with_the_data_set(tmp_path: Path) -> None:
    small = _peak_kib(tmp_path, SAMPLES)
    large = _peak_kib(tmp_path, 4 * SAMPLES)
    # Holding the 4x data set's extra inputs would add 96 MB, its extra maps 32 MB.
    assert large - small < 16 * 1024, (small, large)
