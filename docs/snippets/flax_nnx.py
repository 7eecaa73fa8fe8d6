import numpy as np
from flax import nnx

from agnostic_saliency import Saliency


class CNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), padding="VALID", rngs=rngs)
        self.dense = nnx.Linear(30 * 30 * 8, 10, rngs=rngs)
    def __call__(self, x):
        return self.dense(nnx.relu(self.conv(x)).reshape(len(x), -1))

images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
maps = Saliency(CNN(nnx.Rngs(0))).explain(images, targets=[0, 1, 2, 3])  # (4, 32, 32)
