"""Gradient-based methods beyond vanilla saliency, all computed in NumPy in the frontend."""

from agnostic_saliency.methods.gradient_input import GradientInput
from agnostic_saliency.methods.integrated_gradients import IntegratedGradients
from agnostic_saliency.methods.noise_tunnel import NoiseTunnel
from agnostic_saliency.methods.smoothing import SmoothGrad, SquareGrad, VarGrad

__all__ = ["GradientInput", "IntegratedGradients", "NoiseTunnel", "SmoothGrad", "SquareGrad",
           "VarGrad"]
