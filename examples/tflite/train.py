"""Make the tflite example's model: an iris classifier as a LiteRT (TensorFlow
Lite) flatbuffer, without TensorFlow.

A multinomial logistic regression is trained with scikit-learn and written as
the two operators it is, FULLY_CONNECTED then SOFTMAX, with the schema module
that ai-edge-litert ships. The batch dimension is dynamic. Deterministic; the
model is small and committed, so building the example needs no training:

    python examples/tflite/train.py      # writes models/iris.tflite and heldout.json
"""

from __future__ import annotations

import json
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
LABELS = ["setosa", "versicolor", "virginica"]


def tensor(name: str, shape: list[int], buffer: int, batch: bool) -> tfl.TensorT:
    t = tfl.TensorT()
    t.name, t.type, t.buffer = name, tfl.TensorType.FLOAT32, buffer
    t.shape = shape
    if batch:  # the first dimension is the batch: any size at run time
        t.shapeSignature = [-1, *shape[1:]]
    return t


def operator_code(code: int) -> tfl.OperatorCodeT:
    c = tfl.OperatorCodeT()
    c.builtinCode, c.deprecatedBuiltinCode, c.version = code, code, 1
    return c


def buffer(values: np.ndarray | None) -> tfl.BufferT:
    b = tfl.BufferT()
    if values is not None:
        b.data = np.frombuffer(values.astype("<f4").tobytes(), dtype=np.uint8)
    return b


def flatbuffer(weights: np.ndarray, bias: np.ndarray, dynamic_batch: bool = True) -> bytes:
    """The model; with dynamic_batch False its batch is fixed at 1, as many converted models' are."""
    classes, features = weights.shape
    fc = tfl.OperatorT()
    fc.opcodeIndex, fc.inputs, fc.outputs = 0, [0, 1, 2], [3]
    fc.builtinOptionsType = tfl.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = tfl.FullyConnectedOptionsT()
    softmax = tfl.OperatorT()
    softmax.opcodeIndex, softmax.inputs, softmax.outputs = 1, [3], [4]
    softmax.builtinOptionsType = tfl.BuiltinOptions.SoftmaxOptions
    softmax.builtinOptions = tfl.SoftmaxOptionsT()
    softmax.builtinOptions.beta = 1.0

    graph = tfl.SubGraphT()
    graph.name = "main"
    graph.tensors = [
        tensor("features", [1, features], 0, batch=dynamic_batch),
        tensor("weights", [classes, features], 1, batch=False),
        tensor("bias", [classes], 2, batch=False),
        tensor("logits", [1, classes], 0, batch=dynamic_batch),
        tensor("probabilities", [1, classes], 0, batch=dynamic_batch),
    ]
    graph.inputs, graph.outputs, graph.operators = [0], [4], [fc, softmax]

    model = tfl.ModelT()
    model.version, model.description = 3, "iris logistic regression (kbuild example)"
    model.operatorCodes = [
        operator_code(tfl.BuiltinOperator.FULLY_CONNECTED),
        operator_code(tfl.BuiltinOperator.SOFTMAX),
    ]
    model.subgraphs = [graph]
    model.buffers = [buffer(None), buffer(weights), buffer(bias)]  # buffer 0 is the empty one
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def main() -> None:
    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=0, stratify=data.target
    )
    clf = LogisticRegression(max_iter=1000).fit(x_train.astype(np.float32), y_train)
    (HERE / "models").mkdir(exist_ok=True)
    (HERE / "models" / "iris.tflite").write_bytes(flatbuffer(clf.coef_, clf.intercept_))
    accuracy = float((clf.predict(x_test.astype(np.float32)) == y_test).mean())
    heldout = {"inputs": {"features": x_test.tolist()}, "labels": [LABELS[i] for i in y_test]}
    (HERE / "heldout.json").write_text(json.dumps(heldout) + "\n")
    print(f"wrote models/iris.tflite and heldout.json ({len(y_test)} rows, accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
