"""The semantic checks of a pipeline file: step names, variables, model and
code files, samples. Defensive: they run even where the schema failed."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbuild.documents import (
    Document,
    Parts,
    did_you_mean,
)
from kbuild.documents.files import FileProblem, irregular_in, require_regular, sha256_regular
from kbuild.errors import Problem
from kbuild.runtime.catalogue import MODEL_STEP_TYPES
from kbuild.runtime.errors import short
from kbuild.spec.fields import step_type
from kbuild.spec.serve_checks import check_serve
from kbuild.spec.wording import unknown


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


@dataclass
class _StepIO:
    """What a step reads and writes, with where each name is written."""

    reads: list[tuple[str, Parts]]
    writes: list[str] | None  # None: may set anything (or could not be understood)


def step_io(step: Mapping[str, Any], parts: Parts) -> _StepIO:
    """Reads/writes of a step, as far as its (possibly invalid) mapping tells."""
    kind = step_type(step)
    reads: list[tuple[str, Parts]] = []
    writes: list[str] = []

    def read_one(key: str) -> None:
        if isinstance(step.get(key), str):
            reads.append((step[key], parts + (key,)))

    def write_one(key: str) -> None:
        if isinstance(step.get(key), str):
            writes.append(step[key])

    def map_values(key: str) -> list[tuple[str, Parts]]:
        value = step.get(key)
        if not isinstance(value, Mapping):
            return []
        return [(v, parts + (key, k)) for k, v in value.items() if isinstance(v, str)]

    if kind is None:
        return _StepIO([], None)
    if kind == "python":
        inputs = step.get("inputs")
        if isinstance(inputs, list):
            reads = [(v, parts + ("inputs", i)) for i, v in enumerate(inputs) if isinstance(v, str)]
        outputs = step.get("outputs")
        return _StepIO(reads, _strings(outputs) if isinstance(outputs, list) else None)
    if kind == "fields":
        fields = step.get("fields")
        if isinstance(fields, list):
            reads = [(v, parts + ("fields", i)) for i, v in enumerate(fields) if isinstance(v, str)]
        write_one("output")
        return _StepIO(reads, writes)
    if kind == "classify":
        read_one("input")
        return _StepIO(reads, [v for v, _ in map_values("outputs")])
    # model steps and single-IO transforms
    read_one("input")
    reads.extend(map_values("inputs"))
    write_one("output")
    writes.extend(v for v, _ in map_values("outputs"))
    return _StepIO(reads, writes)


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class Checker:
    """Semantic checks; defensive, since they run even where the schema failed."""

    def __init__(self, doc: Document, path: Path) -> None:
        self.doc = doc
        self.data = doc.data
        self.path = path
        self.base = path.parent
        self.problems: list[Problem] = []
        self.models: dict[int, tuple[Path | None, str | None]] = {}
        self.codes: dict[int, Path | None] = {}

    def add(self, parts: Parts, message: str, *, at_key: bool = False) -> None:
        self.problems.append(self.doc.problem(parts, message, at_key=at_key))

    def resolve(self, relative: str) -> Path:
        return Path(os.path.normpath(self.base / relative))

    def steps(self) -> list[tuple[int, Mapping[str, Any]]]:
        steps = self.data.get("steps")
        if not isinstance(steps, list):
            return []
        return [(i, s) for i, s in enumerate(steps) if isinstance(s, Mapping)]

    def tensor_names(self, key: str) -> list[str]:
        value = self.data.get(key)
        return list(value) if isinstance(value, Mapping) else []

    def run(self) -> list[Problem]:
        self.check_step_names()
        self.check_variables()
        self.check_files()
        self.check_samples()
        check_serve(self)
        return self.problems

    # -- steps

    def check_step_names(self) -> None:
        seen: dict[str, int] = {}
        for i, step in self.steps():
            name = step.get("name")
            if not isinstance(name, str):
                continue
            if name in seen:
                first = seen[name]
                line = self.doc.position(("steps", first, "name"))[0]
                self.add(
                    ("steps", i, "name"),
                    f"duplicate step name {name!r}: steps[{first}] (line {line}) has it already; "
                    "step names must be unique",
                )
            else:
                seen[name] = i

    def check_variables(self) -> None:
        available: dict[str, str] = {v: "pipeline input" for v in self.tensor_names("inputs")}
        lenient = False  # an earlier step may set any variable
        ios = [(i, step, step_io(step, ("steps", i))) for i, step in self.steps()]
        for position, (_, step, io) in enumerate(ios):
            if not lenient:
                for variable, parts in io.reads:
                    if variable in available:
                        continue
                    self.add(parts, self.unknown_variable(variable, available, ios[position + 1 :]))
            if io.writes is None:
                lenient = True
            else:
                for variable in io.writes:
                    available.setdefault(variable, f"step {step.get('name')!r}")
        if lenient:
            return
        for name in self.tensor_names("outputs"):
            if name not in available:
                message = f"output {name!r} is never set: no step writes it and it is not an input"
                guess = did_you_mean(name, available)
                if guess:
                    message += f"; did you mean {guess!r}?"
                elif available:
                    message += f" (variables set: {', '.join(sorted(available))})"
                self.add(("outputs", name), message, at_key=True)

    def unknown_variable(
        self, variable: str, available: Mapping[str, str], later: list[tuple[int, Mapping[str, Any], _StepIO]]
    ) -> str:
        message = f"unknown variable {variable!r}"
        for i, step, io in later:
            if io.writes and variable in io.writes:
                return (
                    message + f": it is set only by a later step, {step.get('name')!r} (steps[{i}]); "
                    "steps run in order"
                )
        guess = did_you_mean(variable, available)
        if guess:
            return message + f"; did you mean {guess!r}?"
        if available:
            return message + f"; variables available here: {', '.join(sorted(available))}"
        return message + "; no variable is available here (declare the pipeline's inputs)"

    def check_files(self) -> None:
        for i, step in self.steps():
            kind = step_type(step)
            model = step.get("model")
            if kind in MODEL_STEP_TYPES and isinstance(model, str) and model:
                self.models[i] = self.check_model(i, model, step.get("sha256"))
            code = step.get("code")
            if kind == "python" and isinstance(code, str) and code:
                resolved = self.resolve(code)
                self.codes[i] = resolved
                self.check_tree(("steps", i, "code"), "code", code, resolved)

    def check_tree(self, parts: Parts, what: str, given: str, resolved: Path) -> bool:
        """Whether a file or folder the pipeline names can be read as one:
        a regular file, or a folder holding only files and folders."""
        try:
            st = require_regular(resolved, folder_ok=True)
        except FileProblem as problem:
            missing = str(problem) == "no such file"
            self.add(parts, f"{what} not found: {short(given)!r} (looked for {short(str(resolved))})" if missing
                     else f"{what} {short(given)!r} {problem}")
            return False
        odd = irregular_in(resolved) if stat.S_ISDIR(st.st_mode) else None
        if odd is not None:
            self.add(parts, f"{what} folder {short(given)!r} holds {short(str(odd))}, which is not a regular file")
            return False
        return True

    def check_model(self, i: int, model: str, given: Any) -> tuple[Path | None, str | None]:
        parts: Parts = ("steps", i, "model")
        if _URL.match(model):
            self.add(parts, f"model URLs are not supported: give a path relative to the pipeline file, got {model!r}")
            return None, None
        resolved = self.resolve(model)
        expected = given.lower() if isinstance(given, str) and re.fullmatch(r"[0-9a-fA-F]{64}", given) else None
        if not self.check_tree(parts, "model file", model, resolved):
            return resolved, expected
        if resolved.is_dir():
            if expected is not None:
                self.add(
                    ("steps", i, "sha256"),
                    f"sha256 can only be checked for a file, but {model!r} is a folder; remove sha256",
                )
            return resolved, expected
        try:
            actual = sha256_regular(resolved)
        except FileProblem as problem:
            self.add(parts, f"model file {short(model)!r} {problem}")
            return resolved, expected
        if expected is not None and expected != actual:
            self.add(
                ("steps", i, "sha256"),
                f"sha256 mismatch for {model!r}: the pipeline says {expected}, the file has {actual}",
            )
        return resolved, actual

    # -- samples and serve

    def check_samples(self) -> None:
        samples = self.data.get("samples")
        if not isinstance(samples, list):
            return
        inputs = self.tensor_names("inputs")
        outputs = self.tensor_names("outputs")
        for i, sample in enumerate(samples):
            if not isinstance(sample, Mapping):
                continue
            given = sample.get("inputs")
            if isinstance(given, Mapping):
                for name in given:
                    if name not in inputs:
                        self.add(("samples", i, "inputs", name), unknown("input", name, inputs), at_key=True)
                missing = [name for name in inputs if name not in given]
                if missing:
                    self.add(
                        ("samples", i, "inputs"),
                        "missing input" + ("s " if len(missing) > 1 else " ")
                        + ", ".join(repr(m) for m in missing)
                        + "; a sample gives a value for every pipeline input",
                        at_key=True,
                    )
            expect = sample.get("expect")
            if isinstance(expect, Mapping):
                for name in expect:
                    if name not in outputs:
                        self.add(("samples", i, "expect", name), unknown("output", name, outputs), at_key=True)
