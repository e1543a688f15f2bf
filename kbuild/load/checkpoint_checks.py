"""validate's checks of checkpoint steps (keras, tensorflow, torch, huggingface): the file is the
format the step declares, and the names the step maps are the model's own —
read from the checkpoint's own JSON, without loading a framework."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kbuild.load.checkpoints import (
    CheckpointProblem,
    read_image_folder,
    read_keras,
    read_program,
    read_saved_model,
    read_text_folder,
)
from kbuild.load.embedding_folders import read_embedding_folder
from kbuild.load.step_fields import step_type

if TYPE_CHECKING:
    from kbuild.load.checks import Checker


def check_checkpoints(checker: Checker) -> None:
    for parts, step in checker.all_steps():
        kind = step_type(step)
        path, _ = checker.models.get(parts, (None, None))
        if kind not in _CHECKS or path is None or not path.exists():
            continue
        given = step.get("model")
        try:
            _CHECKS[kind](checker, parts, step)
        except CheckpointProblem as problem:
            checker.add(parts + ("model",), f"{kind} model {given!r} {problem}")


def _check_names(
    checker: Checker, parts: tuple[Any, ...], step: Mapping[str, Any], field: str, names: tuple[str, ...], what: str
) -> None:
    """A step's `input`/`inputs` (or outputs) against the model's own names."""
    listed = ", ".join(names) or "none"
    single = field[:-1]
    if isinstance(step.get(single), str) and len(names) != 1:
        checker.add(
            parts + (single,),
            f"the {what} has {len(names)} {field} ({listed}); map them with {field}: {{name: variable}}",
        )
    mapping = step.get(field)
    if not isinstance(mapping, Mapping):
        return
    for name in mapping:
        if str(name) not in names:
            checker.add(parts + (field, name), f"the {what} has no {single} {name!r} (it has {listed})", at_key=True)
    if field == "inputs":
        missing = [n for n in names if n not in mapping]
        if missing:
            checker.add(parts + (field,), f"{what} input(s) {', '.join(missing)} not mapped", at_key=True)


def _check_keras(checker: Checker, parts: tuple[Any, ...], step: Mapping[str, Any]) -> None:
    path, _ = checker.models[parts]
    assert path is not None
    model = read_keras(path)
    for field, names in (("inputs", model.inputs), ("outputs", model.outputs)):
        if names is not None:
            _check_names(checker, parts, step, field, names, "model")


def _check_saved_model(checker: Checker, parts: tuple[Any, ...], step: Mapping[str, Any]) -> None:
    path, _ = checker.models[parts]
    assert path is not None
    signatures = read_saved_model(path)
    wanted = step.get("signature", "serving_default")
    tags = step.get("tags", ["serve"])
    found = [s for s in signatures if s.name == wanted and (not isinstance(tags, list) or set(tags) <= set(s.tags))]
    if not found:
        listed = ", ".join(f"{s.name} (tags {','.join(s.tags) or 'none'})" for s in signatures)
        field = "signature" if "signature" in step else "model"
        checker.add(parts + (field,), f"the SavedModel has no signature {wanted!r} with tags {tags}; it has {listed}")
        return
    signature = found[0]
    what = f"signature {wanted!r}"
    _check_names(checker, parts, step, "inputs", tuple(signature.inputs), what)
    _check_names(checker, parts, step, "outputs", tuple(signature.outputs), what)
    for name, spec in signature.inputs.items():
        if spec.datatype.startswith("DT_"):
            checker.add(
                parts + ("inputs",), f"{what} input {name!r} has a TensorFlow type kbuild cannot feed ({spec.datatype})"
            )


def _check_program(checker: Checker, parts: tuple[Any, ...], step: Mapping[str, Any]) -> None:
    path, _ = checker.models[parts]
    assert path is not None
    program = read_program(path)
    names = ", ".join(program.inputs) or "none"
    if isinstance(step.get("input"), str) and len(program.inputs) != 1:
        checker.add(
            parts + ("input",),
            f"the program has {len(program.inputs)} inputs ({names}); map them with inputs: {{name: variable}}",
        )
    inputs = step.get("inputs")
    if isinstance(inputs, Mapping):
        for name in inputs:
            if name not in program.inputs:
                checker.add(
                    parts + ("inputs", name), f"the program has no input {name!r} (it has {names})", at_key=True
                )
        missing = [n for n in program.inputs if n not in inputs]
        if missing:
            checker.add(parts + ("inputs",), f"program input(s) {', '.join(missing)} not mapped", at_key=True)
    if isinstance(step.get("output"), str) and program.outputs != 1:
        checker.add(
            parts + ("output",),
            f"the program returns {program.outputs} values; map them with outputs: {{0: variable, 1: variable, ...}}",
        )
    outputs = step.get("outputs")
    if isinstance(outputs, Mapping):
        for key in outputs:
            if str(key).isdigit() and int(key) >= program.outputs:
                checker.add(
                    parts + ("outputs", key),
                    f"the program returns {program.outputs} value{'s' if program.outputs != 1 else ''}; "
                    f"it has no output {key}",
                    at_key=True,
                )


def _check_folder(checker: Checker, parts: tuple[Any, ...], step: Mapping[str, Any]) -> None:
    path, _ = checker.models[parts]
    assert path is not None
    task = step.get("task")
    if task == "image-classification":
        read_image_folder(path, task)
        if "max_length" in step:
            checker.add(parts + ("max_length",), "max_length counts tokens: an image task takes none", at_key=True)
        return
    embedding = task in ("sentence-embedding", "feature-extraction")
    _task_fields(checker, parts, step, embedding)
    if task == "text-classification":
        text = read_text_folder(path, task)
        architecture, limit = text.architecture, text.max_length
    elif embedding:
        folder = read_embedding_folder(path, str(task), step)
        architecture, limit = folder.architecture, folder.model_limit
        _check_dimension(checker, step, folder.dimension)
        if folder.dense and step.get("runtime") == "native":
            checker.add(
                parts + ("runtime",),
                "the folder has Dense modules, which kbuild compiles to ONNX only: leave runtime: native out",
                at_key=True,
            )
    else:
        return  # the schema names the tasks
    wanted = step.get("max_length")
    if isinstance(wanted, int) and wanted > limit:
        checker.add(
            parts + ("max_length",),
            f"max_length {wanted} is more than the {architecture} takes ({limit} tokens)",
        )


def _check_dimension(checker: Checker, step: Mapping[str, Any], dimension: int) -> None:
    """The pipeline output the embedding goes to, where it is one, declared as wide as the folder's."""
    outputs = step.get("outputs")
    variable = outputs.get("embedding") if isinstance(outputs, Mapping) else None
    declared = checker.data.get("outputs")
    if not isinstance(variable, str) or not isinstance(declared, Mapping):
        return
    spec = declared.get(variable)
    shape = spec.get("shape") if isinstance(spec, Mapping) else None
    if isinstance(shape, list) and shape and isinstance(shape[-1], int) and shape[-1] > 0 and shape[-1] != dimension:
        checker.add(
            ("outputs", variable, "shape"),
            f"output {variable!r} is declared {shape[-1]} wide; the model's embeddings have {dimension} values "
            f"(shape [-1, {dimension}])",
        )


