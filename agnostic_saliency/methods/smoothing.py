"""SmoothGrad, SquareGrad and VarGrad: statistics of gradients at noisy copies of the input.

Noise is drawn in NumPy from ``np.random.default_rng([seed, sample_id])``, one
stream per sample (its global id), channels-last (see
:mod:`agnostic_saliency.methods._noise`). The same seed therefore gives the same
noise on every backend, for every ``batch_size`` and for channels-first and
channels-last twins.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from agnostic_saliency._definitions import (
    DEFAULT,
    check_choice,
    check_positive,
    layer_reducer,
    resolve_definitions,
)
from agnostic_saliency._run import Run
from agnostic_saliency.methods._noise import NoiseScale, noisy_copies
from agnostic_saliency.methods._perturbation import (
    PerturbationExplainer,
    PointMaker,
    RunningMoments,
)

__all__ = ["SmoothGrad", "SquareGrad", "VarGrad"]

Average = Literal["gradient", "absolute", "square"]

_SMOOTHGRAD_PRESETS: dict[str, dict[str, Any] | None] = {
    "xplique": {"nb_samples": 50, "noise": 0.2, "noise_scale": "absolute",
                "average": "gradient", "reducer": "mean"},
    "captum": {"nb_samples": 5, "noise": 1.0, "noise_scale": "absolute",
               "average": "absolute", "reducer": None},
    "pair": {"nb_samples": 25, "noise": 0.15, "noise_scale": "relative",
             "average": "square", "reducer": None},
}
_VARGRAD_PRESETS: dict[str, dict[str, Any] | None] = {
    "xplique": {"nb_samples": 50, "noise": 0.2, "noise_scale": "absolute",
                "variance_of": "gradient", "ddof": 1, "reducer": "mean"},
    "captum": {"nb_samples": 5, "noise": 1.0, "noise_scale": "absolute",
               "variance_of": "absolute", "ddof": 0, "reducer": None},
    "pair": None,
}


class _NoisyExplainer(PerturbationExplainer):
    """Common parameters and noise of the smoothing family."""

    nb_samples: int
    noise: float
    noise_scale: NoiseScale

    def _set_noise(self, definitions: dict[str, Any], seed: int | None) -> None:
        self.nb_samples = check_positive("nb_samples", definitions["nb_samples"], 1, True)
        self.noise = check_positive("noise", definitions["noise"], 0.0, False)
        self.noise_scale = check_choice("noise_scale", definitions["noise_scale"],
                                        ("absolute", "relative"))
        self.seed = seed

    def _count(self) -> int:
        return self.nb_samples

    def _noisy_points(self, run: Run, rows: slice) -> PointMaker:
        def make_points(x_rows: np.ndarray, first: int, size: int) -> np.ndarray:
            parts = [noisy_copies(run, self.seed, rows.start + i, size, self.noise,
                                  self.noise_scale) for i in range(len(x_rows))]
            return np.concatenate(parts)

        return make_points


class SmoothGrad(_NoisyExplainer):
    """SmoothGrad (Smilkov et al. 2017): the average gradient over noisy copies of the input.

    Parameters
    ----------
    model
        A model of any framework with an installed backend, or a function with ``backend=``.
    nb_samples
        Noisy copies per input (Xplique 50, Captum 5, PAIR 25).
    noise
        Standard deviation of the Gaussian noise (Xplique 0.2, Captum 1.0, PAIR 0.15).
    noise_scale
        ``"absolute"``: ``noise`` is sigma; ``"relative"``: sigma is ``noise`` times the
        input's range ``max - min`` (PAIR, tf-keras-vis).
    average
        What is averaged: ``"gradient"`` (signed, Xplique), ``"absolute"`` (Captum with
        its default ``Saliency``), ``"square"`` (PAIR's default ``magnitude=True``).
    reducer
        Channel reduction of image maps (Xplique ``"mean"``; Captum and PAIR keep
        channels: ``None``).
    preset
        ``"xplique"`` (the default definitions), ``"captum"`` or ``"pair"``: every
        definition of that library; explicit arguments still win.
    seed
        Seed of the noise; ``None`` draws fresh noise on every call.
    **options
        ``backend``, ``batch_size``, ``operator``, ``channel_axis``, ``output_selector``,
        ``allow_training_mode``, ``strict``: see
        :class:`~agnostic_saliency.explainer.GradientExplainer`. ``batch_size`` bounds the
        number of noisy points per model call (``None``: the larger of the number of
        inputs and 128), so memory does not grow with ``nb_samples``.
    """

    def __init__(self, model: Any, *, nb_samples: int = DEFAULT, noise: float = DEFAULT,
                 noise_scale: NoiseScale = DEFAULT, average: Average = DEFAULT,
                 reducer: Any = DEFAULT, preset: str | None = None, seed: int | None = None,
                 **options: Any) -> None:
        self.preset = preset
        reducer = layer_reducer(reducer, options)
        definitions = resolve_definitions(
            type(self).__name__, self._presets(), preset,
            {"nb_samples": nb_samples, "noise": noise, "noise_scale": noise_scale,
             "average": average, "reducer": reducer})
        super().__init__(model, reducer=definitions["reducer"], **options)
        self._set_noise(definitions, seed)
        self.average = check_choice("average", definitions["average"],
                                    ("gradient", "absolute", "square"))

    def _presets(self) -> dict[str, dict[str, Any] | None]:
        return _SMOOTHGRAD_PRESETS

    def _attribute(self, run: Run, rows: slice) -> np.ndarray:
        total: np.ndarray | float = 0.0
        for gradients in self._gradients_at(run, rows, self._noisy_points(run, rows)):
            if self.average == "absolute":
                gradients = np.abs(gradients)
            elif self.average == "square":
                gradients = np.square(gradients, dtype=np.float64)
            total = total + gradients.sum(axis=1, dtype=np.float64)
        return np.asarray(total) / self.nb_samples


class SquareGrad(SmoothGrad):
    """SquareGrad (Hooker et al. 2019): the mean squared gradient over noisy copies.

    The parameters are :class:`SmoothGrad`'s, with ``average="square"`` fixed.

    Parameters
    ----------
    model
        A model of any framework with an installed backend, or a function with ``backend=``.
    nb_samples
        Noisy copies per input (Xplique 50, Captum 5, PAIR 25).
    noise
        Standard deviation of the Gaussian noise (Xplique 0.2, Captum 1.0, PAIR 0.15).
    noise_scale
        ``"absolute"`` or ``"relative"``, as :class:`SmoothGrad`.
    reducer
        Channel reduction of image maps (Xplique ``"mean"``; Captum, PAIR ``None``).
    preset
        ``"xplique"`` (default), ``"captum"`` or ``"pair"``.
    seed
        Seed of the noise; ``None`` draws fresh noise on every call.
    **options
        As :class:`SmoothGrad`.
    """

    def __init__(self, model: Any, *, nb_samples: int = DEFAULT, noise: float = DEFAULT,
                 noise_scale: NoiseScale = DEFAULT, reducer: Any = DEFAULT,
                 preset: str | None = None, seed: int | None = None, **options: Any) -> None:
        super().__init__(model, nb_samples=nb_samples, noise=noise, noise_scale=noise_scale,
                         average="square", reducer=reducer, preset=preset, seed=seed, **options)


class VarGrad(_NoisyExplainer):
    """VarGrad (Adebayo et al. 2018): the variance of the gradient over noisy copies.

    Parameters
    ----------
    model
        A model of any framework with an installed backend, or a function with ``backend=``.
    nb_samples
        Noisy copies per input (Xplique 50, Captum 5); at least ``ddof + 1``.
    noise
        Standard deviation of the Gaussian noise (Xplique 0.2, Captum 1.0).
    noise_scale
        ``"absolute"`` or ``"relative"``, as :class:`SmoothGrad`.
    variance_of
        ``"gradient"`` (Xplique) or ``"absolute"``: the variance of ``|gradient|``
        (Captum's ``NoiseTunnel`` over its default ``Saliency``).
    ddof
        Delta degrees of freedom: 1 for the unbiased variance (Xplique), 0 for the
        population variance (Captum).
    reducer
        Channel reduction of image maps (Xplique ``"mean"``; Captum ``None``).
    preset
        ``"xplique"`` (default) or ``"captum"``; PAIR has no VarGrad, so ``"pair"`` is
        refused.
    seed
        Seed of the noise; ``None`` draws fresh noise on every call.
    **options
        ``backend``, ``batch_size``, ``operator``, ``channel_axis``, ``output_selector``,
        ``allow_training_mode``, ``strict``: see
        :class:`~agnostic_saliency.explainer.GradientExplainer`.
    """

    def __init__(self, model: Any, *, nb_samples: int = DEFAULT, noise: float = DEFAULT,
                 noise_scale: NoiseScale = DEFAULT, variance_of: str = DEFAULT,
                 ddof: int = DEFAULT, reducer: Any = DEFAULT, preset: str | None = None,
                 seed: int | None = None, **options: Any) -> None:
        self.preset = preset
        reducer = layer_reducer(reducer, options)
        definitions = resolve_definitions(
            "VarGrad", _VARGRAD_PRESETS, preset,
            {"nb_samples": nb_samples, "noise": noise, "noise_scale": noise_scale,
             "variance_of": variance_of, "ddof": ddof, "reducer": reducer})
        super().__init__(model, reducer=definitions["reducer"], **options)
        self._set_noise(definitions, seed)
        self.variance_of = check_choice("variance_of", definitions["variance_of"],
                                        ("gradient", "absolute"))
        self.ddof = check_choice("ddof", definitions["ddof"], (0, 1))
        check_positive("nb_samples", self.nb_samples, self.ddof + 1, True)

    def _attribute(self, run: Run, rows: slice) -> np.ndarray:
        moments = RunningMoments()
        for gradients in self._gradients_at(run, rows, self._noisy_points(run, rows)):
            moments.update(np.abs(gradients) if self.variance_of == "absolute" else gradients)
        return moments.variance(self.ddof)
