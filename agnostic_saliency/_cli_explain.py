"""``agnostic-saliency explain``: a saved model and a data set in, maps out (.npy or Zarr).

A saved model is loaded by the installed backend that reads its format (the
optional backend members ``can_load`` and ``load_model``), so this module imports
no framework, and a plugin can add formats. The data (a memory-mapped ``.npy``,
an ``.npz`` array, a Zarr array, or a folder of images) is explained batch by
batch by :func:`agnostic_saliency.datasets.explain_dataset`: memory is bounded by
``--batch-size``, and a ``.zarr`` output resumes with ``--resume``.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_saliency import messages, methods
from agnostic_saliency.datasets import explain_dataset, iter_batches
from agnostic_saliency.datasets._images import ImageFolder
from agnostic_saliency.explainer import GradientExplainer
from agnostic_saliency.registry import get_backend, list_backends
from agnostic_saliency.saliency import Saliency

__all__ = ["METHOD_OPTIONS", "load_inputs", "load_model", "make_explainer", "run_explain"]

_METHODS: dict[str, type[GradientExplainer]] = {
    "saliency": Saliency, "gradientinput": methods.GradientInput,
    "smoothgrad": methods.SmoothGrad, "squaregrad": methods.SquareGrad,
    "vargrad": methods.VarGrad, "integratedgradients": methods.IntegratedGradients,
}
#: Command-line option -> the method's parameter it sets.
METHOD_OPTIONS = {"nb_samples": "nb_samples", "noise": "noise", "steps": "steps",
                  "baseline": "baseline_value", "preset": "preset", "reducer": "reducer",
                  "seed": "seed"}


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


def _is_zarr(location: Path) -> bool:
    return location.suffix == ".zarr" or (location / "zarr.json").exists() \
        or (location / ".zarray").exists() or (location / ".zgroup").exists()


def _open_zarr(location: Path, key: str | None) -> Any:
    from agnostic_saliency.datasets._zarr import _import_zarr

    found = _import_zarr().open(str(location), mode="r")
    if hasattr(found, "shape"):
        return found
    names = sorted(name for name, _ in found.arrays())
    return _pick(names, key, str(location), lambda name: found[name])


def _pick(names: list[str], key: str | None, path: str, get: Any) -> Any:
    """The array named ``key`` among ``names``; the only one if there is one; else an error."""
    if key is not None:
        if key not in names:
            raise KeyError(messages.npz_key_missing(key, path, names))
        return get(key)
    if len(names) == 1:
        return get(names[0])
    raise ValueError(f"{path} holds {len(names)} arrays ({', '.join(names)}); pass --key NAME "
                     "to choose the inputs.")


def load_inputs(path: str, key: str | None = None, **images: Any) -> Any:
    """The data at ``path``: a memory-mapped ``.npy``, an ``.npz`` array, a Zarr array, or
    an :class:`~agnostic_saliency.datasets._images.ImageFolder` (``images`` are its options)."""
    location = Path(path)
    if not location.exists():
        raise FileNotFoundError(messages.path_missing("inputs", path))
    if _is_zarr(location):
        return _open_zarr(location, key)
    if location.is_dir():
        return ImageFolder(location, **images)
    if location.suffix == ".npy":
        return np.load(location, mmap_mode="r")
    if location.suffix == ".npz":
        with np.load(location) as data:
            return _pick(list(data.files), key, path, lambda name: data[name])
    raise ValueError(messages.unknown_inputs_format(location.suffix))


def _targets(spec: str | None, data: Any) -> Any:
    if spec is None or spec == "predicted":
        return None
    if spec == "folders":
        if not isinstance(data, ImageFolder):
            raise ValueError("--targets folders takes the classes from the sub-folders of a "
                             "folder of images; for arrays pass an int or a .npy file.")
        return None  # the folder's batches bring their labels
    if spec.lstrip("-").isdigit():
        return int(spec)
    targets = np.load(spec, mmap_mode="r")
    n = data.num_samples if isinstance(data, ImageFolder) else int(data.shape[0])
    if len(targets) != n:
        raise ValueError(messages.targets_file_length(spec, len(targets), n))
    return targets


def make_explainer(args: argparse.Namespace, model: Any, backend: str) -> GradientExplainer:
    """The explainer that ``--method`` and the method options ask for."""
    return _METHODS[args.method](model, **method_options(args, args.backend or backend))


def method_options(args: argparse.Namespace, backend: str | None) -> dict[str, Any]:
    """The keyword arguments of ``--method`` from the command line's options."""
    method = _METHODS[args.method]
    accepted = inspect.signature(method).parameters
    options: dict[str, Any] = {"backend": backend,
                               "batch_size": args.batch_size, "strict": args.strict,
                               "channel_axis": args.channel_axis}
    for option, parameter in METHOD_OPTIONS.items():
        value = getattr(args, option, None)
        if value is None:
            continue
        if parameter not in accepted:
            raise ValueError(f"--{option.replace('_', '-')} does not apply to --method "
                             f"{args.method}; drop it or choose a method that takes it.")
        options[parameter] = None if value == "none" else value
    if "seed" in accepted and options.get("seed") is None:
        options["seed"] = 0  # reproducible maps, and a resumable store
    return options


