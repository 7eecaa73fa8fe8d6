import jax
import numpy as np

from agnostic_saliency import Saliency

w = jax.random.normal(jax.random.key(0), (32 * 32 * 3, 10))
def model(x):                      # a plain function: pass backend="jax"
    return x.reshape(len(x), -1) @ w

images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
maps = Saliency(model, backend="jax").explain(images, targets=[0, 1, 2, 3])  # (4, 32, 32)
