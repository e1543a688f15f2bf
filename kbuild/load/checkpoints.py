"""What a checkpoint says about itself, read cheaply (no framework): the
program a .pt2 archive holds, a Keras model's inputs and outputs, a
SavedModel's signatures, and a transformers folder's architecture, labels,
tokenizer and lengths. validate checks a step against these, and the
plan expands a huggingface step from them.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbuild.load.image_processors import ProcessorProblem, image_fields
from kbuild.load.saved_model import Signature, WireError, read_signatures

# model_type -> the tensors its text encoders take, in order. The BERT family
# (MiniLM is a BERT), RoBERTa, XLM-RoBERTa and DistilBERT.
TEXT_ENCODERS: dict[str, tuple[str, ...]] = {
    "bert": ("input_ids", "attention_mask", "token_type_ids"),
    "roberta": ("input_ids", "attention_mask"),
    "xlm-roberta": ("input_ids", "attention_mask"),
    "distilbert": ("input_ids", "attention_mask"),
}
# model_type of the image classifiers whose processors the image step reproduces
IMAGE_CLASSIFIERS = ("vit", "resnet", "convnext")
# task -> the architecture suffix a folder must have for it
TASK_HEADS = {"text-classification": "ForSequenceClassification", "image-classification": "ForImageClassification"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# RoBERTa counts positions from padding_idx + 1: two fewer usable than it has
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2}
_HDF5 = b"\x89HDF\r\n\x1a\n"


class CheckpointProblem(Exception):
    """What is wrong with a checkpoint, in words for the user."""


@dataclass(frozen=True)
class Program:
    """A torch.export archive: its inputs (the forward arguments) and how many outputs."""

    inputs: tuple[str, ...]
    outputs: int


@dataclass(frozen=True)
class TextFolder:
    """A transformers folder with a sequence-classification head."""

    path: Path
    architecture: str
    model_type: str
    labels: tuple[str, ...]  # id2label in id order
    token_inputs: tuple[str, ...]
    max_length: int  # tokens per text the model takes, special tokens included
    tokenizer: Path  # tokenizer.json


@dataclass(frozen=True)
class KerasModel:
    """A .keras file's model: its input and output layers' names (None for a
    legacy .h5, read at convert time)."""

    inputs: tuple[str, ...] | None
    outputs: tuple[str, ...] | None


def _layer_names(refs: Any) -> tuple[str, ...]:
    # one tensor is written [name, node, index]; several, as a list of those
    if isinstance(refs, list) and refs and isinstance(refs[0], str):
        refs = [refs]
    if isinstance(refs, dict):
        refs = list(refs.values())
    return tuple(str(r[0]) for r in refs if isinstance(r, list) and r and isinstance(r[0], str))


def read_keras(path: Path) -> KerasModel:
    """The model in a Keras 3 .keras archive (its config.json), or the check that an .h5 is HDF5."""
    if path.is_dir():
        raise CheckpointProblem(
            "is a folder: a keras step takes a .keras or .h5 file (a SavedModel is type: tensorflow)"
        )
    with path.open("rb") as handle:
        head = handle.read(8)
    if head == _HDF5:
        return KerasModel(None, None)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, OSError):
        raise CheckpointProblem("is neither a Keras 3 .keras archive (a zip) nor a legacy HDF5 .h5 file") from None
    except KeyError:
        raise CheckpointProblem("is a zip archive without config.json: not a model Keras saved") from None
    except ValueError:
        raise CheckpointProblem("has a config.json that is not JSON") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise CheckpointProblem("has a config.json that describes no Keras model")
    body: dict[str, Any] = config["config"] if isinstance(config.get("config"), dict) else {}
    if config["class_name"] == "Sequential":
        layers = body.get("layers")
        first = layers[0] if isinstance(layers, list) and layers and isinstance(layers[0], dict) else {}
        name = (first.get("config") or {}).get("name") if first.get("class_name") == "InputLayer" else None
        return KerasModel((str(name),) if name else None, None)
    if "input_layers" in body and "output_layers" in body:
        return KerasModel(_layer_names(body["input_layers"]), _layer_names(body["output_layers"]))
    return KerasModel(None, None)  # a subclassed model: what it takes shows when it is loaded


def read_saved_model(path: Path) -> list[Signature]:
    """The serving signatures of a SavedModel folder (saved_model.pb), without TensorFlow."""
    if not path.is_dir():
        raise CheckpointProblem("is a file; a tensorflow step takes a SavedModel folder (saved_model.pb, variables/)")
    pb = path / "saved_model.pb"
    if not pb.is_file():
        found = "a Keras model" if any(path.glob("*.keras")) else "no saved_model.pb"
        raise CheckpointProblem(f"is not a SavedModel folder: it holds {found}")
    try:
        signatures = read_signatures(pb.read_bytes())
    except (WireError, UnicodeDecodeError):
        raise CheckpointProblem("has a saved_model.pb that is not a SavedModel") from None
    signatures = [s for s in signatures if not s.name.startswith("__")]  # TensorFlow's own init op
    if not signatures:
        raise CheckpointProblem("declares no signatures (save it with tf.saved_model.save(..., signatures=...))")
    return signatures


def read_program(path: Path) -> Program:
    """The program in a torch.export.save archive, from its JSON (no torch)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            marker = next((n for n in names if n.endswith("/archive_format")), None)
            if marker is None:
                if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                    raise CheckpointProblem("is a TorchScript file (torch.jit.save): use type: torchscript")
                raise CheckpointProblem("is a zip archive but not one torch.export.save writes (no archive_format)")
            prefix = marker[: -len("archive_format")]
            if archive.read(marker).strip() != b"pt2":
                raise CheckpointProblem(f"is a {archive.read(marker)[:20]!r} archive, not pt2")
            model = archive.read(f"{prefix}models/model.json")
    except (zipfile.BadZipFile, OSError):
        raise CheckpointProblem("is not a .pt2 archive (torch.export.save writes a zip)") from None
    except KeyError:
        raise CheckpointProblem("holds no models/model.json: not a program torch.export.save wrote") from None
    try:
        signature = json.loads(model)["graph_module"]["signature"]
        inputs = tuple(
            spec["user_input"]["arg"]["as_tensor"]["name"]
            for spec in signature["input_specs"]
            if "user_input" in spec and "as_tensor" in spec["user_input"]["arg"]
        )
        outputs = sum(1 for spec in signature["output_specs"] if "user_output" in spec)
    except (ValueError, KeyError, TypeError):
        raise CheckpointProblem("has a models/model.json this kbuild cannot read") from None
    return Program(inputs, outputs)


