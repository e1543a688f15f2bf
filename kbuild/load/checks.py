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

from kbuild.errors import Problem
from kbuild.load.checkpoint_checks import check_checkpoints
from kbuild.load.deploy_checks import check_deploy
from kbuild.load.documents import (
    Document,
    Parts,
    did_you_mean,
    json_path,
)
from kbuild.load.files import FileProblem, irregular_in, require_regular, sha256_regular
from kbuild.load.graph_checks import check_graphs
from kbuild.load.serve_checks import check_serve
from kbuild.load.step_fields import step_type
from kbuild.load.wording import unknown
from kbuild.runtime.contract.errors import short
from kbuild.runtime.contract.step_types import CARRIED_FIELDS, branches_of


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
    if kind == "ensemble":
        inputs = step.get("inputs")
        if isinstance(inputs, list):
            reads = [(v, parts + ("inputs", i)) for i, v in enumerate(inputs) if isinstance(v, str)]
        write_one("output")
        return _StepIO(reads, writes)
    if kind in ("switch", "split"):
        # what their branches set is added by Checker.flow
        read_one("input" if kind == "switch" else "key")
        write_one("branch_output")
        return _StepIO(reads, writes)
    # model steps and single-IO transforms
    read_one("input")
    if kind == "pool":
        read_one("mask")
    reads.extend(map_values("inputs"))
    write_one("output")
    writes.extend(v for v, _ in map_values("outputs"))
    return _StepIO(reads, writes)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class Checker:
    """Semantic checks; defensive, since they run even where the schema failed."""

    def __init__(self, doc: Document, path: Path) -> None:
        self.doc = doc
        self.data = doc.data
        self.path = path
        self.base = path.parent
        self.problems: list[Problem] = []
        self.models: dict[Parts, tuple[Path | None, str | None]] = {}
        self.codes: dict[Parts, Path | None] = {}
        # What each graph step's branches set (the variables all of them set).
        self.branch_writes: dict[Parts, tuple[str, ...]] = {}

    def add(self, parts: Parts, message: str, *, at_key: bool = False) -> None:
        self.problems.append(self.doc.problem(parts, message, at_key=at_key))

    def resolve(self, relative: str) -> Path:
        return Path(os.path.normpath(self.base / relative))

    def all_steps(self, parts: Parts = ("steps",)) -> list[tuple[Parts, Mapping[str, Any]]]:
        """Every step under `parts` with its path, the steps of branches included, in order."""
        found: list[tuple[Parts, Mapping[str, Any]]] = []
        for step_parts, step in self.steps_at(parts):
            found.append((step_parts, step))
            for sub, _ in branches_of(dict(step)):
                found += self.all_steps(step_parts + sub)
        return found

    def tensor_names(self, key: str) -> list[str]:
        value = self.data.get(key)
        return list(value) if isinstance(value, Mapping) else []

    def run(self) -> list[Problem]:
        self.check_step_names()
        self.check_variables()
        self.check_files()
        check_checkpoints(self)
        self.check_samples()
        check_graphs(self)
        check_serve(self)
        check_deploy(self)
        return self.problems

    # -- steps

    def check_step_names(self) -> None:
        seen: dict[str, Parts] = {}
        for parts, step in self.all_steps():
            name = step.get("name")
            if not isinstance(name, str):
                continue
            if name in seen:
                first = seen[name]
                line = self.doc.position(first + ("name",))[0]
                where = json_path(first)[2:]
                self.add(
                    parts + ("name",),
                    f"duplicate step name {name!r}: {where} (line {line}) has it already; "
                    "step names must be unique, in branches too",
                )
            else:
                seen[name] = parts

    def check_variables(self) -> None:
        available: dict[str, str] = {v: "pipeline input" for v in self.tensor_names("inputs")}
        lenient = self.flow(self.steps_at(("steps",)), available)
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

    def steps_at(self, parts: Parts) -> list[tuple[Parts, Mapping[str, Any]]]:
        node: Any = self.data
        for part in parts:
            if isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            else:
                node = None
        return (
            [(parts + (i,), s) for i, s in enumerate(node) if isinstance(s, Mapping)] if isinstance(node, list) else []
        )

    def flow(self, steps: list[tuple[Parts, Mapping[str, Any]]], available: dict[str, str]) -> bool:
        """Check that each step reads only what exists before it, adding what
        it sets to `available`; a branch starts with what its graph step sees.
        True when a step may set anything (a python step without outputs):
        then nothing after it can be checked."""
        ios = [(parts, step, step_io(step, parts)) for parts, step in steps]
        for position, (parts, step, io) in enumerate(ios):
            for variable, where in io.reads:
                if variable not in available:
                    self.add(where, self.unknown_variable(variable, available, ios[position + 1 :]))
            writes = list(io.writes) if io.writes is not None else None
            branches = [(parts + sub, self.steps_at(parts + sub)) for sub, _ in branches_of(dict(step))]
            if branches and writes is not None:
                sets = []
                for branch_parts, branch in branches:
                    inside = dict(available)
                    if self.flow(branch, inside):
                        writes = None
                        break
                    sets.append((branch_parts, [v for v in inside if v not in available]))
                else:
                    common = self.same_writes(step, sets)
                    self.branch_writes[parts] = tuple(common)
                    writes = common + writes
            if writes is None:
                return True
            for variable in writes:
                available.setdefault(variable, f"step {step.get('name')!r}")
        return False

    def same_writes(self, step: Mapping[str, Any], sets: list[tuple[Parts, list[str]]]) -> list[str]:
        """The variables every branch sets; a branch that differs from the first is a problem at its line."""
        first_parts, first = sets[0]
        for parts, names in sets[1:]:
            missing = [v for v in first if v not in names]
            extra = [v for v in names if v not in first]
            if missing or extra:
                said = []
                if missing:
                    said.append(f"does not set {', '.join(map(repr, missing))}")
                if extra:
                    said.append(f"sets {', '.join(map(repr, extra))}")
                self.add(
                    parts,
                    f"branch {_branch_name(parts)!r} of step {step.get('name')!r} {' and '.join(said)}, "
                    f"unlike branch {_branch_name(first_parts)!r}; every branch must set the same variables",
                    at_key=True,
                )
        return [v for v in first if all(v in names for _, names in sets)]

    def unknown_variable(
        self, variable: str, available: Mapping[str, str], later: list[tuple[Parts, Mapping[str, Any], _StepIO]]
    ) -> str:
        message = f"unknown variable {variable!r}"
        for parts, step, io in later:
            if io.writes and variable in io.writes:
                return (
                    message + f": it is set only by a later step, {step.get('name')!r} ({json_path(parts)[2:]}); "
                    "steps run in order"
                )
        guess = did_you_mean(variable, available)
        if guess:
            return message + f"; did you mean {guess!r}?"
        if available:
            return message + f"; variables available here: {', '.join(sorted(available))}"
        return message + "; no variable is available here (declare the pipeline's inputs)"

    def check_files(self) -> None:
        for parts, step in self.all_steps():
            kind = step_type(step)
            field = CARRIED_FIELDS.get(kind or "")
            model = step.get(field) if field else None
            if field and isinstance(model, str) and model:
                self.models[parts] = self.check_model(parts, field, model, step.get("sha256"))
            code = step.get("code")
            if kind == "python" and isinstance(code, str) and code:
                resolved = self.resolve(code)
                self.codes[parts] = resolved
                self.check_tree(parts + ("code",), "code", code, resolved)

    def check_tree(self, parts: Parts, what: str, given: str, resolved: Path) -> bool:
        """Whether a file or folder the pipeline names can be read as one:
        a regular file, or a folder holding only files and folders."""
        if _CONTROL.search(given):  # refused by the schema's $defs/path, at its line; no file can be named so
            return False
        try:
            st = require_regular(resolved, folder_ok=True)
        except FileProblem as problem:
            missing = str(problem) == "no such file"
            self.add(
                parts,
                f"{what} not found: {short(given)!r} (looked for {short(str(resolved))})"
                if missing
                else f"{what} {short(given)!r} {problem}",
            )
            return False
        odd = irregular_in(resolved) if stat.S_ISDIR(st.st_mode) else None
        if odd is not None:
            self.add(parts, f"{what} folder {short(given)!r} holds {short(str(odd))}, which is not a regular file")
            return False
        return True

    def check_model(self, step: Parts, field: str, model: str, given: Any) -> tuple[Path | None, str | None]:
        """The file a step carries (a model step's `model`, a tokenize step's
        `tokenizer`): it exists, is regular, and matches sha256 if given."""
        parts: Parts = step + (field,)
        what = f"{field} file"
        if _URL.match(model):
            self.add(parts, f"{field} URLs are not supported: give a path relative to the pipeline file, got {model!r}")
            return None, None
        resolved = self.resolve(model)
        expected = given.lower() if isinstance(given, str) and re.fullmatch(r"[0-9a-fA-F]{64}", given) else None
        if not self.check_tree(parts, what, model, resolved):
            return resolved, expected
        if resolved.is_dir():
            if expected is not None:
                self.add(
                    step + ("sha256",),
                    f"sha256 can only be checked for a file, but {model!r} is a folder; remove sha256",
                )
            return resolved, expected
        try:
            actual = sha256_regular(resolved)
        except FileProblem as problem:
            self.add(parts, f"{what} {short(model)!r} {problem}")
            return resolved, expected
        if expected is not None and expected != actual:
            self.add(
                step + ("sha256",),
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
                        "missing input"
                        + ("s " if len(missing) > 1 else " ")
                        + ", ".join(repr(m) for m in missing)
                        + "; a sample gives a value for every pipeline input",
                        at_key=True,
                    )
            expect = sample.get("expect")
            if isinstance(expect, Mapping):
                for name in expect:
                    if name not in outputs:
                        self.add(("samples", i, "expect", name), unknown("output", name, outputs), at_key=True)


def _branch_name(parts: Parts) -> str:
    """'eu' for ...cases.eu, 'default' for ...default."""
    return str(parts[-1])