def _check_png_folder(folder: Path) -> None:
    """Fail now, before any work, if PNGs cannot be written to ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OSError(f"--png {folder}: cannot write there ({error.strerror or error}); "
                      "choose a writable folder.") from None


def _layout(explainer: GradientExplainer, requested: str | None) -> str:
    if requested is not None:
        return requested
    axis = explainer.backend.model_channel_axis(explainer.model, 4)
    return "nchw" if (explainer.backend.channel_axis if axis is None else axis) == 1 else "nhwc"


def run_explain(args: argparse.Namespace) -> Path:
    """Explain ``args.inputs`` with the model ``args.model``; write maps to ``args.out``."""
    out = Path(args.out)
    if out.suffix not in (".npy", ".zarr"):
        raise ValueError(f"--out {args.out}: expected a .npy file or a .zarr store.")
    if args.png:
        _check_png_folder(Path(args.png))
    if getattr(args, "ray", None) is not None:
        return _run_on_ray(args, out)
    model, backend = load_model(args.model)
    explainer = make_explainer(args, model, backend)
    normalize = args.normalize or (None, None)
    data = load_inputs(args.inputs, args.key, layout=_layout(explainer, args.layout),
                       size=tuple(args.size) if args.size else None, mean=normalize[0],
                       std=normalize[1], grayscale=args.grayscale,
                       targets_from_folders=args.targets == "folders",
                       batch_size=args.batch_size)
    if not isinstance(data, ImageFolder) and (len(data.shape) == 0 or data.shape[0] == 0):
        raise ValueError(messages.no_inputs(args.inputs))
    targets = _targets(args.targets, data)
    maps = explain_dataset(explainer, data, targets, out=out, resume=args.resume,
                           progress=False if args.quiet else None, batch_size=args.batch_size)
    if args.png:
        _write_pngs(explainer, maps, data, Path(args.png), args.batch_size)
    return out


def _run_on_ray(args: argparse.Namespace, out: Path) -> Path:
    """``--ray [ADDRESS]``: the same job on Ray Data actors, the same store."""
    from agnostic_saliency.ray import run_ray_job

    if Path(args.inputs).suffix not in (".npy", ".zarr") or args.resume or args.png:
        raise ValueError(f"--ray takes a .npy file or a .zarr array as DATA (got {args.inputs}),"
                         " without --resume or --png; convert the data, or run without --ray.")
    targets: Any = None if args.targets in (None, "predicted") else (
        int(args.targets) if args.targets.lstrip("-").isdigit() else args.targets)
    options = method_options(args, args.backend)
    options.pop("batch_size")
    run_ray_job(args.model, args.inputs, out, address=None if args.ray == "local" else args.ray,
                workers=args.workers, gpus_per_worker=args.gpus_per_worker, method=args.method,
                targets=targets, batch_size=args.batch_size, progress=not args.quiet, **options)
    return out


def _write_pngs(explainer: GradientExplainer, maps: Any, data: Any, folder: Path,
                batch_size: int) -> None:
    from agnostic_saliency.plots import plot_attributions, save

    axis = explainer.channel_axis
    channel_axis = explainer.backend.channel_axis if axis is None else axis
    for batch in iter_batches(data, explainer.backend, batch_size=batch_size):
        part = np.asarray(maps[batch.start:batch.start + len(batch.inputs)])
        for offset, image in enumerate(batch.inputs):
            figure = plot_attributions(part[offset:offset + 1],
                                       image[None] if image.ndim == 3 else None,
                                       channel_axis=channel_axis)
            save(figure, folder / f"{batch.start + offset:05d}.png")  # type: ignore[arg-type]
