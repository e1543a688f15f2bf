"""A sentence-transformers folder is read from its own JSON, without a
framework: what it chains, how it pools, its Dense modules and the width
of what it gives; what kbuild cannot compile is said, with the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kbuild.cli import main
from kbuild.load.checkpoints import CheckpointProblem
from kbuild.load.embedding_folders import read_embedding_folder
from tests.helpers.build import EXAMPLES
from tests.helpers.sentence_folders import add_dense, light_copy, modules, write_modules
from tests.helpers.text import replace_once

TASK = "sentence-embedding"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return light_copy(tmp_path / "minilm")


def _problem(folder: Path) -> str:
    with pytest.raises(CheckpointProblem) as caught:
        read_embedding_folder(folder, TASK, {})
    return str(caught.value)


def test_the_published_folder_pools_by_mean_and_normalizes(folder: Path) -> None:
    read = read_embedding_folder(folder, TASK, {})
    assert (read.pooling, read.normalize, read.dimension, read.dense) == ("mean", True, 384, ())
    assert read.max_length == 256 and read.model_limit == 512  # sentence_bert_config.json's max_seq_length
    assert read.encoder == folder and read.token_inputs == ("input_ids", "attention_mask", "token_type_ids")


def test_module_names_of_newer_releases_are_the_same_modules(folder: Path) -> None:
    listed = modules(folder)
    for module, name in zip(listed, ("transformer.Transformer", "pooling.Pooling", "normalize.Normalize"), strict=True):
        module["type"] = f"sentence_transformers.base.modules.{name}"
    write_modules(folder, listed)
    assert read_embedding_folder(folder, TASK, {}).pooling == "mean"


def test_dense_modules_set_the_width_and_come_before_normalize(folder: Path) -> None:
    first = add_dense(folder, 384, 256)
    add_dense(folder, 256, 128, activation_function="torch.nn.modules.linear.Identity", bias=False, use_residual=True)
    read = read_embedding_folder(folder, TASK, {})
    assert read.dimension == 128 and read.normalize
    assert [(d.folder, d.in_features, d.out_features, d.bias, d.activation, d.residual) for d in read.dense] == [
        (first, 384, 256, True, "tanh", False),
        (folder / "3_Dense", 256, 128, False, "identity", True),
    ]
    assert [m["type"].rsplit(".", 1)[-1] for m in modules(folder)][2:] == ["Dense", "Dense", "Normalize"]
    assert [d.weights for d in read.dense] == [first / "model.safetensors", folder / "3_Dense" / "model.safetensors"]


def test_a_dense_without_activation_function_is_tanh_as_in_sentence_transformers(folder: Path) -> None:
    dense = add_dense(folder, 384, 64)
    config = json.loads((dense / "config.json").read_text())
    del config["activation_function"]
    (dense / "config.json").write_text(json.dumps(config))
    assert read_embedding_folder(folder, TASK, {}).dense[0].activation == "tanh"


@pytest.mark.parametrize(
    ("change", "phrases"),
    [
        ({"in_features": 768}, ("takes 768 values", "gives 384", "2_Dense/config.json")),
        ({"activation_function": "my.Swish"}, ("activation 'my.Swish'", "Tanh", "2_Dense/config.json")),
        ({"module_input_name": "token_embeddings"}, ("on 'token_embeddings'", "sentence embedding")),
        ({"out_features": "wide"}, ("without in_features and out_features",)),
    ],
)
def test_a_dense_module_kbuild_cannot_compile_is_named(
    folder: Path, change: dict[str, Any], phrases: tuple[str, ...]
) -> None:
    add_dense(folder, **{"in_features": 384, "out_features": 256, **change})
    message = _problem(folder)
    assert all(p in message for p in phrases), message


def test_a_dense_module_without_weights_is_named(folder: Path) -> None:
    (add_dense(folder, 384, 256) / "model.safetensors").unlink()
    assert "Dense module without weights" in _problem(folder) and "2_Dense" in _problem(folder)


def test_dense_before_pooling_is_a_chain_kbuild_does_not_compile(folder: Path) -> None:
    listed = modules(folder)
    listed.insert(1, {"path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    write_modules(folder, listed)
    assert "chains Transformer -> Dense -> Pooling -> Normalize" in _problem(folder)


def test_a_module_of_another_kind_is_named(folder: Path) -> None:
    listed = modules(folder)
    listed.insert(2, {"path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"})
    write_modules(folder, listed)
    assert "has a LayerNorm module (modules.json)" in _problem(folder)


def _pipeline(folder: Path, *changes: tuple[str, str]) -> Path:
    """The embeddings example's pipeline, beside `folder`, with `changes` made to its text."""
    text = (EXAMPLES / "embeddings/pipeline.yaml").read_text().replace("models/all-MiniLM-L6-v2", folder.name)
    for old, new in changes:
        text = replace_once(text, old, new)
    path = folder.parent / "pipeline.yaml"
    path.write_text(text)
    return path


def test_validate_names_the_output_declared_at_another_width(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_dense(folder, 384, 256)
    assert main(["validate", str(_pipeline(folder))]) == 3
    err = capsys.readouterr().err
    assert "pipeline.yaml:16:" in err and "$.outputs.embedding.shape" in err and "256 values" in err, err
    assert main(["validate", str(_pipeline(folder, ("[-1, 384]", "[-1, 256]")))]) == 0
    out = capsys.readouterr().out
    assert "embed-pool (pool), embed-dense (onnx, converted from the checkpoint at build time)" in out


def test_validate_refuses_dense_modules_under_runtime_native(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_dense(folder, 384, 384)
    pipeline = _pipeline(
        folder, ("    task: sentence-embedding\n", "    task: sentence-embedding\n    runtime: native\n")
    )
    assert main(["validate", str(pipeline)]) == 3
    err = capsys.readouterr().err
    assert "$.steps[0].runtime: the folder has Dense modules" in err and "Traceback" not in err, err
