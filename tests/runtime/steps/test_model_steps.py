"""The model step runtimes (xgboost, lightgbm, torchscript, tflite, pmml,
mlflow) in-process: each module's build(step, ctx) on the examples' models and
on small models made here, against the library's own answers."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from kbuild.runtime.contract.errors import ConfigError, DataError
from kbuild.runtime.steps import Runner, StepContext
from kbuild.runtime.tensors import Vars
from tests.helpers.build import EXAMPLES

# torch 2.13 marks TorchScript deprecated (for torch.export); it still loads it
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def make(
    step_type: str, step: dict[str, Any], app: Path, options: dict[str, Any] | None = None
) -> Callable[[Vars], Vars]:
    """The step's runner, for records it answers (a model step never drops one)."""
    module = importlib.import_module(f"kbuild.runtime.steps.{step_type}")
    build = getattr(module, "build")
    runner: Runner = build({"name": "s", "type": step_type, **step}, StepContext("s", app, options or {}))

    def run(variables: Vars) -> Vars:
        outputs = runner(variables)
        assert outputs is not None, f"the {step_type} step dropped the record"
        return outputs

    return run


def heldout(example: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / example / "heldout.json").read_text())
    return data


def example_script(example: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{example}_train", EXAMPLES / example / "train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def app_with(tmp_path: Path, *files: Path) -> Path:
    for f in files:
        (shutil.copytree if f.is_dir() else shutil.copyfile)(f, tmp_path / f.name)
    return tmp_path


# --- xgboost ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cancer() -> np.ndarray:
    return np.array(heldout("xgboost")["inputs"]["features"], dtype=np.float32)


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_binary_booster_in_both_formats(tmp_path: Path, cancer: np.ndarray, suffix: str) -> None:
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(EXAMPLES / "xgboost/models/cancer.json"))
    booster.save_model(tmp_path / f"cancer{suffix}")
    p = booster.predict(xgb.DMatrix(cancer))
    proba = make(
        "xgboost", {"model": f"cancer{suffix}", "method": "predict_proba", "input": "x", "output": "y"}, tmp_path
    )
    out = proba({"x": cancer})["y"]
    assert out.shape == (len(cancer), 2)
    np.testing.assert_allclose(out[:, 1], p, rtol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    predict = make("xgboost", {"model": f"cancer{suffix}", "input": "x", "output": "y"}, tmp_path)
    classes = predict({"x": cancer})["y"]
    assert classes.dtype == np.int64 and classes.tolist() == (p > 0.5).astype(int).tolist()


def test_xgboost_multiclass_and_regression(tmp_path: Path) -> None:
    import xgboost as xgb
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    soft = xgb.train({"objective": "multi:softprob", "num_class": 3, "nthread": 1}, xgb.DMatrix(x, label=y), 5)
    soft.save_model(tmp_path / "soft.json")
    reg = xgb.train({"objective": "reg:squarederror", "nthread": 1}, xgb.DMatrix(x, label=y), 5)
    reg.save_model(tmp_path / "reg.json")
    proba = make("xgboost", {"model": "soft.json", "method": "predict_proba", "input": "x", "output": "y"}, tmp_path)
    np.testing.assert_allclose(proba({"x": x})["y"], soft.predict(xgb.DMatrix(x)), rtol=1e-6)
    classes = make("xgboost", {"model": "soft.json", "input": "x", "output": "y"}, tmp_path)({"x": x})["y"]
    assert classes.tolist() == soft.predict(xgb.DMatrix(x)).argmax(axis=1).tolist()
    values = make("xgboost", {"model": "reg.json", "input": "x", "output": "y"}, tmp_path)({"x": x})["y"]
    np.testing.assert_allclose(values, reg.predict(xgb.DMatrix(x)), rtol=1e-6)
    with pytest.raises(ConfigError, match="reg:squarederror gives no class probabilities"):
        make("xgboost", {"model": "reg.json", "method": "predict_proba", "input": "x", "output": "y"}, tmp_path)
    runner = make("xgboost", {"model": "reg.json", "input": "x", "output": "y"}, tmp_path)
    with pytest.raises(DataError, match="takes 4 features, got 3"):
        runner({"x": x[:, :3]})
    shutil.copyfile(tmp_path / "reg.json", tmp_path / "reg.bin")
    with pytest.raises(ConfigError, match=r"\.json or \.ubj"):
        make("xgboost", {"model": "reg.bin", "input": "x", "output": "y"}, tmp_path)


# --- lightgbm --------------------------------------------------------------------------------


def test_lightgbm_multiclass_example_and_binary(tmp_path: Path) -> None:
    import lightgbm as lgb

    app = app_with(tmp_path, EXAMPLES / "lightgbm/models/wine.txt")
    x = np.array(heldout("lightgbm")["inputs"]["features"], dtype=np.float32)
    reference = np.asarray(lgb.Booster(model_file=str(app / "wine.txt")).predict(x))
    proba = make("lightgbm", {"model": "wine.txt", "method": "predict_proba", "input": "x", "output": "y"}, app)
    np.testing.assert_allclose(proba({"x": x})["y"], reference, rtol=1e-6)
    classes = make("lightgbm", {"model": "wine.txt", "input": "x", "output": "y"}, app)({"x": x})["y"]
    assert classes.dtype == np.int64 and classes.tolist() == reference.argmax(axis=1).tolist()
    assert proba({"x": x[:0]})["y"].shape == (0, 3)  # LightGBM itself would flatten it

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    params = {"objective": "binary", "num_threads": 1, "verbose": -1, "min_data_in_leaf": 5}
    lgb.train(params, lgb.Dataset(features, label=labels), 10).save_model(str(app / "binary.txt"))
    p = np.asarray(lgb.Booster(model_file=str(app / "binary.txt")).predict(features))
    out = make("lightgbm", {"model": "binary.txt", "method": "predict_proba", "input": "x", "output": "y"}, app)(
        {"x": features}
    )["y"]
    np.testing.assert_allclose(out, np.stack([1 - p, p], axis=1), rtol=1e-6)

    params = {"objective": "regression", "num_threads": 1, "verbose": -1, "min_data_in_leaf": 5}
    lgb.train(params, lgb.Dataset(features, label=features[:, 2]), 5).save_model(str(app / "reg.txt"))
    with pytest.raises(ConfigError, match="objective regression gives no class probabilities"):
        make("lightgbm", {"model": "reg.txt", "method": "predict_proba", "input": "x", "output": "y"}, app)
    with pytest.raises(DataError, match="expected numbers"):
        make("lightgbm", {"model": "reg.txt", "input": "x", "output": "y"}, app)({"x": features[0]})


# --- torchscript -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits.pt (the example) and modules returning a tuple and a dict."""
    import torch

    folder = tmp_path_factory.mktemp("torch")
    shutil.copyfile(EXAMPLES / "torchscript/models/digits.pt", folder / "digits.pt")
    source = folder / "ts_modules.py"
    source.write_text(
        "import torch\n"
        "from typing import Dict, Tuple\n\n"
        "class Pair(torch.nn.Module):\n"
        "    def forward(self, a: torch.Tensor, b: torch.Tensor, scale: float = 2.0) -> Tuple[torch.Tensor, torch.Tensor]:\n"
        "        return a + b, a * b * scale\n\n"
        "class Named(torch.nn.Module):\n"
        "    def forward(self, a: torch.Tensor) -> Dict[str, torch.Tensor]:\n"
        "        return {'double': a * 2, 'negative': -a}\n"
    )
    spec = importlib.util.spec_from_file_location("ts_modules", source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.jit.script(module.Pair()).save(str(folder / "pair.pt"))
    torch.jit.script(module.Named()).save(str(folder / "named.pt"))
    return folder


def test_torchscript_example_gives_the_modules_answers(torch_models: Path) -> None:
    import torch

    pixels = np.array(heldout("torchscript")["inputs"]["pixels"], dtype=np.float32)
    with torch.no_grad():
        reference = torch.jit.load(str(torch_models / "digits.pt"))(torch.from_numpy(pixels)).numpy()  # type: ignore[no-untyped-call]
    for fields in ({"inputs": {"pixels": "x"}}, {"input": "x"}):
        runner = make("torchscript", {"model": "digits.pt", **fields, "output": "y"}, torch_models, {"device": "cpu"})
        np.testing.assert_allclose(runner({"x": pixels})["y"], reference, rtol=1e-6)
    frozen = pixels.copy()
    frozen.flags.writeable = False  # as binary request bodies arrive
    runner = make("torchscript", {"model": "digits.pt", "input": "x", "output": "y"}, torch_models)
    np.testing.assert_allclose(runner({"x": frozen})["y"], reference, rtol=1e-6)


def test_torchscript_tuple_and_dict_results(torch_models: Path) -> None:
    a, b = np.array([1.0, 2.0], dtype=np.float32), np.array([3.0, 4.0], dtype=np.float32)
    pair = make(
        "torchscript",
        {"model": "pair.pt", "inputs": {"a": "a", "b": "b"}, "outputs": {"0": "sum", "1": "product"}},
        torch_models,
    )
    out = pair({"a": a, "b": b})
    assert out["sum"].tolist() == [4.0, 6.0] and out["product"].tolist() == [6.0, 16.0]  # scale's default
    named = make("torchscript", {"model": "named.pt", "input": "a", "outputs": {"negative": "n"}}, torch_models)
    assert named({"a": a})["n"].tolist() == [-1.0, -2.0]
    with pytest.raises(DataError, match="returns 2 values"):
        make("torchscript", {"model": "pair.pt", "inputs": {"a": "a", "b": "b"}, "output": "y"}, torch_models)(
            {"a": a, "b": b}
        )
    with pytest.raises(DataError, match="has no 'positive'"):
        make("torchscript", {"model": "named.pt", "input": "a", "outputs": {"positive": "p"}}, torch_models)({"a": a})
    with pytest.raises(ConfigError, match="forward argument\\(s\\) b not mapped"):
        make("torchscript", {"model": "pair.pt", "inputs": {"a": "a"}, "outputs": {"0": "s"}}, torch_models)
    with pytest.raises(ConfigError, match="the model has 3 forward arguments"):
        make("torchscript", {"model": "pair.pt", "input": "a", "outputs": {"0": "s"}}, torch_models)
    with pytest.raises(DataError, match="takes numbers"):
        named({"a": np.array(["x"], dtype=object)})


def test_torchscript_devices_that_are_not_here_fail_at_load(torch_models: Path) -> None:
    import torch

    step = {"model": "digits.pt", "input": "x", "output": "y"}
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no CUDA device"):
            make("torchscript", step, torch_models, {"device": "cuda"})
    with pytest.raises(ConfigError, match="needs veda-pytorch"):
        make("torchscript", step, torch_models, {"device": "ve"})


# --- tflite ----------------------------------------------------------------------------------


def test_tflite_dynamic_and_fixed_batch(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter
    from sklearn.linear_model import LogisticRegression

    x = np.array(heldout("tflite")["inputs"]["features"], dtype=np.float32)
    interpreter = Interpreter(model_path=str(EXAMPLES / "tflite/models/iris.tflite"))
    interpreter.resize_tensor_input(0, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    reference = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    app = app_with(tmp_path, EXAMPLES / "tflite/models/iris.tflite")
    runner = make(
        "tflite", {"model": "iris.tflite", "inputs": {"features": "x"}, "outputs": {"probabilities": "y"}}, app
    )
    np.testing.assert_allclose(runner({"x": x})["y"], reference, rtol=1e-6)
    np.testing.assert_allclose(runner({"x": x[:1]})["y"], reference[:1], rtol=1e-6)  # resized back down
    assert runner({"x": x.astype(np.float64)})["y"].dtype == np.float32  # cast to the model's type

    clf = LogisticRegression(max_iter=200).fit(x, np.arange(len(x)) % 3)
    fixed = example_script("tflite").flatbuffer(clf.coef_, clf.intercept_, dynamic_batch=False)
    (app / "fixed.tflite").write_bytes(fixed)
    one_at_a_time = make("tflite", {"model": "fixed.tflite", "input": "x", "output": "y"}, app)
    np.testing.assert_allclose(one_at_a_time({"x": x})["y"], clf.predict_proba(x), rtol=1e-4, atol=1e-6)
    assert one_at_a_time({"x": x[:0]})["y"].shape == (0, 3)
    with pytest.raises(DataError, match=r"the model takes features \[1, 4\]"):
        one_at_a_time({"x": x[:, :3]})
    with pytest.raises(ConfigError, match="no input 'pixels'"):
        make("tflite", {"model": "iris.tflite", "inputs": {"pixels": "x"}, "output": "y"}, app)


# --- pmml ------------------------------------------------------------------------------------


def test_pmml_by_named_fields_or_one_table(tmp_path: Path) -> None:
    from sklearn_pmml_model.auto_detect import auto_detect_estimator

    app = app_with(tmp_path, EXAMPLES / "pmml/models/iris.pmml")
    columns = heldout("pmml")["inputs"]
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    table = np.column_stack([columns[n] for n in names])
    estimator = auto_detect_estimator(pmml=str(app / "iris.pmml"))
    by_field = make(
        "pmml", {"model": "iris.pmml", "method": "predict_proba", "inputs": {n: n for n in names}, "output": "y"}, app
    )
    variables = {n: np.array(columns[n]) for n in names}
    np.testing.assert_allclose(by_field(variables)["y"], estimator.predict_proba(table))
    labels = make("pmml", {"model": "iris.pmml", "input": "x", "output": "y"}, app)({"x": table})["y"]
    assert labels.dtype == object and labels.tolist() == estimator.predict(table).tolist()
    assert by_field({n: v[:0] for n, v in variables.items()})["y"].shape == (0, 3)
    with pytest.raises(ConfigError, match="petal_width of the PMML document not mapped"):
        make("pmml", {"model": "iris.pmml", "inputs": {n: n for n in names[:3]}, "output": "y"}, app)
    with pytest.raises(DataError, match="expected \\[N, 4\\]"):
        make("pmml", {"model": "iris.pmml", "input": "x", "output": "y"}, app)({"x": table[:, :2]})


# --- mlflow ----------------------------------------------------------------------------------


def test_mlflow_folder_and_zip(tmp_path: Path) -> None:
    import mlflow.pyfunc

    app = app_with(tmp_path, EXAMPLES / "mlflow/models/iris-model")
    x = np.array(heldout("mlflow")["inputs"]["features"], dtype=np.float32)
    reference = mlflow.pyfunc.load_model(str(app / "iris-model")).predict(x)
    folder = make("mlflow", {"model": "iris-model", "input": "x", "output": "y"}, app)
    np.testing.assert_allclose(folder({"x": x})["y"], reference, rtol=1e-6)

    with zipfile.ZipFile(app / "iris.zip", "w") as zf:  # as Maki Nage publishes models: a folder in a zip
        for f in sorted((app / "iris-model").iterdir()):
            zf.write(f, f"iris-model/{f.name}")
    zipped = make("mlflow", {"model": "iris.zip", "input": "x", "output": "y"}, app)
    np.testing.assert_allclose(zipped({"x": x})["y"], reference, rtol=1e-6)
    with pytest.raises(DataError, match="the batch is empty"):
        zipped({"x": x[:0]})

    with zipfile.ZipFile(app / "evil.zip", "w") as zf:
        zf.writestr("../MLmodel", "flavors: {}\n")
    with pytest.raises(ConfigError, match="outside the archive"):
        make("mlflow", {"model": "evil.zip", "input": "x", "output": "y"}, app)
    (app / "empty").mkdir()
    with pytest.raises(ConfigError, match="no MLmodel"):
        make("mlflow", {"model": "empty", "input": "x", "output": "y"}, app)


def test_mlflow_columns_in_and_out(tmp_path: Path) -> None:
    import mlflow.pyfunc

    class Arithmetic(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        """Columns in, columns out."""

        # no type hints: MLflow would turn them into a signature and validate against it
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            import pandas as pd

            a, b = model_input["a"], model_input["b"]
            return pd.DataFrame({"sum": a + b, "diff": a - b})

    mlflow.pyfunc.save_model(str(tmp_path / "arith"), python_model=Arithmetic(), pip_requirements=["pandas"])
    runner = make(
        "mlflow", {"model": "arith", "inputs": {"a": "x", "b": "y"}, "outputs": {"sum": "s", "diff": "d"}}, tmp_path
    )
    out = runner({"x": np.array([1.0, 2.0]), "y": np.array([[0.5], [4.0]])})
    assert out["s"].tolist() == [1.5, 6.0] and out["d"].tolist() == [0.5, -2.0]
    with pytest.raises(DataError, match="has no 'product'"):
        make("mlflow", {"model": "arith", "inputs": {"a": "x", "b": "y"}, "outputs": {"product": "p"}}, tmp_path)(
            {"x": np.array([1.0]), "y": np.array([2.0])}
        )
    with pytest.raises(DataError, match="different lengths"):
        runner({"x": np.array([1.0, 2.0]), "y": np.array([1.0])})
