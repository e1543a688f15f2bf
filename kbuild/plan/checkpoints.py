"""Checkpoint steps become ordinary steps, before the backends are chosen.

    keras, tensorflow, torch (runtime onnx)
                                -> onnx, its model converted at build time
    huggingface text-classification, image-classification
                                -> tokenize (the folder's tokenizer.json), or
                                   image (its preprocessor_config.json)
                                   onnx (the converted model), or huggingface (runtime native)
                                   classify (the folder's id2label, softmax)
    huggingface sentence-embedding, feature-extraction
                                -> tokenize, the encoder (onnx or huggingface, giving
                                   its last hidden state), pool (the folder's pooling
                                   and Normalize, or the step's), and where the
                                   folder has Dense modules dense (onnx: them and
                                   Normalize, converted with the encoder)

The expanded pipeline is what `validate` shows, the report lists and the
artifact carries; each conversion the build owes is listed beside it, for
the convert stage to carry out (its model file is the checkpoint until then).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kbuild.errors import SpecError
from kbuild.load.checkpoints import read_image_folder, read_text_folder
from kbuild.load.embedding_folders import read_embedding_folder
from kbuild.load.pipeline import Pipeline, Step, walk_steps
from kbuild.runtime.contract.step_types import CATALOGUE, CHECKPOINT_STEP_TYPES

DEFAULT_TOLERANCE = 1e-4  # the schema documents it as the default of `tolerance`
DEFAULT_MIN_SIMILARITY = 0.98  # and this, of `min_similarity`
EMBEDDING_TASKS = ("sentence-embedding", "feature-extraction")
DENSE_INPUT = "sentence_embedding"  # the Dense modules' ONNX input, as sentence-transformers names it
DENSE_FILE = "dense.onnx"  # beside the encoder's model.onnx in the conversion's folder


@dataclass(frozen=True)
class Conversion:
    """A checkpoint the convert stage turns into the ONNX model of step `step`."""

    step: str  # the onnx step that runs the converted model
    origin: str  # the checkpoint step as the user wrote it
    kind: str  # the checkpoint step type: keras | tensorflow | torch | huggingface
    framework: str  # the build-side environment that reads it (step_types.StepKind.framework)
    checkpoint: Path
    tolerance: float
    # what the converter needs beyond the checkpoint: the ONNX input and output
    # names, and for text the tokenizer and the lengths
    settings: Mapping[str, Any]
    pipeline_file: Path  # for problems found while converting: the file and
    position: tuple[int | None, int | None, str]  # the step's model field (line, column, JSON path)
    # further onnx steps whose models the same conversion writes: step -> its file there
    also: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Expanded:
    pipeline: Pipeline
    conversions: tuple[Conversion, ...]
    # user's step name -> the steps it became, for validate and the report
    expansions: Mapping[str, tuple[str, ...]]


def expand_checkpoints(pipeline: Pipeline) -> Expanded:
    conversions: list[Conversion] = []
    expansions: dict[str, tuple[str, ...]] = {}
    steps, documents = _expand(pipeline.steps, list(pipeline.document["steps"]), conversions, expansions)
    conversions = [replace(c, pipeline_file=pipeline.path) for c in conversions]
    if not expansions:
        return Expanded(pipeline, (), {})
    names = [s.name for s in walk_steps(steps)]
    taken = sorted({n for n in names if names.count(n) > 1})
    if taken:
        raise SpecError(
            f"{pipeline.path}: the steps a checkpoint expands into take names the pipeline already uses "
            f"({', '.join(taken)}); rename the pipeline's own steps"
        )
    document = {**pipeline.document, "steps": documents}
    return Expanded(replace(pipeline, steps=steps, document=document), tuple(conversions), expansions)


def _expand(
    steps: tuple[Step, ...], documents: list[Any], conversions: list[Conversion], expansions: dict[str, tuple[str, ...]]
) -> tuple[tuple[Step, ...], list[Any]]:
    out_steps: list[Step] = []
    out_docs: list[Any] = []
    for step, document in zip(steps, documents, strict=True):
        if step.branches:
            branches = []
            document = dict(document)
            for where, branch in step.branches:
                field, _, key = where.partition(".")
                docs = document[field][key] if key else document[field]
                new_branch, new_docs = _expand(branch, list(docs), conversions, expansions)
                branches.append((where, new_branch))
                if key:
                    document[field] = {**document[field], key: new_docs}
                else:
                    document[field] = new_docs
            out_steps.append(replace(step, branches=tuple(branches)))
            out_docs.append(document)
            continue
        if step.type not in CHECKPOINT_STEP_TYPES:
            out_steps.append(step)
            out_docs.append(document)
            continue
        made = _huggingface(step, conversions) if step.type == "huggingface" else _converted(step, conversions)
        if [s for s, _ in made] != [step]:  # a native keras, tensorflow or torch step stays itself
            expansions[step.name] = tuple(s.name for s, _ in made)
        out_steps += [s for s, _ in made]
        out_docs += [d for _, d in made]
    return tuple(out_steps), out_docs


def _runtime(step: Step) -> str:
    return str(step.config.get("runtime", "onnx"))


def _tolerance(step: Step) -> float:
    return float(step.config.get("tolerance", DEFAULT_TOLERANCE))


# what only the converter reads: the onnx step it becomes does not take them
_CONVERTER_FIELDS = ("runtime", "tolerance", "sha256", "signature", "tags", "quantize", "min_similarity")


def _conversion(step: Step, onnx_step: str, settings: Mapping[str, Any]) -> Conversion:
    """The conversion the checkpoint step `step` owes, run by the onnx step `onnx_step`
    (the pipeline's file is set once the whole pipeline is expanded)."""
    assert step.model is not None
    return Conversion(
        onnx_step,
        step.name,
        step.type,
        CATALOGUE[step.type].framework,
        step.model,
        _tolerance(step),
        settings,
        Path(),
        step.position,
    )


def _converted(step: Step, conversions: list[Conversion]) -> list[tuple[Step, dict[str, Any]]]:
    """A one-model checkpoint step as the onnx step that runs its conversion;
    the converter names the ONNX inputs and outputs as the step maps them."""
    if _runtime(step) == "native":
        return [(step, dict(step.config))]
    assert step.model is not None
    document = {k: v for k, v in step.config.items() if k not in _CONVERTER_FIELDS}
    document["type"] = "onnx"
    settings: dict[str, Any] = {}
    if step.type == "tensorflow":
        settings = {
            "signature": step.config.get("signature", "serving_default"),
            "tags": list(step.config.get("tags", ["serve"])),
        }
    conversions.append(_conversion(step, step.name, settings))
    return [(replace(step, type="onnx", config=document), document)]


def _variable(step: str, what: str) -> str:
    return re.sub(r"\W", "_", f"{step}_{what}")


def _huggingface(step: Step, conversions: list[Conversion]) -> list[tuple[Step, dict[str, Any]]]:
    assert step.model is not None
    task = str(step.config["task"])
    given = str(step.config["model"]).rstrip("/")
    source = str(step.config["input"])
    if task in EMBEDDING_TASKS:
        return _embedding(step, conversions, task, given, source)
    first, first_doc, feeds, labels_of, settings = (
        _image_stage(step, task, source) if task == "image-classification" else _text_stage(step, task, given, source)
    )
    logits = _variable(step.name, "logits")
    native = _runtime(step) == "native"
    model_doc: dict[str, Any] = {
        "name": f"{step.name}-model",
        "type": "huggingface" if native else "onnx",
        "model": given,
        "inputs": dict(feeds),
        "output": logits,
    }
    if native:
        model_doc["task"] = task
    model = replace(
        step,
        name=model_doc["name"],
        type=model_doc["type"],
        config=model_doc,
        reads=tuple(feeds.values()),
        writes=(logits,),
    )
    outputs = dict(step.config["outputs"])
    labels_doc: dict[str, Any] = {
        "name": f"{step.name}-labels",
        "type": "classify",
        "input": logits,
        "labels": list(labels_of),
        "softmax": True,
        "outputs": outputs,
    }
    labels = _plain_step(labels_doc, reads=(logits,), writes=tuple(outputs.values()))
    if not native:
        conversions.append(_conversion(step, model.name, settings))
    return [(first, first_doc), (model, model_doc), (labels, labels_doc)]


_Stage = tuple[Step, dict[str, Any], dict[str, str], tuple[str, ...], dict[str, Any]]


def _plain_step(document: dict[str, Any], *, reads: tuple[str, ...], writes: tuple[str, ...]) -> Step:
    return Step(
        name=document["name"],
        type=document["type"],
        config=document,
        model=None,
        sha256=None,
        code=None,
        requirements=(),
        reads=reads,
        writes=writes,
    )


def _text_stage(step: Step, task: str, given: str, text: str) -> _Stage:
    """tokenize, with the folder's tokenizer.json."""
    assert step.model is not None
    folder = read_text_folder(step.model, task)  # validate has read it once already
    max_length = int(step.config.get("max_length", folder.max_length))
    ids = {name: _variable(step.name, name) for name in folder.token_inputs}
    document: dict[str, Any] = {
        "name": f"{step.name}-tokenize",
        "type": "tokenize",
        "tokenizer": f"{given}/tokenizer.json",
        "input": text,
        "outputs": dict(ids),
        "max_length": max_length,
        "truncation": True,
    }
    tokenize = replace(
        _plain_step(document, reads=(text,), writes=tuple(ids.values())),
        model=folder.tokenizer,
        sha256=hashlib.sha256(folder.tokenizer.read_bytes()).hexdigest(),
    )
    settings = {
        "task": task,
        "token_inputs": list(folder.token_inputs),
        "max_length": max_length,
        "tokenizer": str(folder.tokenizer),
    }
    return tokenize, document, ids, folder.labels, settings


def _image_stage(step: Step, task: str, images: str) -> _Stage:
    """image, doing what the folder's preprocessor_config.json says."""
    assert step.model is not None
    folder = read_image_folder(step.model, task)
    pixels = _variable(step.name, "pixel_values")
    document: dict[str, Any] = {
        "name": f"{step.name}-image",
        "type": "image",
        "input": images,
        "output": pixels,
        **folder.image,
    }
    image = _plain_step(document, reads=(images,), writes=(pixels,))
    return image, document, {"pixel_values": pixels}, folder.labels, {"task": task, "image": dict(folder.image)}


def _embedding(
    step: Step, conversions: list[Conversion], task: str, given: str, text: str
) -> list[tuple[Step, dict[str, Any]]]:
    """tokenize -> the encoder (its last hidden state) -> pool."""
    assert step.model is not None
    folder = read_embedding_folder(step.model, task, step.config)
    max_length = int(step.config.get("max_length", folder.max_length))
    relative = folder.encoder.relative_to(folder.path).as_posix()
    encoder = f"{given}/{relative}" if relative != "." else given
    ids = {name: _variable(step.name, name) for name in dict.fromkeys([*folder.token_inputs, "attention_mask"])}
    tokenize_doc: dict[str, Any] = {
        "name": f"{step.name}-tokenize",
        "type": "tokenize",
        "tokenizer": f"{encoder}/tokenizer.json",
        "input": text,
        "outputs": dict(ids),
        "max_length": max_length,
        "truncation": True,
    }
    tokenize = replace(
        _plain_step(tokenize_doc, reads=(text,), writes=tuple(ids.values())),
        model=folder.tokenizer,
        sha256=hashlib.sha256(folder.tokenizer.read_bytes()).hexdigest(),
    )
    hidden = _variable(step.name, "last_hidden_state")
    feeds = {name: ids[name] for name in folder.token_inputs}
    native = _runtime(step) == "native"
    model_doc: dict[str, Any] = {
        "name": f"{step.name}-model",
        "type": "huggingface" if native else "onnx",
        "model": encoder if native else given,
        "inputs": dict(feeds),
        "output": hidden,
    }
    if native:
        model_doc["task"] = "feature-extraction"
    model = replace(
        step,
        name=model_doc["name"],
        type=model_doc["type"],
        config=model_doc,
        model=folder.encoder if native else step.model,
        reads=tuple(feeds.values()),
        writes=(hidden,),
    )
    embedding = str(dict(step.config["outputs"])["embedding"])
    # Dense modules come after pooling, and Normalize after them: the pool step then leaves it to dense
    pooled = _variable(step.name, "pooled") if folder.dense else embedding
    pool_doc: dict[str, Any] = {
        "name": f"{step.name}-pool",
        "type": "pool",
        "input": hidden,
        "mask": ids["attention_mask"],
        "method": folder.pooling,
        "normalize": folder.normalize and not folder.dense,
        "output": pooled,
    }
    pool = _plain_step(pool_doc, reads=(hidden, ids["attention_mask"]), writes=(pooled,))
    made = [(tokenize, tokenize_doc), (model, model_doc), (pool, pool_doc)]
    also: dict[str, str] = {}
    if folder.dense:
        dense_doc: dict[str, Any] = {
            "name": f"{step.name}-dense",
            "type": "onnx",
            "model": given,
            "inputs": {DENSE_INPUT: pooled},
            "output": embedding,
        }
        dense = replace(
            step, name=dense_doc["name"], type="onnx", config=dense_doc, reads=(pooled,), writes=(embedding,)
        )
        made.append((dense, dense_doc))
        also[dense.name] = DENSE_FILE
    if not native:
        settings = {
            "task": task,
            "encoder": str(folder.encoder),
            "token_inputs": list(folder.token_inputs),
            "max_length": max_length,
            "tokenizer": str(folder.tokenizer),
            "pooling": folder.pooling,
            "normalize": folder.normalize,
            "quantize": step.config.get("quantize"),
            "min_similarity": float(step.config.get("min_similarity", DEFAULT_MIN_SIMILARITY)),
            "dense": [{**asdict(d), "folder": str(d.folder), "weights": str(d.weights)} for d in folder.dense],
            "dense_file": DENSE_FILE,
            "dense_input": DENSE_INPUT,
        }
        conversions.append(replace(_conversion(step, model.name, settings), also=also))
    return made
