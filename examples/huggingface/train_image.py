"""Make the image-classification example: a small Vision Transformer that
tells red, green and blue pictures apart, saved as a transformers folder
(config.json with id2label, model.safetensors, preprocessor_config.json) in
models/colours-vit.

The pictures are made here: noise over a dominant colour, at several sizes,
so that the image processor's resizing matters. Fixed seeds and one thread:
the same weights on every machine.

    python examples/huggingface/train_image.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

HERE = Path(__file__).resolve().parent
LABELS = ["red", "green", "blue"]
SIZE = 32


def picture(rng: np.random.Generator, colour: int) -> Image.Image:
    h, w = (int(v) for v in rng.integers(16, 80, 2))
    pixels = rng.normal(70, 40, (h, w, 3))
    pixels[..., colour] += 110
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    processor = ViTImageProcessorPil(size={"height": SIZE, "width": SIZE}, resample=2)
    config = ViTConfig(
        image_size=SIZE,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    model = ViTForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        colours = rng.integers(0, 3, 16)
        batch = processor([picture(rng, int(c)) for c in colours], return_tensors="pt")["pixel_values"]
        loss = model(pixel_values=batch, labels=torch.from_numpy(colours)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    colours = rng.integers(0, 3, 60)
    with torch.no_grad():
        batch = processor([picture(rng, int(c)) for c in colours], return_tensors="pt")["pixel_values"]
        answers = model(pixel_values=batch).logits.argmax(dim=1).numpy()
    folder = HERE / "models" / "colours-vit"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    print(f"held-out accuracy {float(np.mean(answers == colours)):.3f} on {len(colours)} pictures")


if __name__ == "__main__":
    main()
