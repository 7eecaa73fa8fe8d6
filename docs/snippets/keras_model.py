import keras
import numpy as np

from agnostic_saliency import Saliency

model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                          keras.layers.Flatten(), keras.layers.Dense(10)])
images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)  # channels last
maps = Saliency(model).explain(images, targets=[0, 1, 2, 3])  # (4, 32, 32)
