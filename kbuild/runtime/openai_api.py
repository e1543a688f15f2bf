"""OpenAI's embeddings API, for a pipeline of texts (BYTES [-1]) to vectors
(FP32 [-1, D]): the clients written for OpenAI call it unchanged.

    POST /v1/embeddings     {"model", "input": a string, strings, token ids or
                            lists of them, "encoding_format": float | base64,
                            "dimensions"?} -> {"object": "list", "data": [...],
                            "model", "usage": {"prompt_tokens", "total_tokens"}}
    GET  /v1/models         the one model, as OpenAI lists models
    GET  /v1/models/NAME    it, or 404

The texts of a request join the same batcher as every other request. Token
ids are the model's own tokenizer's: they are decoded to text for the
pipeline's tokenize step. prompt_tokens is what that tokenizer makes of the
texts, truncated as the model reads them. Errors are OpenAI's error object:
400 for a request that does not fit (param names the field), 404 for another
model, 413 for a body over serve.http.max_body_bytes, 429 (with Retry-After)
while more than max_queued texts wait for the model, and the pipeline's own
statuses otherwise.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import AppError, ClientError
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.contract.serve import OpenAISettings
from kbuild.runtime.tensors import Vars, dumps

_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
}
_OWNER = "kbuild"


class OpenAIError(ClientError):
    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.param = param
        self.code = code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def app_error_body(error: AppError) -> bytes:
    if isinstance(error, OpenAIError):
        return error_body(error.http_status, error.message, error.param, error.code)
    return error_body(error.http_status, error.message)


class Tokens:
    """The pipeline's tokenizer, for counting tokens and reading token ids."""

    def __init__(self, path: Path | None, max_length: int | None) -> None:
        self._tokenizer: Any = None
        if path is not None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(path))
            self._tokenizer.no_padding()
            if max_length is not None:
                self._tokenizer.enable_truncation(max_length)
            self._vocabulary = self._tokenizer.get_vocab_size()

    def count(self, texts: list[str]) -> int:
        if self._tokenizer is None:
            return 0
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(texts))

    def text(self, ids: list[int], index: int) -> str:
        if self._tokenizer is None:
            raise OpenAIError("this model takes text, not token ids", param="input")
        bad = next((i for i in ids if not 0 <= i < self._vocabulary), None)
        if bad is not None:
            raise OpenAIError(f"input[{index}]: token id {bad} is not in the model's vocabulary", param="input")
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))


def tokenizer_of(spec: PipelineSpec, app_dir: Path | None) -> tuple[Path | None, int | None]:
    """The tokenize step that reads the pipeline's input, where there is one."""
    source = spec.inputs[0].name
    for step in spec.steps:
        if step.get("type") == "tokenize" and step.get("input") == source and app_dir is not None:
            length = step.get("max_length")
            return app_dir / str(step["tokenizer"]), int(length) if isinstance(length, int) else None
    return None, None


def _numpy_json() -> Callable[[object], bytes]:
    """JSON straight from NumPy arrays (non-finite floats as null, as dumps()
    writes them); orjson is in every artifact that serves serve.http.openai."""
    import orjson

    option = orjson.OPT_SERIALIZE_NUMPY

    def encode(obj: object) -> bytes:
        return orjson.dumps(obj, option=option)

    return encode


class Embeddings:
    def __init__(self, spec: PipelineSpec, settings: OpenAISettings, tokens: Tokens) -> None:
        self.settings = settings
        self.source = spec.inputs[0].name
        self.target = spec.outputs[0].name
        shape = spec.outputs[0].shape
        self.dimension = shape[-1] if shape and shape[-1] > 0 else None
        self.tokens = tokens
        self._answer_json = _numpy_json()
        self._models = dumps({"object": "list", "data": [self._model()]})

    def _model(self) -> dict[str, Any]:
        return {"id": self.settings.model, "object": "model", "created": 0, "owned_by": _OWNER}

    def models(self) -> bytes:
        return self._models

    def model(self, name: str) -> bytes:
        self._check_model(name)
        return dumps(self._model())

    def _check_model(self, name: object) -> None:
        if name != self.settings.model:
            raise OpenAIError(
                f"The model `{name}` does not exist; this server serves `{self.settings.model}`",
                404,
                "model",
                "model_not_found",
            )

    def request(self, obj: object, queued: int) -> tuple[Vars, Callable[[Vars | None], bytes]]:
        """A request's inputs, and what turns the pipeline's outputs into its answer."""
        if not isinstance(obj, Mapping):
            raise OpenAIError("the request body must be a JSON object")
        if "model" not in obj:
            raise OpenAIError("you must provide a model parameter", param="model")
        self._check_model(obj["model"])
        texts, counted = self._texts(obj.get("input"))
        encoding = obj.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise OpenAIError(f"encoding_format {encoding!r} is not float or base64", param="encoding_format")
        dimensions = obj.get("dimensions")
        if dimensions is not None and (dimensions != self.dimension or isinstance(dimensions, bool)):
            raise OpenAIError(
                f"this model gives {self.dimension}-dimensional embeddings and cannot shorten them "
                f"(dimensions {dimensions!r})",
                param="dimensions",
            )
        if queued + len(texts) > self.settings.max_queued:
            raise OpenAIError(
                f"{queued} texts are waiting for the model (at most {self.settings.max_queued}); retry shortly",
                429,
                code="rate_limit_exceeded",
            )
        tokens = counted if counted is not None else self.tokens.count(texts)
        model = self.settings.model
        target = self.target
        as_json = self._answer_json

        def answer(outputs: Vars | None) -> bytes:
            if outputs is None:
                raise OpenAIError("the pipeline gave no embedding for this input")
            # native order and C-contiguous rows, as orjson reads them
            vectors = np.ascontiguousarray(outputs[target], dtype=np.float32)
            if encoding == "base64":
                data = [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": base64.b64encode(row.astype("<f4").tobytes()).decode("ascii"),
                    }
                    for i, row in enumerate(vectors)
                ]
            else:  # the rows themselves: orjson writes each float32's shortest form
                data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)]
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            return as_json({"object": "list", "data": data, "model": model, "usage": usage})

        return {self.source: np.array(texts, dtype=object)}, answer

    def _texts(self, given: object) -> tuple[list[str], int | None]:
        """The texts, and their token count where the client sent token ids."""
        if isinstance(given, str):
            items: list[Any] = [given]
        elif isinstance(given, list) and given:
            items = given
        elif isinstance(given, list):
            raise OpenAIError("input must not be empty", param="input")
        else:
            raise OpenAIError("input must be a string, a list of strings, or token ids", param="input")
        if len(items) > self.settings.max_inputs:
            raise OpenAIError(
                f"input holds {len(items)} items; at most {self.settings.max_inputs} per request", param="input"
            )
        if all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            return [self.tokens.text(items, 0)], len(items)
        texts: list[str] = []
        counted = 0
        for index, item in enumerate(items):
            if isinstance(item, str):
                if not item:
                    raise OpenAIError(f"input[{index}] is an empty string", param="input")
                texts.append(item)
            elif isinstance(item, list) and item and all(isinstance(i, int) and not isinstance(i, bool) for i in item):
                texts.append(self.tokens.text(item, index))
                counted += len(item)
            else:
                raise OpenAIError(f"input[{index}] is neither a string nor a list of token ids", param="input")
        if counted and any(isinstance(i, str) for i in items):
            raise OpenAIError("input mixes strings and token ids", param="input")
        return texts, counted or None
