"""Make the tensorflow example: a wine classifier (three cultivars) written
in TensorFlow itself (a tf.Module, no Keras), saved as a SavedModel whose
serving_default signature takes `measurements` and gives `scores`.

The module standardizes its 13 measurements with the training set's mean and
spread and returns the three cultivars' probabilities; it is trained by
gradient descent from fixed seeds. heldout.json holds the rows it never saw,
their cultivars and TensorFlow's own probabilities for them.

    python examples/tensorflow/train.py   # writes models/wine_savedmodel/ and heldout.json
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_wine  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HERE = Path(__file__).resolve().parent
LABELS = ["barolo", "grignolino", "barbera"]


class Wine(tf.Module):
    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__(name="wine")
        init = tf.random.stateless_normal
        self.mean = tf.constant(mean)
        self.scale = tf.constant(scale)
        self.w1 = tf.Variable(init((13, 32), seed=(0, 1)) * 0.3)
        self.b1 = tf.Variable(tf.zeros(32))
        self.w2 = tf.Variable(init((32, 3), seed=(0, 2)) * 0.3)
        self.b2 = tf.Variable(tf.zeros(3))

    @tf.function(input_signature=[tf.TensorSpec([None, 13], tf.float32, name="measurements")])
    def serve(self, measurements: tf.Tensor) -> dict[str, tf.Tensor]:
        hidden = tf.nn.relu(((measurements - self.mean) / self.scale) @ self.w1 + self.b1)
        return {"scores": tf.nn.softmax(hidden @ self.w2 + self.b2)}


def main() -> None:
    data = load_wine()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float32), data.target, test_size=0.3, random_state=0, stratify=data.target
    )
    model = Wine(x_train.mean(axis=0), x_train.std(axis=0))
    target = tf.one_hot(y_train, 3)
    for _ in range(300):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(tf.reduce_sum(target * tf.math.log(model.serve(x_train)["scores"] + 1e-9), axis=1))
        for variable, gradient in zip(
            model.trainable_variables, tape.gradient(loss, model.trainable_variables), strict=True
        ):
            variable.assign_sub(0.1 * gradient)
    folder = HERE / "models" / "wine_savedmodel"
    shutil.rmtree(folder, ignore_errors=True)
    tf.saved_model.save(model, str(folder), signatures={"serving_default": model.serve})
    served = tf.saved_model.load(str(folder)).signatures["serving_default"]
    probabilities = served(measurements=tf.constant(x_test))["scores"].numpy()
    answers = probabilities.argmax(axis=1)
    heldout = {
        "inputs": {"measurements": x_test.tolist()},
        "labels": [LABELS[k] for k in y_test],
        "tensorflow": {
            "cultivar": [LABELS[k] for k in answers],
            "probability": [round(float(p), 6) for p in probabilities.max(axis=1)],
        },
    }
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"held-out accuracy {float(np.mean(answers == y_test)):.3f} on {len(y_test)} rows")


if __name__ == "__main__":
    main()
