import numpy as np
import tensorflow as tf

from agnostic_saliency import Saliency


class Linear(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.random.normal((32 * 32 * 3, 10)))
    def __call__(self, x):
        return tf.reshape(x, (-1, 32 * 32 * 3)) @ self.w

images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
maps = Saliency(Linear()).explain(images, targets=[0, 1, 2, 3])  # (4, 32, 32)
