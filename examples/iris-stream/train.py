"""Write the iris-stream example's two model versions.

models/iris.onnx is the iris example's model (built into the artifact as
version 1); models/iris-v2.onnx is a second version to publish while the
stream runs: a more strongly regularised logistic regression, whose
probabilities differ visibly. Deterministic for the same library versions:

    python examples/iris-stream/train.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent


def main() -> None:
    out = HERE / "models"
    out.mkdir(exist_ok=True)
    shutil.copyfile(HERE.parent / "iris" / "models" / "iris.onnx", out / "iris.onnx")
    data = load_iris()
    model = LogisticRegression(C=0.05, max_iter=1000, random_state=0)
    model.fit(data.data.astype(np.float32), data.target)
    onx = convert_sklearn(
        model,
        initial_types=[("float_input", FloatTensorType([None, 4]))],
        options={"zipmap": False},
        target_opset=17,
    )
    onx.graph.name = "iris-v2"  # skl2onnx names the graph randomly; keep the file reproducible
    (out / "iris-v2.onnx").write_bytes(onx.SerializeToString())
    print(f"wrote {out / 'iris.onnx'} and {out / 'iris-v2.onnx'}")


if __name__ == "__main__":
    main()
