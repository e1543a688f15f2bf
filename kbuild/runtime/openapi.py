"""GET /openapi.json: an OpenAPI 3.1 description of the HTTP endpoints, made
from the pipeline's own inputs and outputs, so client generators and API
explorers see the real tensor names, types and shapes rather than a generic
"tensor" schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kbuild.runtime.contract.pipeline import PipelineSpec, TensorSpec
from kbuild.runtime.contract.step_types import branches_of
from kbuild.runtime.tensors import fmt_shape

JSON = "application/json"
Schema = dict[str, Any]


def document(spec: PipelineSpec, server_version: str) -> dict[str, Any]:
    model = f"/v2/models/{spec.name}"
    bases = [model] + ([f"{model}/versions/{spec.version}"] if spec.version else [])
    paths: dict[str, Any] = {
        "/predict": {"post": _predict(spec)},
        "/v2": {"get": _get("Server metadata", {"$ref": "#/components/schemas/ServerMetadata"})},
        "/v2/health/live": {"get": _get("Liveness: 200 once the process listens", _flag("live"))},
        "/v2/health/ready": {
            "get": _get(
                "Readiness: 200 once the models are loaded, 503 before and while stopping",
                _flag("ready"),
                not_ready=True,
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format 0.0.4)",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    for base in bases:
        paths[base] = {"get": _get("Model metadata", {"$ref": "#/components/schemas/ModelMetadata"}, missing=True)}
        paths[f"{base}/ready"] = {
            "get": _get(
                "Model readiness",
                {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
                },
                missing=True,
                not_ready=True,
            )
        }
        paths[f"{base}/infer"] = {"post": _infer(spec)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{spec.name} inference",
            "version": spec.version or "0",
            "description": (
                f"Pipeline '{spec.name}' served by kbuild {server_version}: the Open Inference "
                "Protocol v2 (with the binary tensor data extension) and POST /predict."
            ),
        },
        "paths": paths,
        "components": {"schemas": _components(spec)},
        # the pipeline's steps, branches included: what a request goes through
        "x-kbuild-graph": graph(spec.steps),
    }


def graph(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each step's name and type, and a graph step's branches with theirs."""
    out: list[dict[str, Any]] = []
    for step in steps:
        node: dict[str, Any] = {"name": step.get("name"), "type": step.get("type")}
        branches = branches_of(dict(step))
        if branches:
            node["branches"] = {".".join(path): graph(branch) for path, branch in branches}
        out.append(node)
    return out


def _get(summary: str, schema: Schema, *, missing: bool = False, not_ready: bool = False) -> Schema:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {JSON: {"schema": schema}}}}
    if missing:
        responses["404"] = _error("unknown model or version")
    if not_ready:
        responses["503"] = _error("not ready")
    return {"summary": summary, "responses": responses}


def _flag(name: str) -> Schema:
    return {"type": "object", "properties": {name: {"type": "boolean"}}, "required": [name]}


def _error(description: str) -> Schema:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _errors() -> dict[str, Any]:
    return {
        "400": _error("the request does not fit the declared inputs"),
        "404": _error("unknown model or version"),
        "413": _error("request body too large"),
        "500": _error("the pipeline failed"),
        "503": _error("not ready"),
        "504": _error("no answer within the request timeout"),
    }


def _predict(spec: PipelineSpec) -> Schema:
    request = {
        "type": "object",
        "properties": {s.name: _nested(s) for s in spec.inputs},
        "required": [s.name for s in spec.inputs],
        "additionalProperties": False,
    }
    response = {"type": "object", "properties": {s.name: _nested(s) for s in spec.outputs}}
    return {
        "summary": "Named inputs in, named outputs out",
        "description": (
            "One JSON object of named inputs, each a nested list in its declared shape. A single "
            "record may leave out the batch dimension; outputs keep it."
        ),
        "requestBody": {"required": True, "content": {JSON: {"schema": request}}},
        "responses": {
            "200": {"description": "the outputs", "content": {JSON: {"schema": response}}},
            "204": {"description": "the pipeline dropped the record: no prediction"},
            **_errors(),
        },
    }


def _infer(spec: PipelineSpec) -> Schema:
    return {
        "summary": "Open Inference Protocol inference",
        "description": (
            "JSON, or with the binary tensor data extension: an Inference-Header-Content-Length "
            "header gives the length of the JSON part, inputs with parameters.binary_data_size "
            "take their bytes from what follows it, and outputs requested with "
            "parameters.binary_data (or the request's binary_data_output) come back the same way."
        ),
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": {
                "description": "the outputs",
                "content": {
                    JSON: {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **_errors(),
        },
    }


def _components(spec: PipelineSpec) -> dict[str, Schema]:
    params = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
    return {
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        },
        "ServerMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "TensorMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "datatype": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "properties": {
                "name": {"const": spec.name},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/TensorMetadata"},
                },
                "outputs": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/TensorMetadata"},
                },
            },
        },
        "InferRequest": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "parameters": params,
                "inputs": {
                    "type": "array",
                    "items": {"oneOf": [_input(s, params) for s in spec.inputs]},
                },
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"enum": [s.name for s in spec.outputs]},
                            "parameters": params,
                        },
                        "required": ["name"],
                    },
                },
            },
            "required": ["inputs"],
        },
        "InferResponse": {
            "type": "object",
            "properties": {
                "model_name": {"const": spec.name},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {
                    "type": "array",
                    "items": {"oneOf": [_output(s) for s in spec.outputs]},
                },
            },
        },
    }


def _input(spec: TensorSpec, params: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {
            "name": {"const": spec.name},
            "datatype": {"const": spec.datatype},
            "shape": _shape(spec.shape),
            "parameters": params,
            "data": {"oneOf": [{"type": "array", "items": _scalar(spec.datatype)}, _nested(spec)]},
        },
        "required": ["name", "datatype", "shape"],
    }


def _output(spec: TensorSpec) -> Schema:
    return {
        "type": "object",
        "properties": {
            "name": {"const": spec.name},
            "datatype": {"const": spec.datatype},
            "shape": _shape(spec.shape),
            "data": {"type": "array", "items": _scalar(spec.datatype)},
        },
    }


def _shape(shape: Sequence[int] | None) -> Schema:
    schema: Schema = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    if shape is not None:
        schema["minItems"] = schema["maxItems"] = len(shape)
        schema["description"] = "declared: " + fmt_shape(shape) + " (-1: any size)"
    return schema


def _nested(spec: TensorSpec) -> Schema:
    schema = _scalar(spec.datatype)
    for dim in reversed(spec.shape or ()):
        schema = {"type": "array", "items": schema}
        if dim != -1:
            schema["minItems"] = schema["maxItems"] = dim
    return schema


def _scalar(datatype: str) -> Schema:
    if datatype.startswith("FP"):
        return {"type": "number"}
    if datatype == "BOOL":
        return {"type": "boolean"}
    if datatype == "BYTES":
        return {"type": "string"}
    info = np.iinfo(datatype.lower())
    return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
