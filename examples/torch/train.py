"""Make the torch example: a wine classifier (three cultivars) as a small
PyTorch network, saved with torch.export.save (the .pt2 archive PyTorch
recommends over TorchScript) with a dynamic batch axis.

The network standardizes its 13 measurements itself (the training set's mean
and spread are buffers of the program) and returns the three cultivars'
probabilities. Fixed seeds and one thread: the same weights on every machine.
heldout.json holds the rows it never saw, their cultivars and torch's own
probabilities for them.

    python examples/torch/train.py     # writes models/wine.pt2 and heldout.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
LABELS = ["barolo", "grignolino", "barbera"]


class Wine(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(13, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )

    def forward(self, measurements: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.layers((measurements - self.mean) / self.scale), dim=1)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_wine()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float32), data.target, test_size=0.3, random_state=0, stratify=data.target
    )
    x = torch.from_numpy(x_train)
    model = Wine(x.mean(dim=0), x.std(dim=0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    target = torch.from_numpy(y_train)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(model(x) + 1e-9), target)
        loss.backward()
        optimizer.step()
    model.eval()
    program = torch.export.export(
        model, (torch.from_numpy(x_test[:4]),), dynamic_shapes={"measurements": {0: torch.export.Dim("batch")}}
    )
    (HERE / "models").mkdir(exist_ok=True)
    torch.export.save(program, str(HERE / "models" / "wine.pt2"))
    saved = torch.export.load(str(HERE / "models" / "wine.pt2")).module()
    with torch.no_grad():
        probabilities = saved(torch.from_numpy(x_test)).numpy()
    answers = probabilities.argmax(axis=1)
    heldout = {
        "inputs": {"measurements": x_test.tolist()},
        "labels": [LABELS[k] for k in y_test],
        "torch": {
            "cultivar": [LABELS[k] for k in answers],
            "probability": [round(float(p), 6) for p in probabilities.max(axis=1)],
        },
    }
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"held-out accuracy {float(np.mean(answers == y_test)):.3f} on {len(y_test)} rows")


if __name__ == "__main__":
    main()
