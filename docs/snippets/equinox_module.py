import equinox as eqx
import jax
import numpy as np

from agnostic_saliency import Saliency


class Classifier(eqx.Module):
    mlp: eqx.nn.MLP
    def __call__(self, x):  # eqx.nn.MLP takes one sample: vmap it
        return jax.vmap(self.mlp)(x.reshape(len(x), -1))

model = Classifier(eqx.nn.MLP(32 * 32 * 3, 10, 64, 2, key=jax.random.key(0)))
images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
maps = Saliency(model).explain(images, targets=[0, 1, 2, 3])  # (4, 32, 32)
