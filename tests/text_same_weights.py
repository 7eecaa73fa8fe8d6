"""One small text classifier, its seeded weights, tokens and NumPy oracles.

Framework-free: used by ``tests/test_cross_framework_text.py`` and by the Keras child
processes (``tests/keras_process/keras_text_maps.py``), which each build the same
architecture by hand in their framework and load these weights.

Two variants share the embedding and the head:

``"pool"``
    embedding -> ``tanh(h @ W_mix + b_mix)`` per token -> mean over the unmasked
    tokens -> ``@ W_head + b_head``. Its gradient with respect to the embedding's
    output has a closed form (:func:`pool_gradient`).
``"attention"``
    embedding -> ``h + softmax(q k^T / sqrt(D), padded keys at -1e9) v`` (one head,
    no biases) -> mean over the unmasked tokens -> ``@ W_head + b_head``. Its oracle
    is central differences of the float64 NumPy forward (:func:`numeric_gradient`).

Kernels are stored as ``(in, out)`` (Keras' ``Dense``, Flax's ``Linear``); PyTorch's
``Linear.weight`` is their transpose.
"""

from __future__ import annotations

from typing import Any

import numpy as np

VOCAB, HIDDEN, CLASSES = 50, 8, 3
N, LENGTH = 5, 7
PAD = 0
VARIANTS = ("pool", "attention")
METHODS = ("saliency", "gradient_input", "integrated_gradients")
STEPS = 8  # Integrated Gradients' path points, Gauss-Legendre nodes (baseline 0)
TARGETS = np.array([0, 2, 1, 2, 0])


def weights(seed: int = 26) -> dict[str, np.ndarray]:
    """The float32 weights of both variants, kernels ``(in, out)``."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (scale * rng.normal(size=shape)).astype(np.float32)

    scale = 1 / np.sqrt(HIDDEN)
    return {
        "embedding": normal(VOCAB, HIDDEN),
        "mix_kernel": normal(HIDDEN, HIDDEN, scale=scale), "mix_bias": normal(HIDDEN, scale=0.1),
        "query": normal(HIDDEN, HIDDEN, scale=scale), "key": normal(HIDDEN, HIDDEN, scale=scale),
        "value": normal(HIDDEN, HIDDEN, scale=scale),
        "head_kernel": normal(HIDDEN, CLASSES, scale=scale), "head_bias": normal(CLASSES),
    }


def tokens() -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``(N, L)`` int32, ``PAD`` where the attention mask is 0, and the mask."""
    rng = np.random.default_rng(7)
    mask = np.ones((N, LENGTH), np.int32)
    mask[1, 5:] = 0
    mask[2, 1:] = 0  # one real token
    mask[4, 3:] = 0
    ids = rng.integers(1, VOCAB, size=(N, LENGTH)).astype(np.int32)
    return np.where(mask == 1, ids, PAD).astype(np.int32), mask


def forward(xp: Any, params: dict[str, Any], hidden: Any, mask: Any, variant: str) -> Any:
    """Logits ``(N, CLASSES)`` from the embedding's output; ``xp`` is NumPy or ``jax.numpy``.

    The plain JAX function of the test is this with ``xp=jax.numpy``.
    """
    weights_ = xp.asarray(mask, hidden.dtype)[..., None]  # (N, L, 1)
    if variant == "pool":
        tokens_ = xp.tanh(hidden @ params["mix_kernel"] + params["mix_bias"])
    else:
        query, key, value = (hidden @ params[name] for name in ("query", "key", "value"))
        scores = xp.einsum("nld,nmd->nlm", query, key) / np.sqrt(HIDDEN)
        scores = xp.where(xp.asarray(mask)[:, None, :] == 1, scores, -1e9)
        scores = xp.exp(scores - scores.max(axis=-1, keepdims=True))
        tokens_ = hidden + (scores / scores.sum(axis=-1, keepdims=True)) @ value
    pooled = (tokens_ * weights_).sum(axis=1) / weights_.sum(axis=1)
    return pooled @ params["head_kernel"] + params["head_bias"]


