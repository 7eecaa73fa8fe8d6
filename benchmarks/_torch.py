"""PyTorch contenders: agnostic-saliency, hand-written native code, Captum, PAIR.

The model lives on the CPU or on a CUDA GPU (``run.py --device``); PAIR runs on the CPU only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from _harness import Case, Contender, version, weights

__all__ = ["check_device", "contenders", "versions"]


def check_device(device: str) -> None:
    """Exit with a message when ``device`` is ``"cuda"`` and PyTorch sees no CUDA device.

    Parameters
    ----------
    device : str
        ``"cpu"`` or ``"cuda"``, as ``run.py --device`` takes it.

    Raises
    ------
    SystemExit
        For ``"cuda"`` when ``torch.cuda.is_available()`` is false.
    """
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        kind = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise SystemExit(
            f"--device cuda: PyTorch {torch.__version__} ({kind}) sees no CUDA device "
            "(torch.cuda.is_available() is False). Run on a machine with an NVIDIA GPU "
            "and a CUDA build of PyTorch, or use --device cpu.")


def versions(device: str = "cpu") -> dict[str, str]:
    """Versions of PyTorch, Captum and PAIR saliency, and the GPU's name on ``"cuda"``.

    Parameters
    ----------
    device : str
        ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    dict of str to str
        Distribution names to versions (``""`` when not installed), the number of
        threads, and for ``"cuda"`` the CUDA version and the device's name.
    """
    import torch

    found = {"torch": torch.__version__, "torch_threads": str(torch.get_num_threads())}
    for name in ("captum", "saliency"):
        found[name] = version(name)
    if device == "cuda":
        found["torch_cuda"] = torch.version.cuda or ""
        found["device_name"] = torch.cuda.get_device_name()
    return found


def build(model: str, device: str = "cpu") -> Any:
    """The benchmark model in PyTorch, in eval mode, with the shared seeded weights.

    Parameters
    ----------
    model : str
        ``"cnn"`` or ``"mlp"``.
    device : str
        Where its parameters live: ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    torch.nn.Sequential
        The model on ``device``.
    """
    import torch

    spec = weights(model)
    layers: list[Any] = []
    for kernel, bias, stride in spec.convs:
        conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, stride=stride)
        conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        conv.bias.data = torch.from_numpy(bias)
        layers += [conv, torch.nn.ReLU()]
    if spec.convs:
        layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
    for index, (kernel, bias) in enumerate(spec.dense):
        dense = torch.nn.Linear(*kernel.shape)
        dense.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.T))
        dense.bias.data = torch.from_numpy(bias)
        layers.append(dense)
        if index < len(spec.dense) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(device).eval()


def contenders(case: Case, with_compile: bool = False, device: str = "cpu") -> list[Contender]:
    """The contenders of ``case``; the first is native code, the reference.

    Parameters
    ----------
    case : Case
        The model, batch size and input shape.
    with_compile : bool
        Also time native code around ``torch.compile(model)`` and
        ``TorchBackend(compile=True)``.
    device : str
        ``"cpu"`` or ``"cuda"``: where the model lives. Every contender starts from
        the same NumPy inputs and returns NumPy maps, so on ``"cuda"`` the copies to
        and from the GPU are timed, and the copy back waits for the GPU. PAIR
        saliency, one sample per call, runs on ``"cpu"`` only.

    Returns
    -------
    list of Contender
        Native code first.
    """
    import torch

    from agnostic_saliency import Saliency

    model = build(case.model, device)
    x_last, y = case.inputs()
    image = x_last.ndim == 4
    x = np.ascontiguousarray(x_last.transpose(0, 3, 1, 2)) if image else x_last
    labels = torch.from_numpy(y).to(device)

    native = _native_saliency(model, x, labels, image, device)
    native_vjp = _native_saliency(model, x, labels, image, device, one_hot_vjp=True)
    explainer = Saliency(model)

    def ours() -> np.ndarray:
        return explainer.explain(x, y)

    found = [Contender("native", native),
             Contender("native (one-hot VJP)", native_vjp,
                       note="autograd.grad(outputs, x, grad_outputs=one-hot labels)"),
             Contender("agnostic-saliency", ours)]
    if version("captum"):
        found += _captum(model, x, labels, image, device)
    if version("saliency") and device == "cpu":
        found.append(_pair(model, x_last, y, image))
    if with_compile:
        found.append(_compiled_native(model, x, labels, image, device))
        found.append(_compiled_ours(model, x, y))
    return found


def _compiled_ours(model: Any, x: np.ndarray, y: np.ndarray) -> Contender:
    """``Saliency`` with ``TorchBackend(compile=True)``; the first call compiles."""
    from agnostic_saliency_torch import TorchBackend

    from agnostic_saliency import Saliency

    explainer = Saliency(model, backend=TorchBackend(compile=True))
    return Contender("agnostic-saliency (compile=True)", lambda: explainer.explain(x, y),
                     note="TorchBackend(compile=True): torch.compile's defaults")


def _captum(model: Any, x: np.ndarray, labels: Any, image: bool, device: str = "cpu"
            ) -> list[Contender]:
    """Captum's Saliency on the NCHW tensor and, for images, on a channels-last one."""
    import torch
    from captum.attr import Saliency as CaptumSaliency

    captum = CaptumSaliency(model)
    target = torch.device(device)  # on the CPU, .to(target) and .cpu() return the tensor

    def run(layout: Any) -> np.ndarray:
        tensor = torch.from_numpy(x).to(target)
        if layout is not None:
            tensor = tensor.contiguous(memory_format=layout)
        maps = captum.attribute(tensor, target=labels, abs=True)
        return (maps.amax(dim=1) if image else maps).detach().cpu().numpy()

    found = [Contender("captum", lambda: run(None),
                       note="Saliency.attribute(abs=True) on the NCHW tensor, then amax")]
    if image:
        found.append(Contender("captum (channels-last input)",
                               lambda: run(torch.channels_last),
                               note="the same on a channels-last tensor (expert use)"))
    return found


