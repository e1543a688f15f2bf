"""validate's checks of checkpoint steps (torch, huggingface): the file is the
format the step declares, and the names the step maps are the model's own —
read from the checkpoint's own JSON, without loading a framework."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kbuild.load.checkpoints import CheckpointProblem, read_program, read_text_folder
from kbuild.load.step_fields import step_type

if TYPE_CHECKING:
    from kbuild.load.checks import Checker


def check_checkpoints(checker: Checker) -> None:
    for parts, step in checker.all_steps():
        kind = step_type(step)
        path, _ = checker.models.get(parts, (None, None))
        if kind not in ("torch", "huggingface") or path is None or not path.exists():
            continue
        given = step.get("model")
        try:
            if kind == "torch":
                _check_program(checker, parts, step)
            else:
                _check_folder(checker, parts, step)
        except CheckpointProblem as problem:
            checker.add(parts + ("model",), f"{kind} model {given!r} {problem}")


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
    if not isinstance(task, str) or task != "text-classification":
        return  # the schema names the tasks
    folder = read_text_folder(path, task)
    wanted = step.get("max_length")
    if isinstance(wanted, int) and wanted > folder.max_length:
        checker.add(
            parts + ("max_length",),
            f"max_length {wanted} is more than the {folder.architecture} takes ({folder.max_length} tokens)",
        )
