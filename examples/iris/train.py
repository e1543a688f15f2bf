"""Train the iris example's model and export it for the pipelines beside this file.

Deterministic: the same library versions give the same files. The outputs are
small and committed, so building the example needs no training:

    python examples/iris/train.py          # writes models/iris.joblib and models/iris.onnx
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent


def train() -> object:
    data = load_iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    model.fit(data.data.astype(np.float32), data.target)
    return model


def main() -> None:
    model = train()
    out = HERE / "models"
    out.mkdir(exist_ok=True)
    joblib.dump(model, out / "iris.joblib")
    onx = convert_sklearn(
        model,
        initial_types=[("float_input", FloatTensorType([None, 4]))],
        options={"zipmap": False},
        target_opset=17,
    )
    onx.graph.name = "iris"  # skl2onnx names the graph randomly; keep the file reproducible
    (out / "iris.onnx").write_bytes(onx.SerializeToString())
    print(f"wrote {out / 'iris.joblib'} and {out / 'iris.onnx'}")


if __name__ == "__main__":
    main()