def _pair(model: Any, x_last: np.ndarray, y: np.ndarray, image: bool) -> Contender:
    """PAIR's GradientSaliency, per sample, with the call_model_function of its examples."""
    import saliency.core as pair
    import torch

    def call_model(images: np.ndarray, call_model_args: Any = None,
                   expected_keys: Any = None) -> dict[str, np.ndarray]:
        tensor = torch.from_numpy(images)
        if image:
            tensor = tensor.permute(0, 3, 1, 2)
        tensor.requires_grad_(True)
        outputs = model(tensor)[:, call_model_args["class"]]
        (grads,) = torch.autograd.grad(outputs, tensor, grad_outputs=torch.ones_like(outputs))
        if image:
            grads = torch.movedim(grads, 1, 3)
        return {pair.INPUT_OUTPUT_GRADIENTS: grads.detach().numpy()}

    method = pair.GradientSaliency()

    def run() -> np.ndarray:
        masks = np.stack([method.GetMask(sample, call_model, {"class": int(target)})
                          for sample, target in zip(x_last, y, strict=True)])
        masks = np.abs(masks)
        return masks.max(axis=-1) if image else masks

    return Contender("PAIR saliency", run, note="GradientSaliency.GetMask per sample")


def _compiled_native(model: Any, x: np.ndarray, labels: Any, image: bool,
                     device: str = "cpu") -> Contender:
    """Native code around ``torch.compile(model)``; its first call includes the compilation."""
    import torch

    run = _native_saliency(torch.compile(model), x, labels, image, device)
    return Contender("native + torch.compile", run, note="torch.compile(model), default mode")


def _native_saliency(model: Any, x: np.ndarray, labels: Any, image: bool, device: str = "cpu",
                     one_hot_vjp: bool = False) -> Callable[[], np.ndarray]:
    """What an expert writes: channels-last input, autograd.grad w.r.t. the input.

    The score is the sum of the target logits (a gather), or with ``one_hot_vjp``
    the backward pass starts from one-hot rows of the labels (``grad_outputs``):
    no gather, no sum, none of their backward nodes; at batch 1 that is faster.
    The reference of the ratios is the faster of the two. On a GPU the inputs are
    copied there and the map back; ``.cpu()`` waits for the GPU, so a call's time
    is the whole computation. On the CPU both copies return the tensor itself.
    """
    import torch

    target = torch.device(device)
    rows = labels[:, None]

    def run() -> np.ndarray:
        tensor = torch.from_numpy(x).to(target)
        if image:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        tensor.requires_grad_(True)
        outputs = model(tensor)
        if one_hot_vjp:
            one_hot = torch.zeros_like(outputs).scatter_(1, rows, 1.0)
            (grad,) = torch.autograd.grad(outputs, tensor, one_hot)
        else:
            (grad,) = torch.autograd.grad(outputs.gather(1, rows).sum(), tensor)
        grad = grad.abs()
        return (grad.amax(dim=1) if image else grad).cpu().numpy()

    return run
