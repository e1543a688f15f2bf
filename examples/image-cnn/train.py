"""Make the CNN example: a ResNet-style network of 2.4 million parameters that
tells circles, squares and triangles apart in colour images, exported to ONNX
and to TorchScript.

Made here from a fixed seed, with nothing downloaded: 96x96 RGB PNGs of one
shape each (random colours, size, position, rotation, a noisy background), a
network of residual blocks (torch.nn: a strided stem, four stages of basic
blocks with batch norm, global average pooling, a linear head giving logits)
trained for a few epochs on exactly what the pipeline's image step makes of
those files (resized to 64x64 with bilinear filtering, scaled to [0, 1],
normalized with the ImageNet mean and std, NCHW). The model files are
models/shapes.onnx (dynamic batch) and models/shapes.pt (torch.jit.trace);
heldout.json holds images the network never saw, their shapes and torch's own
answers, and samples/ three PNGs.

    python examples/image-cnn/train.py
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import nn

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
LABELS = ["circle", "square", "triangle"]
DRAWN, SIDE = 96, 64  # drawn size; the image step resizes to the network's 64x64
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SEED = 11
TRAIN, HELD_OUT = 900, 60


def draw(rng: random.Random, shape: str, noisy: bool = True) -> bytes:
    """One shape, bright on a dark background of another colour, a little
    noise and blur (noisy: False for the pipeline's samples, which are written
    into pipeline.yaml and must stay small), as a PNG."""
    background = tuple(rng.randrange(0, 100) for _ in range(3))
    image = Image.new("RGB", (DRAWN, DRAWN), background)
    if noisy:
        noise = Image.frombytes("RGB", (DRAWN, DRAWN), bytes(rng.randrange(0, 48) for _ in range(DRAWN * DRAWN * 3)))
        image = Image.blend(image, noise, 0.2)
    pen = ImageDraw.Draw(image)
    colour = tuple(rng.randrange(150, 256) for _ in range(3))
    r = rng.uniform(18, 38)
    cx, cy = rng.uniform(r + 4, DRAWN - r - 4), rng.uniform(r + 4, DRAWN - r - 4)
    turn = rng.uniform(0, 2 * math.pi)
    if shape == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        n = 4 if shape == "square" else 3
        pen.polygon(
            [
                (cx + r * math.cos(turn + 2 * math.pi * k / n), cy + r * math.sin(turn + 2 * math.pi * k / n))
                for k in range(n)
            ],
            fill=colour,
        )
    out = io.BytesIO()
    (image.filter(ImageFilter.GaussianBlur(0.6)) if noisy else image).save(out, format="PNG", optimize=True)
    return out.getvalue()


def as_step_sees_it(encoded: bytes) -> np.ndarray:
    """What the pipeline's image step (size [64, 64], ImageNet mean/std, NCHW) makes of a file."""
    with Image.open(io.BytesIO(encoded)) as image:
        pixels = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    x = (np.asarray(pixels, dtype=np.float32) / np.float32(255.0) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ShapesNet(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.stages = nn.Sequential(
            Block(32, 32, 1), Block(32, 64, 2), Block(64, 128, 2), Block(128, 256, 2), Block(256, 256, 1)
        )
        self.head = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


def main() -> None:
    random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # float sums in one order: the same weights on every machine
    rng = random.Random(SEED)
    kinds = [rng.randrange(len(LABELS)) for _ in range(TRAIN + HELD_OUT)]
    files = [draw(rng, LABELS[k]) for k in kinds]
    x = torch.tensor(np.stack([as_step_sees_it(f) for f in files[:TRAIN]]))
    y = torch.tensor(kinds[:TRAIN])

    net = ShapesNet(len(LABELS))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for epoch in range(8):
        if epoch == 6:  # settle the weights and the batch-norm statistics
            for group in optimizer.param_groups:
                group["lr"] = 1e-4
        order = torch.randperm(TRAIN)
        for start in range(0, TRAIN, 32):
            idx = order[start : start + 32]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()

    MODELS.mkdir(exist_ok=True)
    example = x[:2]
    torch.onnx.export(
        net,
        (example,),
        str(MODELS / "shapes.onnx"),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    with torch.no_grad():
        traced = torch.jit.trace(net, example)
    traced.save(str(MODELS / "shapes.pt"))

    held = files[TRAIN:]
    with torch.no_grad():
        probs = torch.softmax(net(torch.tensor(np.stack([as_step_sees_it(f) for f in held]))), dim=1).numpy()
    answers = [LABELS[i] for i in probs.argmax(axis=1)]
    truth = [LABELS[k] for k in kinds[TRAIN:]]
    heldout = {
        "inputs": {"image": [base64.b64encode(f).decode() for f in held]},
        "labels": truth,
        "torch": {"shape": answers, "probability": [round(float(p), 6) for p in probs.max(axis=1)]},
    }
    (HERE / "heldout.json").write_text(json.dumps(heldout, indent=1) + "\n")
    (HERE / "samples").mkdir(exist_ok=True)
    for name in LABELS:
        clean = draw(rng, name, noisy=False)
        with torch.no_grad():
            said = LABELS[int(net(torch.tensor(as_step_sees_it(clean))[None]).argmax())]
        assert said == name, f"the {name} sample is taken for a {said}"
        (HERE / "samples" / f"{name}.png").write_bytes(clean)
    accuracy = float(np.mean([a == t for a, t in zip(answers, truth, strict=True)]))
    params = sum(p.numel() for p in net.parameters())
    print(f"{params:,} parameters; held-out accuracy {accuracy:.3f} on {HELD_OUT} images")


if __name__ == "__main__":
    main()
