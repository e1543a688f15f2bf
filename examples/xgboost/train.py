"""Train the xgboost example's model: a breast-cancer classifier (binary:logistic).

Deterministic (one thread, fixed seed); the model and the held-out rows are
small and committed, so building the example needs no training:

    python examples/xgboost/train.py     # writes models/cancer.json and heldout.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xgboost as xgb
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
LABELS = ["malignant", "benign"]  # sklearn's target 0 and 1


def main() -> None:
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    # the pipeline's input is FP32: train on what it will be fed
    x_train, x_test32 = x_train.astype(np.float32), x_test.astype(np.float32)
    params = {
        "objective": "binary:logistic",
        "max_depth": 3,
        "eta": 0.3,
        "nthread": 1,
        "seed": 0,
        "tree_method": "hist",
    }
    booster = xgb.train(params, xgb.DMatrix(x_train, label=y_train), num_boost_round=40)
    (HERE / "models").mkdir(exist_ok=True)
    booster.save_model(HERE / "models" / "cancer.json")
    accuracy = float(((booster.predict(xgb.DMatrix(x_test32)) >= 0.5) == y_test).mean())
    heldout = {"inputs": {"features": x_test.tolist()}, "labels": [LABELS[i] for i in y_test]}
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"wrote models/cancer.json and heldout.json ({len(y_test)} rows, accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
