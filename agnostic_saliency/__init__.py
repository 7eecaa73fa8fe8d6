"""agnostic-saliency: one Saliency API across PyTorch, TensorFlow, Keras 3 and JAX.

Importing this package imports no framework. Backends are plugins found through
the entry-point group ``agnostic_saliency.backends``.
"""

from agnostic_saliency.backend import Backend, CallOptions
from agnostic_saliency.compare import ComparisonReport, ComparisonRow, compare
from agnostic_saliency.explainer import GradientExplainer
from agnostic_saliency.messages import SaliencyWarning
from agnostic_saliency.methods import (
    GradientInput,
    IntegratedGradients,
    NoiseTunnel,
    SmoothGrad,
    SquareGrad,
    VarGrad,
)
from agnostic_saliency.registry import get_backend, list_backends, register_backend
from agnostic_saliency.saliency import Saliency

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "CallOptions",
    "ComparisonReport",
    "ComparisonRow",
    "GradientExplainer",
    "GradientInput",
    "IntegratedGradients",
    "NoiseTunnel",
    "Saliency",
    "SaliencyWarning",
    "SmoothGrad",
    "SquareGrad",
    "VarGrad",
    "__version__",
    "compare",
    "get_backend",
    "list_backends",
    "register_backend",
]