_CLASSIFY_OUTPUTS = ("label", "probability", "scores")


def _task_fields(checker: Checker, parts: tuple[Any, ...], step: Mapping[str, Any], embedding: bool) -> None:
    """The fields that belong to some tasks only."""
    task = step.get("task")
    outputs = step.get("outputs")
    for key in outputs if isinstance(outputs, Mapping) else ():
        if embedding != (key == "embedding"):
            fits = "embedding" if embedding else ", ".join(_CLASSIFY_OUTPUTS)
            checker.add(parts + ("outputs", key), f"task {task} gives no {key} (it gives {fits})", at_key=True)
    if embedding and isinstance(outputs, Mapping) and "embedding" not in outputs:
        checker.add(parts + ("outputs",), f"task {task} gives embedding: map it to a variable")
    if task == "sentence-embedding":
        for key in ("pooling", "normalize"):
            if key in step:
                checker.add(
                    parts + (key,),
                    f"a sentence-transformers folder says how it pools (1_Pooling/config.json, Normalize); "
                    f"{key} is for task: feature-extraction",
                    at_key=True,
                )
    elif task == "feature-extraction":
        if "pooling" not in step:
            checker.add(
                parts + ("task",), "task feature-extraction needs pooling: mean, cls, max, mean_sqrt_len or last"
            )
    elif "pooling" in step or "normalize" in step:
        key = "pooling" if "pooling" in step else "normalize"
        checker.add(parts + (key,), f"{key} is for the embedding tasks, not {task}", at_key=True)
    for key in ("quantize", "min_similarity"):
        if key in step and not embedding:
            checker.add(parts + (key,), f"{key} is for the embedding tasks, not {task}", at_key=True)
    if step.get("runtime") == "native" and "quantize" in step:
        checker.add(
            parts + ("quantize",), "quantize applies to the converted model: drop it, or runtime: native", at_key=True
        )
    if "min_similarity" in step and "quantize" not in step:
        checker.add(
            parts + ("min_similarity",), "min_similarity bounds a quantized model: set quantize: int8", at_key=True
        )


_CHECKS = {
    "keras": _check_keras,
    "tensorflow": _check_saved_model,
    "torch": _check_program,
    "huggingface": _check_folder,
}
