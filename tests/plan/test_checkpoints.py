"""Checkpoint steps expand into ordinary steps before the backends are chosen:
what the artifact then needs is the runtime of the steps they became."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kbuild.errors import SpecError
from kbuild.load.pipeline import load_pipeline
from kbuild.plan.checkpoints import DEFAULT_TOLERANCE
from kbuild.plan.pipeline_plan import make_plan
from kbuild.plan.spins import load_spin
from tests.helpers.build import EXAMPLES
from tests.helpers.sentence_folders import add_dense, light_copy
from tests.helpers.text import replace_once

CPU = "cpu-linux-x86_64"


def _variant(tmp: Path, example: str, old: str, new: str) -> Path:
    folder = tmp / example
    shutil.copytree(EXAMPLES / example, folder)
    pipeline = folder / "pipeline.yaml"
    text = pipeline.read_text().replace("../text/models/hf", str(EXAMPLES / "text/models/hf"))
    pipeline.write_text(replace_once(text, old, new))
    return pipeline


def test_a_huggingface_step_becomes_tokenize_onnx_and_classify() -> None:
    plan = make_plan(load_pipeline(EXAMPLES / "huggingface/pipeline.yaml"), load_spin(CPU))
    assert [(p.step.name, p.step.type) for p in plan.steps] == [
        ("topics-tokenize", "tokenize"),
        ("topics-model", "onnx"),
        ("topics-labels", "classify"),
    ]
    assert plan.expansions == {"topics": ("topics-tokenize", "topics-model", "topics-labels")}
    tokenize, model, labels = (p.step.config for p in plan.steps)
    assert tokenize["max_length"] == 64 and tokenize["truncation"] is True
    assert set(tokenize["outputs"]) == {"input_ids", "attention_mask", "token_type_ids"}
    assert model["inputs"] == tokenize["outputs"] and labels["input"] == model["output"]
    assert labels["labels"] == ["sport", "weather", "cooking"] and labels["softmax"] is True
    assert labels["outputs"] == {"label": "topic", "probability": "probability", "scores": "scores"}
    # the artifact's document is the expanded one: what pipeline.json carries
    assert [s["name"] for s in plan.pipeline.document["steps"]] == list(plan.expansions["topics"])
    (conversion,) = plan.conversions
    assert conversion.step == "topics-model" and conversion.framework == "transformers"
    assert conversion.tolerance == DEFAULT_TOLERANCE
    assert conversion.position[0] == 21 and conversion.position[2] == "$.steps[0].model"
    # onnxruntime and tokenizers: neither torch nor transformers
    assert not [r for r in plan.requirements if r.startswith(("torch", "transformers"))]
    assert any(r.startswith("onnxruntime") for r in plan.requirements)


def test_runtime_native_keeps_the_framework_and_converts_nothing(tmp_path: Path) -> None:
    torch = _variant(tmp_path, "torch", "    output: scores\n", "    output: scores\n    runtime: native\n")
    plan = make_plan(load_pipeline(torch), load_spin(CPU))
    assert [p.step.type for p in plan.steps] == ["torch", "classify"] and not plan.conversions
    assert "torch==2.13.0+cpu" in plan.requirements and not plan.expansions
    hf = _variant(
        tmp_path,
        "huggingface",
        "    task: text-classification\n",
        "    task: text-classification\n    runtime: native\n",
    )
    plan = make_plan(load_pipeline(hf), load_spin(CPU))
    assert [p.step.type for p in plan.steps] == ["tokenize", "huggingface", "classify"] and not plan.conversions
    assert {"transformers>=4.46", "huggingface-hub>=0.24"} <= set(plan.requirements)
    # tokenize leaves huggingface-hub out of the lock; transformers needs it
    assert "huggingface-hub" not in plan.unused


def test_a_torch_step_runs_on_the_onnx_backend_of_the_spin() -> None:
    plan = make_plan(load_pipeline(EXAMPLES / "torch/pipeline.yaml"), load_spin("cuda12-linux-x86_64"))
    assert plan.steps[0].step.type == "onnx" and plan.steps[0].backend.device == "cuda"
    assert plan.conversions[0].checkpoint == EXAMPLES / "torch/models/wine.pt2"
    assert not [r for r in plan.requirements if r.startswith("torch")]


def test_expanded_names_may_not_take_the_pipelines_own(tmp_path: Path) -> None:
    pipeline = _variant(tmp_path, "huggingface", "serve:\n", "serve:\n")
    text = pipeline.read_text()
    extra = "  - {name: topics-labels, type: fields, fields: [topic], output: again}\n"
    pipeline.write_text(replace_once(text, "serve:\n", extra + "serve:\n"))
    with pytest.raises(SpecError, match="topics-labels"):
        make_plan(load_pipeline(pipeline), load_spin(CPU))


def test_dense_modules_become_an_onnx_step_after_pool_converted_with_the_encoder(tmp_path: Path) -> None:
    folder = light_copy(tmp_path / "minilm")
    add_dense(folder, 384, 256)
    text = (EXAMPLES / "embeddings/pipeline.yaml").read_text().replace("models/all-MiniLM-L6-v2", "minilm")
    (tmp_path / "pipeline.yaml").write_text(replace_once(text, "[-1, 384]", "[-1, 256]"))
    plan = make_plan(load_pipeline(tmp_path / "pipeline.yaml"), load_spin(CPU))
    assert [(p.step.name, p.step.type) for p in plan.steps] == [
        ("embed-tokenize", "tokenize"),
        ("embed-model", "onnx"),
        ("embed-pool", "pool"),
        ("embed-dense", "onnx"),
    ]
    pool, dense = plan.steps[2].step.config, plan.steps[3].step.config
    # Normalize follows the Dense modules, so the pool step leaves it to them
    assert pool["normalize"] is False and pool["output"] == "embed_pooled"
    assert dense["inputs"] == {"sentence_embedding": "embed_pooled"} and dense["output"] == "embedding"
    (conversion,) = plan.conversions
    assert conversion.step == "embed-model" and conversion.also == {"embed-dense": "dense.onnx"}
    assert conversion.settings["normalize"] is True
    assert [(d["in_features"], d["out_features"], d["activation"]) for d in conversion.settings["dense"]] == [
        (384, 256, "tanh")
    ]