def float64(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value.astype(np.float64) for name, value in params.items()}


def pool_gradient(params: dict[str, np.ndarray], hidden: np.ndarray, mask: np.ndarray,
                  targets: np.ndarray) -> np.ndarray:
    """d logit[target] / d hidden of ``"pool"``, exactly: share_l * W_mix diag(1 - t^2) w_k."""
    p = float64(params)
    slope = 1 - np.tanh(hidden @ p["mix_kernel"] + p["mix_bias"]) ** 2  # (N, L, D)
    share = mask / mask.sum(axis=1, keepdims=True)  # (N, L)
    column = p["head_kernel"][:, targets].T[:, None, :]  # (N, 1, D)
    return ((slope * column) @ p["mix_kernel"].T) * share[..., None]


def numeric_gradient(params: dict[str, np.ndarray], hidden: np.ndarray, mask: np.ndarray,
                     targets: np.ndarray, variant: str, step: float = 1e-4) -> np.ndarray:
    """d logit[target] / d hidden by central differences of the float64 forward.

    Samples are independent, so one coordinate ``(l, d)`` is moved in every sample at once.
    """
    p, hidden = float64(params), hidden.astype(np.float64)
    rows = np.arange(len(hidden))
    grad = np.zeros_like(hidden)
    for position in range(hidden.shape[1]):
        for unit in range(hidden.shape[2]):
            moved = hidden.copy()
            moved[:, position, unit] += step
            up = forward(np, p, moved, mask, variant)[rows, targets]
            moved[:, position, unit] -= 2 * step
            down = forward(np, p, moved, mask, variant)[rows, targets]
            grad[:, position, unit] = (up - down) / (2 * step)
    return grad


def expected_maps(variant: str) -> dict[str, np.ndarray]:
    """The oracle's token maps ``(N, L)`` of every method, in float64.

    Saliency: the l2 norm of the gradient over the hidden axis; Gradient x Input and
    Integrated Gradients (baseline 0, ``STEPS`` Gauss-Legendre nodes on [0, 1]): summed
    over the hidden axis.
    """
    params = weights()
    ids, mask = tokens()
    hidden = params["embedding"][ids].astype(np.float64)

    def grad(points: np.ndarray) -> np.ndarray:
        if variant == "pool":
            return pool_gradient(params, points, mask, TARGETS)
        return numeric_gradient(params, points, mask, TARGETS, variant)

    at_x = grad(hidden)
    nodes, node_weights = np.polynomial.legendre.leggauss(STEPS)
    path = sum(w / 2 * grad((a + 1) / 2 * hidden) for a, w in zip(nodes, node_weights, strict=True))
    return {
        "saliency": np.linalg.norm(at_x, axis=-1),
        "gradient_input": (at_x * hidden).sum(axis=-1),
        "integrated_gradients": (hidden * path).sum(axis=-1),
    }


def method_options() -> dict[str, tuple[str, dict[str, Any]]]:
    """Per method: the class name in ``agnostic_saliency`` and its arguments."""
    return {
        "saliency": ("Saliency", {"reducer": "l2"}),
        "gradient_input": ("GradientInput", {"reducer": "sum"}),
        "integrated_gradients": ("IntegratedGradients", {
            "reducer": "sum", "steps": STEPS, "quadrature": "gausslegendre",
            "baseline_value": 0.0}),
    }


def explain_all(model_for: Any, layer_for: Any, inputs: Any,
                **options: Any) -> dict[str, np.ndarray]:
    """Maps ``"variant/method"`` -> ``(N, L)`` of models built by ``model_for(variant)``.

    ``layer_for(model)`` is the model's embedding layer; ``options`` go to every method.
    """
    import agnostic_saliency

    maps = {}
    for variant in VARIANTS:
        model = model_for(variant)
        for method, (name, arguments) in method_options().items():
            explainer = getattr(agnostic_saliency, name)(
                model, layer=layer_for(model), **arguments, **options)
            maps[f"{variant}/{method}"] = np.asarray(explainer.explain(inputs, TARGETS))
    return maps
