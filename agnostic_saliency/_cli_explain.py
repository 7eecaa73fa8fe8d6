"""``agnostic-saliency explain``: saved models and inputs in, a memory-mapped ``.npy`` out.

Each framework is imported only when a file of its format is loaded. Maps are
streamed batch by batch into ``np.lib.format.open_memmap``, so memory is bounded
by ``--batch-size``, not by the number of inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_saliency import methods
from agnostic_saliency.saliency import Saliency

__all__ = ["load_inputs", "load_model", "run_explain"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_METHODS = {
    "saliency": Saliency, "gradientinput": methods.GradientInput,
    "smoothgrad": methods.SmoothGrad, "squaregrad": methods.SquareGrad,
    "vargrad": methods.VarGrad, "integratedgradients": methods.IntegratedGradients,
}


def load_model(path: str) -> tuple[Any, str | None]:
    """Load a saved model; return it and the backend to force (``None``: detect).

    Raises
    ------
    ValueError
        If the path holds no model format we know.
    """
    location = Path(path)
    if not location.exists():
        raise FileNotFoundError(f"model {path!r} does not exist; check the path")
    if location.is_dir():
        if (location / "saved_model.pb").exists():
            return _load_saved_model(location)
        raise ValueError(f"{path!r} is a folder without saved_model.pb; expected a TensorFlow "
                         "SavedModel folder, or a .keras/.pt/.pt2/.jax file")
    suffix = location.suffix.lower()
    if suffix == ".keras":
        import keras

        return keras.saving.load_model(location), None
    if suffix in (".pt", ".pth", ".ts", ".pt2"):
        return _load_torch(location), None
    if suffix in (".jax", ".jaxexport", ".bin"):
        return _load_jax_export(location), "jax"
    raise ValueError(f"unknown model format {suffix or location.name!r}; expected .keras, "
                     ".pt/.pth (TorchScript), .pt2 (torch.export), .jax (jax.export) or a "
                     "SavedModel folder")


def _load_torch(location: Path) -> Any:
    import torch

    if location.suffix.lower() == ".pt2":
        # An exported graph is frozen: its modules' training flags change nothing.
        module = torch.export.load(str(location)).module()
        for submodule in module.modules():
            submodule.training = False
        return module
    try:
        return torch.jit.load(str(location), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    except RuntimeError as error:
        raise ValueError(f"{location} is not a TorchScript file ({_first_line(error)}); save "
                         "with torch.jit.save, or torch.export.save as .pt2") from None


def _load_saved_model(location: Path) -> tuple[Any, str | None]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(location))
    if callable(loaded):
        return loaded, "tensorflow"
    def serve(x: Any) -> Any:
        # ``loaded`` must stay referenced: its variables die with it.
        outputs = loaded.signatures["serving_default"](x)
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs

    return serve, "tensorflow"


def _load_jax_export(location: Path) -> Any:
    from jax import export

    exported = export.deserialize(bytearray(location.read_bytes()))
    return exported.call


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def load_inputs(path: str, key: str | None = None) -> np.ndarray:
    """Inputs from ``.npy`` (memory-mapped), ``.npz`` or a folder of images (float32 in [0, 1])."""
    location = Path(path)
    if not location.exists():
        raise FileNotFoundError(f"inputs {path!r} do not exist; check the path")
    if location.is_dir():
        return _load_images(location)
    if location.suffix == ".npy":
        return np.load(location, mmap_mode="r")
    if location.suffix == ".npz":
        with np.load(location) as data:
            name = key or ("inputs" if "inputs" in data.files else data.files[0])
            if name not in data.files:
                raise KeyError(f"no array {name!r} in {path}; it holds {data.files}")
            return data[name]
    raise ValueError(f"unknown inputs format {location.suffix!r}; expected .npy, .npz or a "
                     "folder of images")


def _load_images(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(_IMAGE_SUFFIXES))}) in {folder}")
    arrays = [np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255 for file in files]
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in {folder} have different sizes {sorted(shapes)}; resize "
                         "them to one size first")
    return np.stack(arrays)


def _targets(spec: str | None, n: int) -> Any:
    if spec is None or spec == "predicted":
        return None
    if spec.lstrip("-").isdigit():
        return int(spec)
    targets = np.load(spec)
    if len(targets) != n:
        raise ValueError(f"{spec} holds {len(targets)} targets for {n} inputs")
    return targets


def run_explain(args: argparse.Namespace) -> Path:
    """Explain ``args.inputs`` with the model ``args.model``; write maps to ``args.out``."""
    model, backend = load_model(args.model)
    inputs = load_inputs(args.inputs, args.key)
    targets = _targets(args.targets, len(inputs))
    options: dict[str, Any] = {"backend": args.backend or backend, "batch_size": args.batch_size,
                               "channel_axis": args.channel_axis}
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
        raise ValueError(f"no inputs to explain in {out.name!r}: the input array is empty")
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
