"""The vector-Jacobian product of a score with respect to the input leaf.

``torch.autograd.grad`` checks its arguments in Python before it hands them to the
autograd engine: tuples, ``__torch_function__`` overrides, the shapes of
``grad_outputs``, a debug-logging hook, and a copy of the context for the engine's
device threads. The backend has already made sure of what those checks are for, so
on the CPU it calls the engine directly. Measured on the 2-core benchmark CPU, in
one process against the backend without it (which also walked the model's modules
a little more slowly), alternating call by call with native code in orders where each
follows native code equally often: 93–102 µs less per call for the benchmark MLP at
batch 256 (three runs of 3000 calls, native code 2.5–2.8 ms), 28 µs at batch 1.

The direct call is taken only where it runs exactly what ``torch.autograd.grad``
would run:

- every tensor is a plain CPU ``torch.Tensor`` and no ``__torch_function__`` mode
  is active (the public function would hand those to the override);
- the weights have the outputs' shape and dtype (the backend checks and casts them);
- the debug log of ``torch.autograd.graph`` is off (the public function would
  attach its logging hooks);
- on the CPU the engine runs the backward pass on the calling thread, so no
  context needs to be stashed for another thread;
- the engine passed a probe on first use: a small graph whose gradient is known.

Anywhere else, and with a PyTorch whose engine does not pass the probe, the
public ``torch.autograd.grad`` runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["input_gradient"]

#: The autograd engine once it passed the probe, ``False`` if it failed, ``None``
#: before the first call.
_engine: Any = None


def input_gradient(score: torch.Tensor, leaf: torch.Tensor,
                   weights: torch.Tensor | None) -> torch.Tensor | None:
    """``weights``-weighted gradient of ``score`` with respect to ``leaf`` (``None``
    where ``score`` does not depend on it); ``weights=None`` for a scalar score.

    The same as ``torch.autograd.grad(score, leaf, weights, allow_unused=True)[0]``,
    without its Python checks where they cannot change the result (see the module's
    docstring).
    """
    import torch

    if weights is None and score.ndim == 0:
        weights = torch.ones_like(score)
    engine = _engine if _engine is not None else _probe_engine()
    if engine is not False and weights is not None and _plain(score, leaf, weights):
        (grad,) = engine.run_backward((score,), (weights,), False, False, (leaf,), True, False)
        return grad
    (grad,) = torch.autograd.grad(score, leaf, weights, allow_unused=True)
    return grad


def _plain(score: torch.Tensor, leaf: torch.Tensor, weights: torch.Tensor) -> bool:
    """Whether ``torch.autograd.grad`` would do nothing but call the engine."""
    import torch

    tensor = torch.Tensor
    return (type(score) is tensor and type(leaf) is tensor and type(weights) is tensor
            and score.is_cpu and leaf.is_cpu and weights.is_cpu
            and score.shape == weights.shape and score.dtype == weights.dtype
            and not torch.overrides.has_torch_function((score, leaf, weights))
            and not _GRAPH_LOG.isEnabledFor(logging.DEBUG))


def _probe_engine() -> Any:
    """The autograd engine if its ``run_backward`` gives a known gradient, else ``False``."""
    global _engine
    import torch

    engine = _find_engine()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            leaf = torch.tensor([1.0, -2.0], requires_grad=True)
            outputs = leaf * leaf
            found = engine.run_backward((outputs,), (torch.tensor([1.0, 3.0]),),
                                        False, False, (leaf,), True, False)
        works = torch.equal(found[0], torch.tensor([2.0, -12.0]))
    except Exception:  # an engine without this signature: the public function will do
        works = False
    _engine = engine if works else False
    return _engine


def _find_engine() -> Any:
    """PyTorch's autograd engine (``None`` if this version has none by that name)."""
    import torch

    return getattr(torch.autograd.Variable, "_execution_engine", None)


def reset() -> None:
    """Forget the probe's answer (for tests that replace the engine)."""
    global _engine
    _engine = None


#: The logger whose debug level makes ``torch.autograd.grad`` attach logging hooks.
_GRAPH_LOG = logging.getLogger("torch.autograd.graph")
