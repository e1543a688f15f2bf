"""type: mlflow — an MLflow model (a folder holding MLmodel, or a zip of one),
loaded with mlflow.pyfunc from mlflow-skinny.

Fields: model; input VAR (the array given to predict as it is) or inputs
{column: VAR} (a pandas DataFrame of those columns, each [N] or [N, 1]);
output VAR (the prediction as an array) or outputs {column: VAR} (columns of a
DataFrame prediction, or keys of a dict one). The packages the model was saved
with (its requirements.txt) are in the artifact: the compiler locks them.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow.pyfunc
import numpy as np

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext, get_mapping, get_str, variable
from kbuild.runtime.tensors import Array, Vars, as_array


def build(step: Mapping[str, Any], ctx: StepContext) -> Runner:
    folder = _model_folder(ctx.model_path(step))
    model = mlflow.pyfunc.load_model(str(folder))
    if ("input" in step) == ("inputs" in step):
        raise ConfigError("give either 'input' (one array) or 'inputs' (columns of a DataFrame)")
    if ("output" in step) == ("outputs" in step):
        raise ConfigError("give either 'output' (the prediction) or 'outputs' (columns or keys of it)")
    source = get_str(step, "input") if "input" in step else None
    columns = get_mapping(step, "inputs") if source is None else {}
    single = get_str(step, "output") if "output" in step else None
    picks = get_mapping(step, "outputs") if single is None else {}

    def run(variables: Vars) -> Vars:
        data = variable(variables, source) if source is not None else _frame(variables, columns)
        if not len(data):  # what an empty prediction looks like is the model's secret
            raise DataError("the batch is empty; an MLflow model needs at least one row")
        prediction = model.predict(data)
        if single is not None:
            return {single: _array(prediction)}
        return {var: _pick(prediction, key) for key, var in picks.items()}

    return run


def _model_folder(path: Path) -> Path:
    """The folder holding MLmodel: the model path itself, or where its zip is unpacked."""
    if path.is_dir():
        found = sorted(path.rglob("MLmodel"), key=lambda p: len(p.parts))
        if not found:
            raise ConfigError(f"{path.name}: no MLmodel file in this folder; is it an MLflow model?")
        return found[0].parent
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{path.name}: an MLflow model is a folder or a zip of one")
    target = Path(tempfile.mkdtemp(prefix="kbuild-mlflow-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            member = PurePosixPath(name)
            if member.is_absolute() or ".." in member.parts:
                raise ConfigError(f"{path.name}: refusing entry {name!r} outside the archive's folder")
        zf.extractall(target)
    return _model_folder(target)


def _frame(variables: Vars, columns: Mapping[str, str]) -> Any:
    import pandas as pd

    data: dict[str, Array] = {}
    for column, var in columns.items():
        value = variable(variables, var)
        if value.ndim == 2 and value.shape[1] == 1:
            value = value[:, 0]
        if value.ndim != 1:
            raise DataError(f"column {column!r}: expected [N] or [N, 1], got {list(value.shape)}")
        data[column] = value
    if len({v.shape[0] for v in data.values()}) > 1:
        raise DataError(
            "the columns have different lengths: " + ", ".join(f"{c} {v.shape[0]}" for c, v in data.items())
        )
    return pd.DataFrame(data)


def _array(value: Any) -> Array:
    to_numpy = getattr(value, "to_numpy", None)  # a DataFrame or Series
    return as_array(to_numpy() if callable(to_numpy) else np.asarray(value))


def _pick(prediction: Any, key: str) -> Array:
    if hasattr(prediction, "columns"):  # a DataFrame; its column labels may be numbers
        by_name = {str(c): c for c in prediction.columns}
    elif isinstance(prediction, Mapping):
        by_name = {str(k): k for k in prediction}
    else:
        raise DataError(
            f"the model predicts a {type(prediction).__name__}, which has no columns or keys; map it with output: VAR"
        )
    if key not in by_name:
        raise DataError(f"the prediction has no {key!r} (it has {', '.join(by_name)})")
    return _array(prediction[by_name[key]])
