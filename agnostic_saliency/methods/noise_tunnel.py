"""NoiseTunnel: any method of the gradient family, averaged over noisy copies of the input.

As Captum's ``NoiseTunnel``: every input gets ``nb_samples`` noisy copies, the
wrapped method explains each copy (with the input's target, and for Integrated
Gradients the input's baseline), and the copies' attributions are combined:
their mean (``"smoothgrad"``), the mean of their squares (``"smoothgrad_sq"``) or
their population variance (``"vargrad"``). Noise is SmoothGrad's: seeded, drawn
per sample id and channels-last, so it is the same on every backend; copies are
made chunk by chunk, so memory is bounded by ``batch_size`` points.
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np

from agnostic_saliency import messages
from agnostic_saliency._definitions import check_choice, check_positive
from agnostic_saliency._memory import BatchSize
from agnostic_saliency._run import Run
from agnostic_saliency.explainer import GradientExplainer
from agnostic_saliency.methods._noise import NoiseScale, noisy_copies
from agnostic_saliency.methods._perturbation import (
    CopiesRun,
    PerturbationExplainer,
    RunningMoments,
)
from agnostic_saliency.methods.smoothing import SmoothGrad, VarGrad

__all__ = ["KINDS", "NoiseTunnel"]

Kind = Literal["smoothgrad", "smoothgrad_sq", "vargrad"]
KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


class NoiseTunnel(PerturbationExplainer):
    """Captum's ``NoiseTunnel`` over a method of the gradient family.

    Parameters
    ----------
    explainer
        The wrapped method: :class:`~agnostic_saliency.Saliency`,
        :class:`~agnostic_saliency.GradientInput`,
        :class:`~agnostic_saliency.IntegratedGradients`, or another
        :class:`~agnostic_saliency.explainer.GradientExplainer` that adds no noise itself.
        Its model, backend, targets' operator, channel axis and reducer are used; the
        reducer applies to the combined attributions, as in Captum.
    nb_samples
        Noisy copies per input (Captum's ``nt_samples``, default 5).
    noise
        Standard deviation of the Gaussian noise (Captum's ``stdevs``, default 1.0).
    noise_scale
        ``"absolute"``: ``noise`` is sigma (Captum); ``"relative"``: sigma is ``noise``
        times each input's range ``max - min``.
    kind
        ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares) or ``"vargrad"``
        (population variance), as Captum's ``nt_type``.
    seed
        Seed of the noise; ``None`` draws fresh noise on every call.
    batch_size
        Most points per model call (noisy copies times the wrapped method's path
        points); ``None`` takes the wrapped explainer's ``batch_size``.

    Raises
    ------
    TypeError
        For a wrapped explainer that adds noise itself (SmoothGrad's family, a
        NoiseTunnel) or is no explainer.
    ValueError
        For a bad ``nb_samples``, ``noise``, ``noise_scale`` or ``kind``.

    Examples
    --------
    >>> tunnel = NoiseTunnel(IntegratedGradients(model, preset="captum"),  # doctest: +SKIP
    ...                      nb_samples=10, noise=0.1, kind="smoothgrad_sq", seed=0)
    >>> maps = tunnel.explain(images, labels)  # doctest: +SKIP
    """

    def __init__(self, explainer: GradientExplainer, *, nb_samples: int = 5,
                 noise: float = 1.0, noise_scale: NoiseScale = "absolute",
                 kind: Kind = "smoothgrad", seed: int | None = None,
                 batch_size: BatchSize = None) -> None:
        _check_wrappable(explainer)
        options = explainer.options
        super().__init__(explainer.model, backend=explainer.backend,
                         batch_size=explainer.batch_size if batch_size is None else batch_size,
                         operator=explainer.operator, channel_axis=explainer.channel_axis,
                         reducer=explainer.reducer, output_selector=options.output_selector,
                         allow_training_mode=options.allow_training_mode,
                         strict=explainer.strict)
        self.explainer = explainer
        self.nb_samples = check_positive("nb_samples", nb_samples, 1, True)
        self.noise = check_positive("noise", noise, 0.0, False)
        self.noise_scale = check_choice("noise_scale", noise_scale, ("absolute", "relative"))
        self.kind = check_choice("kind", kind, KINDS)
        self.seed = seed
        # The wrapped method, bounded by this batch size (the caller's object is untouched).
        self._inner = copy.copy(explainer)
        self._inner.batch_size = self.batch_size

    def __repr__(self) -> str:
        return f"NoiseTunnel({self.explainer!r}, kind={self.kind!r})"

    def _points_per_copy(self) -> int:
        inner = self._inner
        return inner._count() if isinstance(inner, PerturbationExplainer) else 1

    def _count(self) -> int:
        return self.nb_samples * self._points_per_copy()

    def _attribute(self, run: Run, rows: slice) -> np.ndarray:
        samples = rows.stop - rows.start
        budget = run.model_batch // (samples * self._points_per_copy())
        per_chunk = min(self.nb_samples, max(1, budget))
        moments = RunningMoments()
        squares: np.ndarray | float = 0.0
        for first in range(0, self.nb_samples, per_chunk):
            size = min(per_chunk, self.nb_samples - first)
            copies = np.concatenate([
                noisy_copies(run, self.seed, index, size, self.noise, self.noise_scale)
                for index in range(rows.start, rows.stop)])
            origin = np.repeat(np.arange(rows.start, rows.stop), size)
            sub = CopiesRun(run, copies, origin)
            attributions = self._inner._attribute(sub, sub.everything)
            attributions = attributions.reshape(samples, size, *attributions.shape[1:])
            if self.kind == "smoothgrad_sq":
                squares = squares + np.square(attributions, dtype=np.float64).sum(axis=1)
            else:
                moments.update(attributions)
        if self.kind == "smoothgrad_sq":
            return np.asarray(squares) / self.nb_samples
        if self.kind == "vargrad":
            return moments.variance(ddof=0)
        return np.asarray(moments.mean)


def _check_wrappable(explainer: object) -> None:
    if not isinstance(explainer, GradientExplainer) or isinstance(
            explainer, (SmoothGrad, VarGrad, NoiseTunnel)):
        raise TypeError(messages.not_gradient_family(type(explainer).__name__))