def json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointProblem(f"has no {path.name}") from None
    except (OSError, ValueError) as e:
        raise CheckpointProblem(f"has a {path.name} that is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointProblem(f"has a {path.name} that is not a JSON object")
    return data


@dataclass(frozen=True)
class ImageFolder:
    """A transformers folder with an image-classification head."""

    path: Path
    architecture: str
    model_type: str
    labels: tuple[str, ...]  # id2label in id order
    image: dict[str, Any]  # the image step's fields that do what its processor does


def _model_config(path: Path, task: str, supported: tuple[str, ...]) -> tuple[dict[str, Any], str, str]:
    """config.json, its architecture and model_type, checked against the task; the weights are there."""
    if not path.is_dir():
        raise CheckpointProblem("is a file; a huggingface step takes the model's folder (config.json, weights, ...)")
    config = json_file(path / "config.json")
    architectures = config.get("architectures")
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    model_type = config.get("model_type")
    head = TASK_HEADS.get(task, "")  # an embedding task takes the encoder under any head
    if not isinstance(architecture, str) or not isinstance(model_type, str):
        raise CheckpointProblem("has a config.json without architectures and model_type")
    if model_type not in supported or not architecture.endswith(head):
        listed = ", ".join(f"{t} (…{head})" if head else t for t in supported)
        raise CheckpointProblem(
            f"holds a {architecture} (model_type {model_type}), which does not fit task {task}; "
            f"supported for it: {listed}"
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointProblem(f"has no weights ({' or '.join(WEIGHT_FILES)})")
    return config, architecture, model_type


def _labels(config: Mapping[str, Any]) -> tuple[str, ...]:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise CheckpointProblem("has a config.json without id2label")
    try:
        keys = sorted(id2label, key=int)
    except ValueError:
        raise CheckpointProblem("has id2label keys that are not numbers") from None
    if [int(k) for k in keys] != list(range(len(keys))):
        raise CheckpointProblem("has id2label ids that are not 0 .. n-1")
    return tuple(str(id2label[key]) for key in keys)


def read_image_folder(path: Path, task: str) -> ImageFolder:
    """A transformers folder for an image task, or CheckpointProblem saying why not."""
    config, architecture, model_type = _model_config(path, task, IMAGE_CLASSIFIERS)
    labels = _labels(config)
    processor = json_file(path / "preprocessor_config.json")
    try:
        image = image_fields(processor)
    except ProcessorProblem as problem:
        raise CheckpointProblem(f"{problem} (preprocessor_config.json)") from None
    return ImageFolder(path, architecture, model_type, labels, image)


def read_text_folder(path: Path, task: str) -> TextFolder:
    """A transformers folder for a text task, or CheckpointProblem saying why not."""
    config, architecture, model_type = _model_config(path, task, tuple(TEXT_ENCODERS))
    labels = _labels(config)
    token_inputs, max_length, tokenizer = text_encoder(path, config, model_type)
    return TextFolder(path, architecture, model_type, labels, token_inputs, max_length, tokenizer)


def text_encoder(path: Path, config: Mapping[str, Any], model_type: str) -> tuple[tuple[str, ...], int, Path]:
    """A text encoder's token inputs, its length limit and its tokenizer.json."""
    tokenizer = path / "tokenizer.json"
    if not tokenizer.is_file():
        raise CheckpointProblem("has no tokenizer.json (the fast tokenizer, which save_pretrained writes)")
    settings = json_file(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    positions = config.get("max_position_embeddings")
    limit = positions - _POSITION_OFFSET.get(model_type, 0) if isinstance(positions, int) else 512
    declared = settings.get("model_max_length")
    max_length = min(limit, int(declared)) if isinstance(declared, (int, float)) and declared < 1e6 else limit
    names = settings.get("model_input_names")
    token_inputs = TEXT_ENCODERS[model_type]
    if isinstance(names, list) and names and all(n in token_inputs for n in names):
        token_inputs = tuple(n for n in token_inputs if n in names)
    return token_inputs, max_length, tokenizer


def model_config(path: Path, task: str) -> tuple[dict[str, Any], str, str]:
    """config.json of a text encoder folder for `task`: itself, its architecture and model_type."""
    return _model_config(path, task, tuple(TEXT_ENCODERS))
