"""Train the demo's small CNN on scikit-learn's handwritten digits; write its weights.

Run once by a developer (needs torch and scikit-learn); the result,
``agnostic_saliency/data/digits_cnn.npz``, is shipped in the package so that the
demo downloads nothing. Weights are stored channels-last (the zoo's canonical
layout), so every framework builds the same function from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from agnostic_saliency.testing.models import Conv2D, Dense, Flatten, ModelSpec, Tanh, save_spec

OUT = Path(__file__).resolve().parents[1] / "agnostic_saliency" / "data" / "digits_cnn.npz"


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3)
        self.conv2 = torch.nn.Conv2d(8, 16, 3)
        self.dense = torch.nn.Linear(4 * 4 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return self.dense(x.permute(0, 2, 3, 1).flatten(1))  # channels-last flatten order


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1500], order[1500:]
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(images[train]), torch.from_numpy(labels[train])
    for _ in range(60):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(images[test])).argmax(1).numpy() == labels[test]).mean()
    print(f"test accuracy: {accuracy:.3f} on {len(test)} images")
    spec = ModelSpec("digits_cnn", (
        Conv2D(_kernel(net.conv1), net.conv1.bias.detach().numpy()), Tanh(),
        Conv2D(_kernel(net.conv2), net.conv2.bias.detach().numpy()), Tanh(), Flatten(),
        Dense(net.dense.weight.detach().numpy().T.copy(), net.dense.bias.detach().numpy())),
        (8, 8, 1))
    samples = test[:16]
    save_spec(spec, str(OUT), images=images[samples].transpose(0, 2, 3, 1),
              labels=labels[samples], accuracy=np.array(accuracy))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


def _kernel(conv: torch.nn.Conv2d) -> np.ndarray:
    return conv.weight.detach().numpy().transpose(2, 3, 1, 0).copy()


if __name__ == "__main__":
    main()
