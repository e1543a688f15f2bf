"""Make the keras example: a wine classifier (three cultivars) as a small
Keras 3 network, saved as a .keras file.

The network standardizes its 13 measurements itself (a Normalization layer
adapted to the training set) and returns the three cultivars' probabilities.
Fixed seeds and deterministic ops: the same weights on every machine.
heldout.json holds the rows it never saw, their cultivars and Keras' own
probabilities for them.

    KERAS_BACKEND=tensorflow python examples/keras/train.py   # writes models/wine.keras and heldout.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_wine  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HERE = Path(__file__).resolve().parent
LABELS = ["barolo", "grignolino", "barbera"]


def main() -> None:
    keras.utils.set_random_seed(0)
    data = load_wine()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float32), data.target, test_size=0.3, random_state=0, stratify=data.target
    )
    normalize = keras.layers.Normalization(name="standardize")
    normalize.adapt(x_train)
    measurements = keras.Input(shape=(13,), name="measurements")
    hidden = keras.layers.Dense(32, activation="relu")(normalize(measurements))
    hidden = keras.layers.Dense(16, activation="relu")(hidden)
    scores = keras.layers.Dense(3, activation="softmax", name="scores")(hidden)
    model = keras.Model(measurements, scores, name="wine")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=100, batch_size=32, shuffle=False, verbose=0)
    (HERE / "models").mkdir(exist_ok=True)
    model.save(HERE / "models" / "wine.keras")
    saved = keras.saving.load_model(HERE / "models" / "wine.keras")
    probabilities = np.asarray(saved(x_test, training=False))
    answers = probabilities.argmax(axis=1)
    heldout = {
        "inputs": {"measurements": x_test.tolist()},
        "labels": [LABELS[k] for k in y_test],
        "keras": {
            "cultivar": [LABELS[k] for k in answers],
            "probability": [round(float(p), 6) for p in probabilities.max(axis=1)],
        },
    }
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"held-out accuracy {float(np.mean(answers == y_test)):.3f} on {len(y_test)} rows")


if __name__ == "__main__":
    main()
