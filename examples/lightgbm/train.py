"""Train the lightgbm example's model: a wine classifier (three cultivars).

Deterministic (one thread, fixed seeds, LightGBM's deterministic mode); the
model and the held-out rows are small and committed, so building the example
needs no training:

    python examples/lightgbm/train.py    # writes models/wine.txt and heldout.json
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
LABELS = ["barolo", "grignolino", "barbera"]  # the three cultivars of the UCI wine data


def main() -> None:
    data = load_wine()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=0, stratify=data.target
    )
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
    # the pipeline's input is FP32: train on what it will be fed
    train_set = lgb.Dataset(x_train.astype(np.float32), label=y_train)
    booster = lgb.train(params, train_set, num_boost_round=60)
    (HERE / "models").mkdir(exist_ok=True)
    booster.save_model(str(HERE / "models" / "wine.txt"))
    predicted = booster.predict(x_test.astype(np.float32)).argmax(axis=1)
    accuracy = float((predicted == y_test).mean())
    heldout = {"inputs": {"features": x_test.tolist()}, "labels": [LABELS[i] for i in y_test]}
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"wrote models/wine.txt and heldout.json ({len(y_test)} rows, accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
