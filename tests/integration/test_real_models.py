"""Real-sized models end to end: the text example (tokenize -> a 4-layer
BERT-style transformer in ONNX -> classify with softmax) and the CNN example
(image -> a 2.4M-parameter ResNet-style network, as ONNX and as TorchScript ->
classify). Each is built into a zipapp once; its held-out rows go through
`predict`, HTTP and gRPC, and every answer must be the framework's own,
computed here in-process: transformers for the text model, torch for the CNN."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.helpers.build import EXAMPLES, Built, build_example, free_port, post_json, wait_ready

# torch 2.13 marks TorchScript deprecated (for torch.export); it still loads it
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

TEXT_LABELS = ["sport", "weather", "cooking"]
SHAPES = ["circle", "square", "triangle"]


def _transformers(inputs: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    import torch
    from tokenizers import Tokenizer
    from transformers import BertForSequenceClassification

    tokenizer = Tokenizer.from_file(str(EXAMPLES / "text/models/tokenizer.json"))
    tokenizer.enable_truncation(64)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    encodings = tokenizer.encode_batch(inputs["text"])
    model = BertForSequenceClassification.from_pretrained(str(EXAMPLES / "text/models/hf"))
    model.eval()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor([e.ids for e in encodings]),
            attention_mask=torch.tensor([e.attention_mask for e in encodings]),
            token_type_ids=torch.tensor([e.type_ids for e in encodings]),
        ).logits
    probs = torch.softmax(logits, dim=1).numpy()
    return [TEXT_LABELS[i] for i in probs.argmax(axis=1)], probs.max(axis=1)


def _torch(inputs: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    import torch
    from PIL import Image

    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)

    def pixels(text: str) -> np.ndarray:
        with Image.open(io.BytesIO(base64.b64decode(text))) as image:
            small = image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
        return ((np.asarray(small, dtype=np.float32) / np.float32(255.0) - mean) / std).transpose(2, 0, 1)

    module = torch.jit.load(str(EXAMPLES / "image-cnn/models/shapes.pt"))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        logits = module(torch.tensor(np.stack([pixels(t) for t in inputs["image"]])))
    probs = torch.softmax(logits, dim=1).numpy()
    return [SHAPES[i] for i in probs.argmax(axis=1)], probs.max(axis=1)


@dataclass(frozen=True)
class RealModel:
    folder: str
    pipeline: str
    input: str
    label: str  # the label output
    reference: Callable[[dict[str, Any]], tuple[list[str], np.ndarray]]
    saved: str  # the framework's answers kept in heldout.json by train.py


MODELS = {
    "text": RealModel("text", "pipeline.yaml", "text", "topic", _transformers, "transformers"),
    "cnn-onnx": RealModel("image-cnn", "pipeline.yaml", "image", "shape", _torch, "torch"),
    "cnn-torchscript": RealModel("image-cnn", "torchscript.yaml", "image", "shape", _torch, "torch"),
}


@dataclass(frozen=True)
class Case:
    model: RealModel
    built: Built
    inputs: dict[str, Any]
    truth: list[str]
    expected: tuple[list[str], np.ndarray]


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    model = MODELS[request.param]
    built = build_example(tmp_path_factory.mktemp(request.param), model.pipeline, example=model.folder)
    assert built.report["verification"]["status"] == "passed"
    data = json.loads((EXAMPLES / model.folder / "heldout.json").read_text())
    expected = model.reference(data["inputs"])
    # what train.py saw the framework answer is what it answers here
    assert expected[0] == data[model.saved][model.label]
    np.testing.assert_allclose(expected[1], data[model.saved]["probability"], atol=1e-5)
    return Case(model, built, data["inputs"], data["labels"], expected)


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int


@pytest.fixture(scope="module")
def ports(case: Case) -> Iterator[Ports]:
    ports = Ports(free_port(), free_port())
    cmd = [
        sys.executable,
        str(case.built.artifact),
        "serve",
        "--http-port",
        str(ports.http),
        "--grpc-port",
        str(ports.grpc),
    ]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            wait_ready(ports.http, proc, timeout=120)
            yield ports
        finally:
            proc.terminate()
            assert proc.wait(60) == 0


def assert_same(case: Case, labels: list[str], probability: Any) -> None:
    assert labels == case.expected[0]
    np.testing.assert_allclose(np.asarray(probability, dtype=np.float64), case.expected[1], rtol=1e-4, atol=1e-5)


def test_predict_gives_the_frameworks_answers(case: Case) -> None:
    proc = subprocess.run(
        [sys.executable, str(case.built.artifact), "predict"],
        input=json.dumps(case.inputs),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert_same(case, answer[case.model.label], answer["probability"])
    accuracy = np.mean([a == b for a, b in zip(answer[case.model.label], case.truth, strict=True)])
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.3f}"


def test_http_gives_the_frameworks_answers(case: Case, ports: Ports) -> None:
    status, body = post_json(ports.http, "/predict", case.inputs)
    assert status == 200, body
    assert_same(case, body[case.model.label], body["probability"])
    # one row at a time, as single clients send them: the same answers
    rows = case.inputs[case.model.input][:8]
    singles = [post_json(ports.http, "/predict", {case.model.input: [row]}) for row in rows]
    assert all(status == 200 for status, _ in singles)
    assert [body[case.model.label][0] for _, body in singles] == case.expected[0][:8]


def test_grpc_gives_the_frameworks_answers(case: Case, ports: Ports) -> None:
    model = case.built.report["pipeline"]["name"]
    rows = case.inputs[case.model.input]
    raw = [base64.b64decode(r) if case.model.input == "image" else r.encode() for r in rows]
    tensor = triton_grpc.InferInput(case.model.input, [len(raw)], "BYTES")
    tensor.set_data_from_numpy(np.array(raw, dtype=object))
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{ports.grpc}") as client:
        result = client.infer(model, [tensor])
    labels = [v.decode() for v in result.as_numpy(case.model.label)]
    assert_same(case, labels, result.as_numpy("probability"))


def test_a_row_the_step_cannot_take_is_the_clients_error(case: Case, ports: Ports) -> None:
    model = case.built.report["pipeline"]["name"]
    bad = b"\xff\xfe not text" if case.model.input == "text" else b"not an image"
    tensor = triton_http.InferInput(case.model.input, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([bad], dtype=object), binary_data=True)
    client = triton_http.InferenceServerClient(f"127.0.0.1:{ports.http}")
    try:
        with pytest.raises(InferenceServerException) as raised:
            client.infer(model, [tensor])
    finally:
        client.close()
    assert raised.value.status() == "400"
    step = "tokens" if case.model.input == "text" else "pixels"
    assert f"step '{step}'" in str(raw_message := raised.value.message()), raw_message
    # the server lives on and answers the next request
    status, body = post_json(ports.http, "/predict", {case.model.input: case.inputs[case.model.input][:1]})
    assert status == 200 and body[case.model.label] == case.expected[0][:1]


def test_the_text_artifact_carries_tokenizers_without_the_hub(case: Case) -> None:
    packages = {p["name"] for p in case.built.report["packages"]}
    if case.model.folder == "text":
        assert {"tokenizers", "onnxruntime", "numpy"} <= packages
        assert not packages & {"huggingface-hub", "hf-xet", "httpx2", "torch", "transformers"}
        models = {m["file"] for m in case.built.report["models"]}
        assert models == {"tokenizer.json", "topics.onnx"}
    else:
        assert "pillow" in packages and "tokenizers" not in packages
    assert Path(case.built.artifact).stat().st_size > 0
