"""``agnostic-saliency explain``: saved models and inputs in, a memory-mapped ``.npy`` out.

A saved model is loaded by the installed backend that reads its format (the
optional backend members ``can_load`` and ``load_model``), so this module imports
no framework, and a plugin can add formats. Maps are
streamed batch by batch into ``np.lib.format.open_memmap``, so memory is bounded
by ``--batch-size``, not by the number of inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_saliency import messages, methods
from agnostic_saliency.registry import get_backend, list_backends
from agnostic_saliency.saliency import Saliency

__all__ = ["load_inputs", "load_model", "run_explain"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_METHODS = {
    "saliency": Saliency, "gradientinput": methods.GradientInput,
    "smoothgrad": methods.SmoothGrad, "squaregrad": methods.SquareGrad,
    "vargrad": methods.VarGrad, "integratedgradients": methods.IntegratedGradients,
}


def load_model(path: str) -> tuple[Any, str]:
    """Load a saved model with the first installed backend that reads its format.

    Returns the model and the name of that backend, which then explains it.

    Raises
    ------
    FileNotFoundError
        If nothing is at ``path``.
    ValueError
        If no installed backend reads that format.
    """
    location = Path(path)
    if not location.exists():
        raise FileNotFoundError(messages.path_missing("model", path))
    loaders = [backend for backend in _backends() if hasattr(backend, "can_load")]
    for backend in loaders:
        if backend.can_load(location):
            return backend.load_model(location), backend.name
    raise ValueError(messages.unknown_model_format(location.name,
                                                   [backend.name for backend in loaders]))


def _backends() -> list[Any]:
    return sorted((get_backend(name) for name in list_backends()),
                  key=lambda backend: -backend.priority)


def load_inputs(path: str, key: str | None = None) -> np.ndarray:
    """Inputs from ``.npy`` (memory-mapped), ``.npz`` or a folder of images (float32 in [0, 1])."""
    location = Path(path)
    if not location.exists():
        raise FileNotFoundError(messages.path_missing("inputs", path))
    if location.is_dir():
        return _load_images(location)
    if location.suffix == ".npy":
        return np.load(location, mmap_mode="r")
    if location.suffix == ".npz":
        with np.load(location) as data:
            name = key or ("inputs" if "inputs" in data.files else data.files[0])
            if name not in data.files:
                raise KeyError(messages.npz_key_missing(name, path, data.files))
            return data[name]
    raise ValueError(messages.unknown_inputs_format(location.suffix))


def _load_images(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(messages.no_images(str(folder), sorted(_IMAGE_SUFFIXES)))
    arrays = [np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255 for file in files]
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise ValueError(messages.images_differ(str(folder), sorted(shapes)))
    return np.stack(arrays)


def _targets(spec: str | None, n: int) -> Any:
    if spec is None or spec == "predicted":
        return None
    if spec.lstrip("-").isdigit():
        return int(spec)
    targets = np.load(spec)
    if len(targets) != n:
        raise ValueError(messages.targets_file_length(spec, len(targets), n))
    return targets


def run_explain(args: argparse.Namespace) -> Path:
    """Explain ``args.inputs`` with the model ``args.model``; write maps to ``args.out``."""
    model, backend = load_model(args.model)
    inputs = load_inputs(args.inputs, args.key)
    targets = _targets(args.targets, len(inputs))
    options: dict[str, Any] = {"backend": args.backend or backend, "batch_size": args.batch_size,
                               "channel_axis": args.channel_axis, "strict": args.strict}
    if args.method in ("smoothgrad", "squaregrad", "vargrad"):
        options["seed"] = args.seed
    explainer = _METHODS[args.method](model, **options)
    out = Path(args.out)
    maps = _stream(explainer, inputs, targets, out, args.batch_size, not args.quiet)
    if args.png:
        axis = explainer.channel_axis
        _write_pngs(maps, inputs, Path(args.png),
                    explainer.backend.channel_axis if axis is None else axis)
    return out


def _stream(explainer: Any, inputs: np.ndarray, targets: Any, out: Path, batch_size: int,
            progress: bool) -> np.ndarray:
    n = len(inputs)
    maps: np.ndarray | None = None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch_targets = targets[start:stop] if isinstance(targets, np.ndarray) else targets
        part, _ = explainer.explain_with_targets(np.asarray(inputs[start:stop]), batch_targets,
                                                 sample_offset=start)
        if maps is None:
            maps = np.lib.format.open_memmap(out, mode="w+", dtype=part.dtype,
                                             shape=(n, *part.shape[1:]))
        maps[start:stop] = part
        if progress:
            _progress(stop, n)
    if maps is None:
        raise ValueError(messages.no_inputs(str(out)))
    maps.flush()  # type: ignore[attr-defined]
    return maps


def _progress(done: int, total: int, width: int = 30) -> None:
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _write_pngs(maps: np.ndarray, inputs: np.ndarray, folder: Path, channel_axis: int) -> None:
    from agnostic_saliency.plots import plot_attributions, save

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(len(maps)):
        image = np.asarray(inputs[index])
        figure = plot_attributions(maps[index:index + 1],
                                   image[None] if image.ndim == 3 else None,
                                   channel_axis=channel_axis)
        save(figure, folder / f"{index:05d}.png")  # type: ignore[arg-type]
