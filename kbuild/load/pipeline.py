"""load/validate: a pipeline file (format 1, DESIGN.md section 3) -> Pipeline.

    pipeline = load_pipeline(Path("pipeline.yaml"))

Raises one SpecError whose `problems` are every problem of the file, in file
order: YAML problems (duplicate keys), schema problems, and semantic ones
(duplicate step names, unknown variables, outputs never produced, missing or
mismatching model files, missing python code, samples that do not fit the
inputs/outputs, serve settings that contradict each other).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbuild.errors import Problem, SpecError
from kbuild.load.checks import Checker, step_io
from kbuild.load.deploy_checks import literal_secrets
from kbuild.load.documents import (
    Parts,
    dedupe_sorted,
    json_path,
    load_document,
    load_schema,
    schema_problems,
)
from kbuild.runtime.contract.pipeline import TensorSpec
from kbuild.runtime.contract.serve import (
    TRANSPORTS,
    ServeSettings,
    SettingsError,
    parse_serve,
)
from kbuild.runtime.contract.step_types import MODEL_STEP_TYPES, STEP_TYPES, branches_of

__all__ = [
    "MODEL_STEP_TYPES",
    "STEP_TYPES",
    "Pipeline",
    "Step",
    "TensorSpec",
    "load_pipeline",
    "walk_steps",
]


@dataclass(frozen=True)
class Step:
    name: str
    type: str
    config: Mapping[str, Any]  # the step's mapping as written (plain data)
    model: Path | None  # absolute path of the model file or folder, if any
    sha256: str | None  # sha256 of the model file (as given, or computed for files)
    code: Path | None  # absolute path of a python step's code file or folder
    requirements: tuple[str, ...]  # extra pip requirements (python steps)
    reads: tuple[str, ...]  # variables it reads
    writes: tuple[str, ...] | None  # variables it sets; None = a python step that did not declare outputs
    # A graph step's branches: (cases.VALUE | default | branches.NAME, its steps).
    branches: tuple[tuple[str, tuple[Step, ...]], ...] = ()
    # where its model field is written (line, column, JSON path), for problems found after validate
    # (not part of what the step is: a JSON and a YAML file of the same pipeline give equal steps)
    position: tuple[int | None, int | None, str] = field(default=(None, None, ""), compare=False)


@dataclass(frozen=True)
class Pipeline:
    path: Path  # absolute path of the pipeline file
    name: str
    version: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    steps: tuple[Step, ...]
    serve: Mapping[str, Any]  # as written; if no endpoint at all is given: {"http": {"port": 8080}}
    samples: tuple[Mapping[str, Any], ...]
    document: Mapping[str, Any]  # the whole validated document as plain data
    settings: ServeSettings  # the serve section as the artifact will read it
    # secrets written as literals: refused by the targets whose artifacts others receive
    literal_secrets: tuple[Problem, ...] = ()


def load_pipeline(path: Path) -> Pipeline:
    """Load and validate a pipeline file; SpecError (exit code 3) lists every problem."""
    path = Path(path)
    doc = load_document(path, strict=False)
    problems = schema_problems(doc, load_schema("pipeline"))
    checker = Checker(doc, Path(os.path.abspath(path)))
    problems.extend(checker.run())
    problems = dedupe_sorted(problems)
    if problems:
        count = len(problems)
        raise SpecError(
            f"{doc.file}: invalid pipeline, {count} problem{'s' if count != 1 else ''}",
            problems,
        )
    return _build(checker)


def _steps(checker: Checker, parts: Parts) -> tuple[Step, ...]:
    built: list[Step] = []
    for step_parts, step in checker.steps_at(parts):
        io = step_io(step, step_parts)
        model, sha = checker.models.get(step_parts, (None, None))
        writes = None if io.writes is None else checker.branch_writes.get(step_parts, ()) + tuple(io.writes)
        built.append(
            Step(
                name=step["name"],
                type=step["type"],
                config=step,
                model=model,
                sha256=sha,
                code=checker.codes.get(step_parts),
                requirements=tuple(step.get("requirements", ())) if step["type"] == "python" else (),
                reads=tuple(v for v, _ in io.reads),
                writes=writes,
                branches=tuple(
                    (".".join(sub), _steps(checker, step_parts + sub)) for sub, _ in branches_of(dict(step))
                ),
                position=(*checker.doc.position(step_parts + ("model",)), json_path(step_parts + ("model",)))
                if model is not None
                else (None, None, ""),
            )
        )
    return tuple(built)


def _build(checker: Checker) -> Pipeline:
    data = checker.data
    built = _steps(checker, ("steps",))
    try:
        settings = parse_serve(
            data.get("serve"), name=data["name"], step_types=[s.type for s in walk_steps(built)], env={}
        )
    except SettingsError as error:  # the schema should have refused it first
        raise SpecError(f"{checker.doc.file}: invalid serve section: {error}") from None
    serve = dict(data.get("serve") or {})
    if not any(transport in serve for transport in TRANSPORTS):
        # what the artifact serves when nothing is said
        assert settings.http is not None
        serve["http"] = {"port": settings.http.port}
    return Pipeline(
        path=checker.path,
        name=data["name"],
        version=data.get("version"),
        inputs=_tensors(data["inputs"]),
        outputs=_tensors(data["outputs"]),
        steps=tuple(built),
        serve=serve,
        samples=tuple(data.get("samples") or ()),
        document=data,
        settings=settings,
        literal_secrets=tuple(literal_secrets(checker)),
    )


def walk_steps(steps: tuple[Step, ...]) -> list[Step]:
    """Every step, the steps of branches included, in order."""
    found: list[Step] = []
    for step in steps:
        found.append(step)
        for _, branch in step.branches:
            found += walk_steps(branch)
    return found


def _tensors(mapping: Mapping[str, Any]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, spec["datatype"], tuple(spec["shape"])) for name, spec in mapping.items())
