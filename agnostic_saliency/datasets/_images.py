"""A folder of images as a data source: read batch by batch, never all at once.

Images are found recursively, sorted by path, converted to RGB (or grayscale),
resized when asked, scaled to [0, 1], normalized per channel, and laid out
``nchw`` or ``nhwc``. With ``targets_from_folders`` the first sub-folder of each
image names its class: the sorted folder names are classes 0, 1, ...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agnostic_saliency import messages

__all__ = ["IMAGE_SUFFIXES", "ImageFolder"]

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

Layout = Literal["nchw", "nhwc"]


def _per_channel(name: str, values: Sequence[float] | None, channels: int) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float32)
    if array.size == 1:
        return np.full(channels, array.item(), dtype=np.float32)
    if array.shape != (channels,):
        raise ValueError(f"{name} has {array.size} values for {channels}-channel images; give "
                         f"one value, or one per channel ({channels}).")
    return array


class ImageFolder:
    """The images under ``folder`` as batches of ``{"inputs": ..., "targets": ...}``.

    Parameters
    ----------
    folder
        Searched recursively for files with the suffixes of :data:`IMAGE_SUFFIXES`.
    layout
        ``"nchw"`` (channels first, PyTorch's convention) or ``"nhwc"``.
    size
        ``(height, width)`` to resize every image to; ``None`` keeps sizes, which
        must then agree.
    mean, std
        Per-channel normalization ``(x - mean) / std`` after scaling to [0, 1]:
        one value for every channel, or one per channel.
    grayscale
        Read images as one channel.
    targets_from_folders
        The class of an image is its first sub-folder's position in the sorted names.
    batch_size
        Images per batch.
    """

    def __init__(self, folder: str | Path, *, layout: Layout = "nchw",
                 size: tuple[int, int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, grayscale: bool = False,
                 targets_from_folders: bool = False, batch_size: int = 32) -> None:
        self.folder = Path(folder)
        self.files = sorted(path for path in self.folder.rglob("*")
                            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
        if not self.files:
            raise ValueError(messages.no_images(f"{self.folder} or its sub-folders",
                                                IMAGE_SUFFIXES))
        if layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout={layout!r}; expected 'nchw' or 'nhwc'.")
        self.layout = layout
        self.size = size
        channels = 1 if grayscale else 3
        self.mean = _per_channel("--normalize MEAN", mean, channels)
        self.std = _per_channel("--normalize STD", std, channels)
        if self.std is not None and not np.all(self.std > 0):
            raise ValueError(f"--normalize STD {self.std.tolist()} has a value <= 0; "
                             "standard deviations must be positive.")
        self.grayscale = grayscale
        self.batch_size = batch_size
        self.classes: list[str] = []
        self.labels: np.ndarray | None = None
        if targets_from_folders:
            self._label_by_folder()
        #: The number of samples (read by ``explain_dataset`` for its progress).
        self.num_samples = len(self.files)

    def _label_by_folder(self) -> None:
        parts = [path.relative_to(self.folder).parts for path in self.files]
        loose = [path for path, part in zip(self.files, parts, strict=True) if len(part) < 2]
        if loose:
            raise ValueError(f"--targets folders needs every image in a class sub-folder of "
                             f"{self.folder}, but {loose[0].name} is directly in it.")
        self.classes = sorted({part[0] for part in parts})
        index = {name: i for i, name in enumerate(self.classes)}
        self.labels = np.array([index[part[0]] for part in parts], dtype=np.int64)

    def __len__(self) -> int:
        """The number of batches."""
        return -(-len(self.files) // self.batch_size)

    def read(self, position: int) -> np.ndarray:
        """Image ``position`` (in sorted order) as float32 ``(H, W, C)`` in [0, 1], resized."""
        from PIL import Image

        path = self.files[position]
        with Image.open(path) as image:
            converted = image.convert("L" if self.grayscale else "RGB")
            if self.size is not None:
                converted = converted.resize((self.size[1], self.size[0]),
                                             Image.Resampling.BILINEAR)
            array = np.asarray(converted, dtype=np.float32) / 255
        return array[..., None] if array.ndim == 2 else array

    def _prepare(self, images: list[np.ndarray], first: int) -> np.ndarray:
        shapes = [image.shape for image in images]
        if len(set(shapes)) > 1:
            odd = next(i for i, shape in enumerate(shapes) if shape != shapes[0])
            raise ValueError(
                f"image {first + odd} ({self.files[first + odd]}) is "
                f"{shapes[odd][0]}x{shapes[odd][1]}, image {first} ({self.files[first].name}) "
                f"{shapes[0][0]}x{shapes[0][1]}; pass --size H W to resize every image. "
                + messages.images_differ(str(self.folder), sorted(set(shapes))))
        batch = np.stack(images)
        if self.mean is not None:
            batch -= self.mean
        if self.std is not None:
            batch /= self.std
        if self.layout == "nchw":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        expected: tuple[int, ...] | None = None
        for first in range(0, len(self.files), self.batch_size):
            stop = min(first + self.batch_size, len(self.files))
            batch = self._prepare([self.read(i) for i in range(first, stop)], first)
            if expected is not None and batch.shape[1:] != expected:
                raise ValueError(f"image {first} ({self.files[first]}) has another size than "
                                 f"image 0 ({self.files[0].name}); pass --size H W to resize "
                                 "every image.")
            expected = batch.shape[1:]
            yield {"inputs": batch,
                   "targets": None if self.labels is None else self.labels[first:stop]}
