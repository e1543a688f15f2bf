"""The wine graph built and served: answers equal the frameworks' own,
computed here; rows keep their order across branches; a row no case takes
gets its own 4xx while the other requests of its batch are answered; the
same customer always lands in the same variant, in another process too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.helpers.build import EXAMPLES, Built, build_example, post_json, serving

HELDOUT = json.loads((EXAMPLES / "wine-graph" / "heldout.json").read_text())
NAMES = {"eu": ["barolo", "grignolino", "barbera"], "us": ["BAROLO", "GRIGNOLINO", "BARBERA"]}


def expected(inputs: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """What ONNX Runtime and LightGBM say, averaged 0.7/0.3, labelled by region
    (the canary only changes the case of the name)."""
    import lightgbm as lgb
    import onnxruntime as ort

    x = np.asarray(inputs["features"], dtype=np.float32)
    session = ort.InferenceSession(str(EXAMPLES / "wine-graph/models/wine.onnx"), providers=["CPUExecutionProvider"])
    p1 = session.run(["probabilities"], {"X": x})[0]
    p2 = lgb.Booster(model_file=str(EXAMPLES / "wine-graph/models/wine_lgbm.txt")).predict(x)
    p = 0.7 * p1 + 0.3 * np.asarray(p2)
    best = p.argmax(axis=1)
    names = [NAMES.get(r, ["class_0", "class_1", "class_2"])[i] for r, i in zip(inputs["region"], best, strict=True)]
    return names, p.max(axis=1)


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_example(tmp_path_factory.mktemp("wine"), "pipeline.yaml", example="wine-graph")


@pytest.fixture(scope="module")
def served(wine: Built) -> Iterator[int]:
    with serving(wine.artifact) as port:
        yield port


def test_answers_are_the_frameworks_own_in_row_order(served: int) -> None:
    status, body = post_json(served, "/predict", HELDOUT["inputs"])
    assert status == 200, body
    names, probability = expected(HELDOUT["inputs"])
    assert [n.lower() for n in body["cultivar"]] == [n.lower() for n in names]
    np.testing.assert_allclose(body["probability"], probability, rtol=1e-5)
    for name, variant in zip(body["cultivar"], body["variant"], strict=True):
        assert variant in ("stable", "canary")
        if variant == "canary":
            assert name == name.upper()
    accuracy = np.mean(
        [
            n.lower() == ["barolo", "grignolino", "barbera"][t].lower() or n.startswith("class_")
            for n, t in zip(body["cultivar"], HELDOUT["targets"], strict=True)
        ]
    )
    assert accuracy > 0.9


def test_the_same_customer_lands_in_the_same_variant_in_another_process(wine: Built, served: int) -> None:
    rows = {
        "features": HELDOUT["inputs"]["features"][:8],
        "region": ["eu"] * 8,
        "customer": [f"customer-{i}" for i in range(8)],
    }
    _, over_http = post_json(served, "/predict", rows)
    other = subprocess.run(
        [sys.executable, str(wine.artifact), "predict"],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["variant"] == over_http["variant"]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The wine graph without a default branch, served with batching."""
    import yaml

    source = yaml.safe_load((EXAMPLES / "wine-graph" / "pipeline.yaml").read_text())
    route = next(s for s in source["steps"] if s["name"] == "route")
    del route["default"]
    source["samples"] = []
    built = build_example(
        tmp_path_factory.mktemp("strict"),
        "strict.yaml",
        derive=("pipeline.yaml", {"steps": source["steps"], "samples": []}),
        example="wine-graph",
    )
    with serving(built.artifact) as port:
        yield port


def test_an_unmatched_row_gets_its_own_4xx_and_the_batch_is_answered(strict: int) -> None:
    features = HELDOUT["inputs"]["features"]
    requests = [
        {"features": [features[i]], "region": ["mars" if i == 3 else "eu"], "customer": ["c"]} for i in range(16)
    ]
    answers: list[tuple[int, Any]] = [(0, None)] * len(requests)

    def send(i: int) -> None:
        answers[i] = post_json(strict, "/predict", requests[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i, (status, body) in enumerate(answers):
        if i == 3:
            assert status == 400 and "no case for region = 'mars' (cases: eu, us)" in body["error"], body
        else:
            assert status == 200 and body["cultivar"][0].lower() in ("barolo", "grignolino", "barbera"), body


def test_the_report_and_the_openapi_document_show_the_graph(wine: Built, served: int) -> None:
    steps = {s["name"]: s for s in wine.report["steps"]}
    assert steps["eu-labels"]["in"] == "route.cases.eu" and steps["shout"]["in"] == "canary.branches.canary"
    assert "in" not in steps["avg"]
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{served}/openapi.json", timeout=30) as response:
        graph = json.loads(response.read())["x-kbuild-graph"]
    route = next(node for node in graph if node["name"] == "route")
    assert route["type"] == "switch" and sorted(route["branches"]) == ["cases.eu", "cases.us", "default"]
    assert route["branches"]["default"] == [{"name": "other-labels", "type": "classify"}]
