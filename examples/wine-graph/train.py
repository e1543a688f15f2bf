"""Make the wine-graph example's models: two model types on the UCI wine data.

    python examples/wine-graph/train.py    # writes models/wine.onnx, models/wine_lgbm.txt, heldout.json

Deterministic (fixed seeds, one thread, LightGBM's deterministic mode): a
scaled logistic regression exported to ONNX (probabilities, no zipmap) and a
LightGBM booster. heldout.json holds held-out rows with a region per row.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
REGIONS = ["eu", "us", "other"]


def main() -> None:
    data = load_wine()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.3, random_state=0, stratify=data.target
    )
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    onnx = to_onnx(lr, x_train[:1], options={id(lr): {"zipmap": False}}, target_opset=17)
    (HERE / "models").mkdir(exist_ok=True)
    (HERE / "models" / "wine.onnx").write_bytes(onnx.SerializeToString())
    params = {
        "objective": "multiclass",
        "num_class": 3,
        "num_leaves": 7,
        "learning_rate": 0.1,
        "min_data_in_leaf": 5,
        "num_threads": 1,
        "seed": 0,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }
    booster = lgb.train(params, lgb.Dataset(x_train, label=y_train), num_boost_round=40)
    booster.save_model(str(HERE / "models" / "wine_lgbm.txt"))
    rng = np.random.default_rng(0)
    heldout = {
        "inputs": {
            "features": x_test.tolist(),
            "region": [REGIONS[i] for i in rng.integers(0, 3, len(x_test))],
            "customer": [f"c{i % 7}" for i in range(len(x_test))],
        },
        "targets": y_test.tolist(),
    }
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"wrote models/wine.onnx, models/wine_lgbm.txt and heldout.json ({len(x_test)} rows)")


if __name__ == "__main__":
    main()
