"""Broken checkpoints are found at validate, read without a framework: exit 3,
the pipeline's file and line, what is wrong, and no traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kbuild.cli import main
from kbuild.load.checkpoints import CheckpointProblem, read_program, read_text_folder
from tests.helpers.build import EXAMPLES
from tests.helpers.text import replace_once

TORCH = EXAMPLES / "torch"
HF = EXAMPLES / "text/models/hf"


@dataclass(frozen=True)
class Broken:
    example: str  # keras | tensorflow | torch | huggingface | huggingface-image
    damage: Callable[[Path], object]  # given the copied example's folder
    line: int  # of the pipeline file, where the problem is reported
    phrases: tuple[str, ...]


def _write(relative: str, data: bytes) -> Callable[[Path], object]:
    return lambda folder: (folder / relative).write_bytes(data)


def _json(relative: str, change: dict[str, object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / relative
        path.write_text(json.dumps({**json.loads(path.read_text()), **change}))

    return damage


def _config(change: dict[str, object]) -> Callable[[Path], None]:
    return _json("hf/config.json", change)


def _remove(relative: str) -> Callable[[Path], None]:
    return lambda folder: (folder / relative).unlink()


def _pipeline(old: str, new: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / "pipeline.yaml"
        path.write_text(replace_once(path.read_text(), old, new))

    return damage


CASES = {
    "keras-not-a-model": Broken(
        "keras", _write("models/wine.keras", b"not a model\n"), 17, ("neither a Keras 3 .keras archive", ".h5")
    ),
    "keras-zip-without-config": Broken(
        "keras",
        lambda f: shutil.copyfile(TORCH / "models/wine.pt2", f / "models/wine.keras"),
        17,
        ("without config.json",),
    ),
    "keras-unknown-input": Broken(
        "keras",
        _pipeline("    input: measurements\n", "    inputs: {features: measurements}\n"),
        18,
        ("the model has no input 'features'", "it has measurements"),
    ),
    "keras-unknown-output": Broken(
        "keras",
        _pipeline("    output: scores\n", "    outputs: {probabilities: scores}\n"),
        19,
        ("the model has no output 'probabilities'", "it has scores"),
    ),
    "tf-no-such-signature": Broken(
        "tensorflow",
        _pipeline("signature: serving_default", "signature: predict"),
        19,
        ("no signature 'predict'", "it has serving_default (tags serve)"),
    ),
    "tf-unknown-input": Broken(
        "tensorflow",
        _pipeline("inputs: {measurements: measurements}", "inputs: {features: measurements}"),
        20,
        ("signature 'serving_default' has no input 'features'", "it has measurements"),
    ),
    "tf-unknown-output": Broken(
        "tensorflow",
        _pipeline("outputs: {scores: scores}", "outputs: {probabilities: scores}"),
        21,
        ("has no output 'probabilities'", "it has scores"),
    ),
    "tf-not-a-savedmodel": Broken(
        "tensorflow", _remove("models/wine_savedmodel/saved_model.pb"), 18, ("not a SavedModel folder",)
    ),
    "tf-pb-damaged": Broken(
        "tensorflow",
        _write("models/wine_savedmodel/saved_model.pb", b"\x12\xff\xff\x7f"),
        18,
        ("saved_model.pb that is not a SavedModel",),
    ),
    "pt2-not-an-archive": Broken("torch", _write("models/wine.pt2", b"not a model\n"), 17, ("is not a .pt2 archive",)),
    "pt2-is-torchscript": Broken(
        "torch",
        lambda f: shutil.copyfile(EXAMPLES / "torchscript/models/digits.pt", f / "models/wine.pt2"),
        17,
        ("TorchScript", "type: torchscript"),
    ),
    "pt2-unknown-input": Broken(
        "torch",
        _pipeline("    input: measurements\n", "    inputs: {features: measurements}\n"),
        18,
        ("the program has no input 'features'", "it has measurements"),
    ),
    "hf-image-wrong-architecture": Broken(
        "huggingface-image",
        _json(
            "models/colours-vit/config.json", {"architectures": ["SwinForImageClassification"], "model_type": "swin"}
        ),
        18,
        ("SwinForImageClassification", "model_type swin", "task image-classification", "vit", "convnext"),
    ),
    "hf-image-unknown-processor": Broken(
        "huggingface-image",
        _json("models/colours-vit/preprocessor_config.json", {"image_processor_type": "CLIPImageProcessor"}),
        18,
        ("CLIPImageProcessor", "kbuild reproduces ViTImageProcessor, ConvNextImageProcessor"),
    ),
    "hf-image-no-processor": Broken(
        "huggingface-image",
        _remove("models/colours-vit/preprocessor_config.json"),
        18,
        ("has no preprocessor_config.json",),
    ),
    "hf-image-takes-no-max-length": Broken(
        "huggingface-image",
        _pipeline("    task: image-classification\n", "    task: image-classification\n    max_length: 16\n"),
        20,
        ("max_length counts tokens",),
    ),
    "hf-image-folder-as-text": Broken(
        "huggingface-image",
        _pipeline("task: image-classification", "task: text-classification"),
        18,
        ("ViTForImageClassification", "does not fit task text-classification"),
    ),
    "hf-wrong-architecture": Broken(
        "huggingface",
        _config({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}),
        21,
        ("GPT2LMHeadModel", "model_type gpt2", "task text-classification", "bert"),
    ),
    "hf-no-weights": Broken(
        "huggingface", _remove("hf/model.safetensors"), 21, ("has no weights", "model.safetensors")
    ),
    "hf-no-tokenizer": Broken("huggingface", _remove("hf/tokenizer.json"), 21, ("has no tokenizer.json",)),
    "hf-config-not-json": Broken("huggingface", _write("hf/config.json", b"{architectures"), 21, ("not JSON",)),
    "hf-no-labels": Broken("huggingface", _config({"id2label": {}}), 21, ("without id2label",)),
    "hf-too-long": Broken(
        "huggingface",
        _pipeline("    task: text-classification\n", "    task: text-classification\n    max_length: 1000\n"),
        23,
        ("max_length 1000 is more than", "64 tokens"),
    ),
}


def _copy(example: str, tmp: Path) -> Path:
    if example == "huggingface-image":
        folder = tmp / "huggingface"
        shutil.copytree(EXAMPLES / "huggingface", folder)
        shutil.copyfile(folder / "image.yaml", folder / "pipeline.yaml")
        return folder
    if example != "huggingface":
        folder = tmp / example
        shutil.copytree(EXAMPLES / example, folder)
        return folder
    folder = tmp / "huggingface"
    shutil.copytree(EXAMPLES / "huggingface", folder)
    shutil.copytree(HF, folder / "hf")
    path = folder / "pipeline.yaml"
    path.write_text(replace_once(path.read_text(), "model: ../text/models/hf", "model: hf"))
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_broken_checkpoint_exits_3_at_its_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = CASES[case]
    folder = _copy(broken.example, tmp_path)
    assert main(["validate", str(folder / "pipeline.yaml")]) == 0  # the copy itself is sound
    capsys.readouterr()
    broken.damage(folder)
    code = main(["validate", str(folder / "pipeline.yaml")])
    _, err = capsys.readouterr()
    assert code == 3, err
    located = [line for line in err.splitlines() if f"pipeline.yaml:{broken.line}:" in line]
    assert any(all(p in line for p in broken.phrases) for line in located), err
    assert "Traceback" not in err


def test_the_program_is_read_from_its_archive_without_torch() -> None:
    program = read_program(TORCH / "models/wine.pt2")
    assert program.inputs == ("measurements",) and program.outputs == 1
    with pytest.raises(CheckpointProblem, match="TorchScript"):
        read_program(EXAMPLES / "torchscript/models/digits.pt")


def test_a_transformers_folder_gives_its_labels_lengths_and_inputs() -> None:
    folder = read_text_folder(HF, "text-classification")
    assert folder.architecture == "BertForSequenceClassification"
    assert folder.labels == ("sport", "weather", "cooking")
    assert folder.max_length == 64  # tokenizer_config's model_max_length, within the 64 positions
    assert folder.token_inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert folder.tokenizer == HF / "tokenizer.json"
