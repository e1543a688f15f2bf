"""Make the image example: handwritten digits as PNG files and an ONNX
classifier that reads them through the pipeline's image step.

sklearn's 8x8 digits are drawn as 32x32 grayscale PNGs; the classifier is
trained on exactly what the image step makes of those files (decoded, resized
to 8x8 with bilinear filtering, scaled to [0, 1]) and written as a three-node
ONNX graph (Flatten, Gemm, Softmax) taking the step's [N, 1, 8, 8] tensor.
Deterministic; the model, ten sample images and the held-out images are small
and committed, so building the example needs no training:

    python examples/image/train.py   # writes models/digits.onnx, samples/*.png, heldout.json
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
SIDE = 32  # drawn size; the step resizes to the model's 8x8
HELD_OUT = 100


def png(digit: np.ndarray) -> bytes:
    """An 8x8 digit (values 0..16) as a 32x32 grayscale PNG."""
    pixels = np.round(digit.reshape(8, 8) * (255 / 16)).astype(np.uint8)
    image = Image.fromarray(pixels, mode="L").resize((SIDE, SIDE), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def as_step_sees_it(encoded: bytes) -> np.ndarray:
    """What the pipeline's image step (channels 1, size [8, 8]) makes of a file."""
    with Image.open(io.BytesIO(encoded)) as image:
        small = image.convert("L").resize((8, 8), Image.Resampling.BILINEAR)
    return (np.asarray(small, dtype=np.float32) / np.float32(255.0)).reshape(64)


def onnx_model(clf: LogisticRegression) -> onnx.ModelProto:
    weights = numpy_helper.from_array(clf.coef_.T.astype(np.float32), "weights")
    bias = numpy_helper.from_array(clf.intercept_.astype(np.float32), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "digits",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kbuild-example")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    data = load_digits()
    files = [png(d) for d in data.data]
    features = np.stack([as_step_sees_it(f) for f in files])
    idx_train, idx_test = train_test_split(np.arange(len(files)), test_size=0.2, random_state=0, stratify=data.target)
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(features[idx_train], data.target[idx_train])
    (HERE / "models").mkdir(exist_ok=True)
    (HERE / "models" / "digits.onnx").write_bytes(onnx_model(clf).SerializeToString())
    accuracy = float((clf.predict(features[idx_test]) == data.target[idx_test]).mean())

    samples = HERE / "samples"
    samples.mkdir(exist_ok=True)
    for digit in range(10):  # the first held-out image of each digit
        first = next(i for i in idx_test if data.target[i] == digit)
        (samples / f"digit-{digit}.png").write_bytes(files[first])
    held = idx_test[:HELD_OUT]
    heldout = {
        "inputs": {"image": [base64.b64encode(files[i]).decode("ascii") for i in held]},
        "labels": [str(int(data.target[i])) for i in held],
    }
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"wrote models/digits.onnx, samples/ and heldout.json ({len(held)} images; accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
