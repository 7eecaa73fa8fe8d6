import numpy as np
import torch

from agnostic_saliency import Saliency

model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 30 * 30, 10)).eval()
images = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)  # channels first
maps = Saliency(model).explain(images, targets=[0, 1, 2, 3])  # (4, 32, 32)
