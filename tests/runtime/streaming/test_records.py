"""The streaming pieces that need no broker: model messages, their assembly and
verification, offset bookkeeping, encodings, record handling, Maki Nage
transforms, settings, and what the compiler plans for a Kafka pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from kbuild.runtime.contract.errors import LoadError
from kbuild.runtime.contract.kafka import TransformsConfig
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.streaming.codec import codec
from kbuild.runtime.streaming.records import RecordError, pipeline_handler
from kbuild.runtime.streaming.transforms import transforms_handler
from tests.helpers.kafka import iris_pipeline

# -- encodings and records


def iris_spec(**kafka: Any) -> PipelineSpec:
    return PipelineSpec.from_json(iris_pipeline(kafka or {"source": {"topic": "a"}, "sink": {"topic": "b"}}))


def echo_run(inputs: dict[str, Any]) -> dict[str, Any]:
    rows = inputs["features"].shape[0]
    return {"label": np.array(["setosa"] * rows, dtype=object), "probability": np.ones(rows, np.float32)}


def test_json_and_msgpack_records() -> None:
    spec = iris_spec()
    handle = pipeline_handler(spec, codec("json"), codec("msgpack"), echo_run)
    out = handle(json.dumps({"features": [[1, 2, 3, 4]]}).encode())
    assert out is not None and msgpack.unpackb(out) == {"label": ["setosa"], "probability": [1.0]}
    with pytest.raises(RecordError) as error:
        handle(b'{"features": [[1, 2]]}')
    assert error.value.stage == "decode" and "expected shape [-1, 4]" in error.value.message
    with pytest.raises(RecordError, match="no value"):
        handle(None)


def test_failures_inside_the_pipeline_name_the_stage() -> None:
    def broken(inputs: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError("boom")

    handle = pipeline_handler(iris_spec(), codec("json"), codec("json"), broken)
    with pytest.raises(RecordError) as error:
        handle(b'{"features": [1, 2, 3, 4]}')
    assert error.value.stage == "pipeline" and "ZeroDivisionError: boom" in error.value.message


def test_raw_records_are_the_bytes_of_one_input_and_output() -> None:
    spec = PipelineSpec.from_json(
        {
            "kbuild": 1,
            "name": "echo",
            "inputs": {"text": {"datatype": "BYTES", "shape": [-1]}},
            "outputs": {"upper": {"datatype": "BYTES", "shape": [-1]}},
            "steps": [],
        }
    )
    handle = pipeline_handler(
        spec, codec("raw"), codec("raw"), lambda v: {"upper": np.array([v["text"][0].upper()], dtype=object)}
    )
    assert handle(b"\x00abc") == b"\x00ABC"
    with pytest.raises(LoadError, match="one BYTES input"):
        pipeline_handler(iris_spec(), codec("raw"), codec("json"), echo_run)


MAKINAGE = """
import numpy as np

def pre_transform(config):
    field = config['config']['serve']['input_field']

    def _transform(event):
        if event.get('skip'):
            return None
        return np.array([event[field]], dtype=np.float32)

    return _transform


def predict(model, config):
    ratio = config['config']['serve']['ratio']

    def _predict(features):
        return (model.predict(features), float(features[0][0]) * ratio)

    return _predict


def post_transform(config):
    field = config['config']['serve']['output_field']

    def _transform(event, prediction):
        event[field] = {'label': prediction[0][0], 'scaled': prediction[1]}
        return event

    return _transform
"""


def test_maki_nage_functions_run_unchanged(tmp_path: Path) -> None:
    (tmp_path / "transforms").mkdir()
    (tmp_path / "transforms" / "mn_unit.py").write_text(MAKINAGE)
    spec = PipelineSpec.from_json(
        {
            **iris_pipeline({"source": {"topic": "a"}, "sink": {"topic": "b"}}),
            "outputs": {"label": {"datatype": "BYTES", "shape": [-1]}},
        }
    )
    served: list[object] = [object()]
    calls: list[object] = []

    def run(inputs: dict[str, Any]) -> dict[str, Any]:
        calls.append(served[0])
        return {"label": np.array(["virginica"], dtype=object)}

    handle = transforms_handler(
        tmp_path,
        TransformsConfig(
            code="transforms/mn_unit.py",
            pre_transform="mn_unit:pre_transform",
            predict="mn_unit:predict",
            post_transform="mn_unit:post_transform",
            config={"config": {"serve": {"input_field": "x", "output_field": "y", "ratio": 2}}},
        ),
        codec("json"),
        codec("json"),
        spec,
        run,
        lambda: served[0],
    )
    out = handle(b'{"id": 7, "x": [6.7, 3.0, 5.2, 2.3]}')
    assert out is not None and json.loads(out) == {
        "id": 7,
        "x": [6.7, 3.0, 5.2, 2.3],
        "y": {"label": "virginica", "scaled": pytest.approx(13.4)},
    }
    assert handle(b'{"skip": true}') is None  # None skips, as in Maki Nage
    with pytest.raises(RecordError) as error:
        handle(b'{"id": 8}')
    assert error.value.stage == "pipeline" and "KeyError" in error.value.message
