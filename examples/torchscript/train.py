"""Train the torchscript example's model: a handwritten-digit classifier (8x8
images of sklearn's digits data, 64 pixel values 0..16 per row).

Deterministic: one thread, fixed seed, full-batch training, and the TorchScript
archive rewritten without the random id torch.jit.save puts in it. The model
and the held-out rows are small and committed, so building the example needs
no training:

    python examples/torchscript/train.py    # writes models/digits.pt and heldout.json
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent


class Digits(torch.nn.Module):
    """pixels [N, 64] (0..16) -> class probabilities [N, 10]."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(64, 32)
        self.out = torch.nn.Linear(32, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden(pixels / 16.0))
        return torch.softmax(self.out(h), dim=1)


def reproducible(archive: bytes) -> bytes:
    """The archive with a fixed serialization id and fixed timestamps."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".data/serialization_id"):
                data = b"0" * len(data)
            dst.writestr(zipfile.ZipInfo(info.filename, (1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float32), data.target, test_size=0.2, random_state=0, stratify=data.target
    )
    model = Digits()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(model(inputs) + 1e-9), targets)
        loss.backward()
        optimizer.step()
    model.eval()
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    (HERE / "models").mkdir(exist_ok=True)
    (HERE / "models" / "digits.pt").write_bytes(reproducible(buffer.getvalue()))
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(dim=1).numpy() == y_test).mean())
    heldout = {"inputs": {"pixels": x_test.astype(int).tolist()}, "labels": [str(int(d)) for d in y_test]}
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"wrote models/digits.pt and heldout.json ({len(y_test)} rows, accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
