"""Make the mlflow example's model: an iris classifier saved as an MLflow model
(the sklearn flavor, loaded through pyfunc), answering class probabilities.

The model folder holds MLmodel, the pickled estimator and the requirements.txt
that MLflow writes (scikit-learn, cloudpickle, pandas pinned to the versions
that saved it); kbuild adds those to the lock. Deterministic: MLflow's random
model id and creation time are replaced by fixed ones. The folder is small and
committed, so building the example needs no training:

    python examples/mlflow/train.py      # writes models/iris-model/ and heldout.json
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlflow.sklearn
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
LABELS = ["setosa", "versicolor", "virginica"]


def main() -> None:
    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=2, stratify=data.target
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    model.fit(x_train.astype(np.float32), y_train)
    folder = HERE / "models" / "iris-model"
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(exist_ok=True)
    mlflow.sklearn.save_model(model, str(folder), serialization_format="cloudpickle", pyfunc_predict_fn="predict_proba")
    mlmodel = folder / "MLmodel"
    text = re.sub(r"(?m)^model_uuid: .*$", "model_uuid: 00000000000000000000000000000000", mlmodel.read_text())
    text = re.sub(r"(?m)^utc_time_created: .*$", "utc_time_created: '2026-01-01 00:00:00.000000'", text)
    mlmodel.write_text(text)
    accuracy = float((model.predict(x_test.astype(np.float32)) == y_test).mean())
    heldout = {"inputs": {"features": x_test.tolist()}, "labels": [LABELS[i] for i in y_test]}
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"wrote models/iris-model/ and heldout.json ({len(y_test)} rows, accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
