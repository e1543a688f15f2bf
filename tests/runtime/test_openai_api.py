"""OpenAI's embeddings API in-process: requests read into the pipeline's
inputs, answers written from its outputs, errors in OpenAI's shape."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.contract.serve import OpenAISettings
from kbuild.runtime.openai_api import Embeddings, OpenAIError, Tokens

SPEC = {
    "kbuild": 1,
    "name": "vectors",
    "version": "1.0.0",
    "inputs": {"text": {"datatype": "BYTES", "shape": [-1]}},
    "outputs": {"embedding": {"datatype": "FP32", "shape": [-1, 3]}},
    "steps": [],
    "serve": {"http": {"openai": {"model": "tiny"}}},
}
VECTORS = np.array([[0.5, -1.25, 3.0e-8], [np.nan, 1.0, np.inf]], dtype=np.float32)


@pytest.fixture
def api() -> Embeddings:
    spec = PipelineSpec.from_json(json.loads(json.dumps(SPEC)))
    return Embeddings(spec, OpenAISettings(model="tiny", max_inputs=3, max_queued=10), Tokens(None, None))


def _answer(api: Embeddings, body: dict[str, object], vectors: np.ndarray = VECTORS) -> dict[str, object]:
    inputs, answer = api.request(body, 0)
    assert inputs["text"].tolist() == (body["input"] if isinstance(body["input"], list) else [body["input"]])
    document: dict[str, object] = json.loads(answer({"embedding": vectors[: len(inputs["text"])]}))
    return document


def test_float_answers_are_the_float32_values_non_finite_as_null(api: Embeddings) -> None:
    document = _answer(api, {"model": "tiny", "input": ["a", "b"]})  # float unless asked
    data = document["data"]
    assert isinstance(data, list) and [d["index"] for d in data] == [0, 1]
    first = np.array(data[0]["embedding"], dtype=np.float32)
    assert np.array_equal(first, VECTORS[0])  # each float's shortest form reads back as the same float32
    assert data[1]["embedding"] == [None, 1.0, None]
    assert document["model"] == "tiny" and document["object"] == "list"


def test_base64_answers_are_little_endian_float32(api: Embeddings) -> None:
    document = _answer(api, {"model": "tiny", "input": "one", "encoding_format": "base64"}, VECTORS.astype(">f4"))
    data = document["data"]
    assert isinstance(data, list)
    decoded = np.frombuffer(base64.b64decode(data[0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, VECTORS[0])


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        ({"input": "x"}, 400, "model", "model parameter"),
        ({"model": "other", "input": "x"}, 404, "model", "does not exist"),
        ({"model": "tiny", "input": []}, 400, "input", "must not be empty"),
        ({"model": "tiny", "input": ["a", ""]}, 400, "input", "input[1] is an empty string"),
        ({"model": "tiny", "input": ["a", "b", "c", "d"]}, 400, "input", "at most 3"),
        ({"model": "tiny", "input": [1, 2]}, 400, "input", "takes text, not token ids"),
        ({"model": "tiny", "input": "x", "dimensions": 2}, 400, "dimensions", "dimensions 2"),
        ({"model": "tiny", "input": "x", "encoding_format": "hex"}, 400, "encoding_format", "'hex'"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(
    api: Embeddings, body: dict[str, object], status: int, param: str, says: str
) -> None:
    with pytest.raises(OpenAIError) as refused:
        api.request(body, 0)
    assert refused.value.http_status == status
    assert refused.value.param == param
    assert says in refused.value.message


def test_a_full_queue_asks_to_retry(api: Embeddings) -> None:
    with pytest.raises(OpenAIError) as refused:
        api.request({"model": "tiny", "input": ["a", "b"]}, 9)
    assert refused.value.http_status == 429 and refused.value.code == "rate_limit_exceeded"


def test_models_lists_the_one_model(api: Embeddings) -> None:
    assert [m["id"] for m in json.loads(api.models())["data"]] == ["tiny"]
    with pytest.raises(OpenAIError):
        api.model("other")


def test_tokens_count_and_read_ids(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    tokens = Tokens(tmp_path / "tokenizer.json", None)
    assert tokens.count(["hello world", "hello"]) == 3
    assert tokens.text([1, 2], 0) == "hello world"
    with pytest.raises(OpenAIError, match="token id 7 is not in the model's vocabulary"):
        tokens.text([1, 7], 0)
