"""load/validate: a pipeline file (format 1, DESIGN.md section 3) -> Pipeline.

    pipeline = load_pipeline(Path("pipeline.yaml"))

Raises one SpecError whose `problems` are every problem of the file, in file
order: YAML problems (duplicate keys), schema problems, and semantic ones
(duplicate step names, unknown variables, outputs never produced, missing or
mismatching model files, missing python code, samples that do not fit the
inputs/outputs, serve settings that contradict each other).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbuild.documents import (
    Document,
    Parts,
    dedupe_sorted,
    did_you_mean,
    load_document,
    load_schema,
    schema_problems,
)
from kbuild.errors import Problem, SpecError
from kbuild.runtime.catalogue import MODEL_STEP_TYPES, STEP_TYPES
from kbuild.runtime.settings import TRANSPORTS, ServeSettings, SettingsError, parse_serve
from kbuild.runtime.settings.kafka import RESERVED as KAFKA_RESERVED

__all__ = [
    "MODEL_STEP_TYPES",
    "STEP_TYPES",
    "Pipeline",
    "Step",
    "TensorSpec",
    "load_pipeline",
]

@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # OIP datatype
    shape: tuple[int, ...]  # -1 = variable dimension


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


def load_pipeline(path: Path) -> Pipeline:
    """Load and validate a pipeline file; SpecError (exit code 3) lists every problem."""
    path = Path(path)
    doc = load_document(path, strict=False)
    problems = schema_problems(doc, load_schema("pipeline"))
    checker = _Checker(doc, Path(os.path.abspath(path)))
    problems.extend(checker.run())
    problems = dedupe_sorted(problems)
    if problems:
        count = len(problems)
        raise SpecError(
            f"{doc.file}: invalid pipeline, {count} problem{'s' if count != 1 else ''}",
            problems,
        )
    return checker.pipeline()


# ----------------------------------------------------------------------------- checks


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


@dataclass
class _StepIO:
    """What a step reads and writes, with where each name is written."""

    reads: list[tuple[str, Parts]]
    writes: list[str] | None  # None: may set anything (or could not be understood)


def step_io(step: Mapping[str, Any], parts: Parts) -> _StepIO:
    """Reads/writes of a step, as far as its (possibly invalid) mapping tells."""
    kind = step.get("type")
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

    if kind not in STEP_TYPES:
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class _Checker:
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

    def _resolve(self, relative: str) -> Path:
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
        self.check_serve()
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
        for position, (i, step, io) in enumerate(ios):
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
            kind = step.get("type")
            model = step.get("model")
            if kind in MODEL_STEP_TYPES and isinstance(model, str) and model:
                self.models[i] = self.check_model(i, model, step.get("sha256"))
            code = step.get("code")
            if kind == "python" and isinstance(code, str) and code:
                resolved = self._resolve(code)
                self.codes[i] = resolved
                if not resolved.exists():
                    self.add(("steps", i, "code"), f"code not found: {code!r} (looked for {resolved})")

    def check_model(self, i: int, model: str, given: Any) -> tuple[Path | None, str | None]:
        parts: Parts = ("steps", i, "model")
        if _URL.match(model):
            self.add(parts, f"model URLs are not supported: give a path relative to the pipeline file, got {model!r}")
            return None, None
        resolved = self._resolve(model)
        expected = given.lower() if isinstance(given, str) and re.fullmatch(r"[0-9a-fA-F]{64}", given) else None
        if not resolved.exists():
            self.add(parts, f"model file not found: {model!r} (looked for {resolved})")
            return resolved, expected
        if resolved.is_dir():
            if expected is not None:
                self.add(
                    ("steps", i, "sha256"),
                    f"sha256 can only be checked for a file, but {model!r} is a folder; remove sha256",
                )
            return resolved, expected
        try:
            actual = _sha256(resolved)
        except OSError as exc:
            self.add(parts, f"cannot read the model file {resolved}: {exc.strerror or exc}")
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
                        self.add(("samples", i, "inputs", name), _unknown("input", name, inputs), at_key=True)
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
                        self.add(("samples", i, "expect", name), _unknown("output", name, outputs), at_key=True)

    def check_serve(self) -> None:
        serve = self.data.get("serve")
        if not isinstance(serve, Mapping):
            return
        ports: dict[int, str] = {}
        for endpoint in ("http", "grpc"):
            config = serve.get(endpoint)
            port = config.get("port") if isinstance(config, Mapping) else None
            if isinstance(port, int) and not isinstance(port, bool):
                if port in ports:
                    self.add(
                        ("serve", endpoint, "port"),
                        f"port {port} is used by {ports[port]} already; give {endpoint} another port",
                    )
                ports.setdefault(port, endpoint)
        kafka = serve.get("kafka")
        if isinstance(kafka, Mapping):
            self.check_kafka(kafka)

    def check_kafka(self, kafka: Mapping[str, Any]) -> None:
        models = kafka.get("models")
        target = models.get("step") if isinstance(models, Mapping) else None
        steps = {s["name"]: s for _, s in self.steps() if isinstance(s.get("name"), str)}
        with_model = [n for n, s in steps.items() if s.get("type") in MODEL_STEP_TYPES]
        if isinstance(models, Mapping) and "step" not in models and len(with_model) != 1:
            self.add(
                ("serve", "kafka", "models"),
                f"name the step to update (step: …): the pipeline has {len(with_model)} model steps"
                + (f" ({', '.join(with_model)})" if with_model else ""),
            )
        if isinstance(target, str):
            parts: Parts = ("serve", "kafka", "models", "step")
            if target not in steps:
                self.add(parts, _unknown("step", target, with_model or list(steps)))
            elif target not in with_model:
                self.add(parts, f"step {target!r} has no model to update (it is a {steps[target].get('type')} step)")
        for section in ("client", "consumer", "producer"):
            settings = kafka.get(section)
            for name in settings if isinstance(settings, Mapping) else ():
                if name in KAFKA_RESERVED:
                    self.add(("serve", "kafka", section, name), KAFKA_RESERVED[name], at_key=True)
        transforms = kafka.get("transforms")
        if isinstance(transforms, Mapping):
            code = transforms.get("code")
            if isinstance(code, str) and code and not self._resolve(code).exists():
                self.add(
                    ("serve", "kafka", "transforms", "code"),
                    f"code not found: {code!r} (looked for {self._resolve(code)})",
                )
            return  # the transforms decide what a record holds
        for key, what, names in (("source", "input", "inputs"), ("sink", "output", "outputs")):
            topic = kafka.get(key)
            if not isinstance(topic, Mapping) or topic.get("encoding") != "raw":
                continue
            tensors = self.data.get(names)
            if not isinstance(tensors, Mapping) or len(tensors) != 1:
                count = len(tensors) if isinstance(tensors, Mapping) else 0
                self.add(
                    ("serve", "kafka", key, "encoding"),
                    f"the raw encoding carries one {what}'s bytes; the pipeline has {count} {names}",
                )
                continue
            [(name, tensor)] = tensors.items()
            shape = tensor.get("shape") if isinstance(tensor, Mapping) else None
            if key == "source" and isinstance(tensor, Mapping) and (
                tensor.get("datatype") != "BYTES" or (isinstance(shape, list) and len(shape) > 1)
            ):
                self.add(
                    ("serve", "kafka", key, "encoding"),
                    f"the raw encoding feeds the record's bytes to input {name!r}, "
                    "which must be {datatype: BYTES, shape: [-1]} (or shape [])",
                )

    # -- result

    def pipeline(self) -> Pipeline:
        data = self.data
        built: list[Step] = []
        for i, step in self.steps():
            io = step_io(step, ("steps", i))
            model, sha = self.models.get(i, (None, None))
            built.append(
                Step(
                    name=step["name"],
                    type=step["type"],
                    config=step,
                    model=model,
                    sha256=sha,
                    code=self.codes.get(i),
                    requirements=tuple(step.get("requirements", ())) if step["type"] == "python" else (),
                    reads=tuple(v for v, _ in io.reads),
                    writes=None if io.writes is None else tuple(io.writes),
                )
            )
        try:
            settings = parse_serve(
                data.get("serve"), name=data["name"], step_types=[s.type for s in built], env={}
            )
        except SettingsError as error:  # the schema should have refused it first
            raise SpecError(f"{self.doc.file}: invalid serve section: {error}") from None
        serve = dict(data.get("serve") or {})
        if not any(transport in serve for transport in TRANSPORTS):
            # what the artifact serves when nothing is said
            assert settings.http is not None
            serve["http"] = {"port": settings.http.port}
        return Pipeline(
            path=self.path,
            name=data["name"],
            version=data.get("version"),
            inputs=_tensors(data["inputs"]),
            outputs=_tensors(data["outputs"]),
            steps=tuple(built),
            serve=serve,
            samples=tuple(data.get("samples") or ()),
            document=data,
            settings=settings,
        )


def _tensors(mapping: Mapping[str, Any]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(name, spec["datatype"], tuple(spec["shape"])) for name, spec in mapping.items()
    )


def _unknown(what: str, name: str, known: list[str]) -> str:
    message = f"unknown {what} {name!r}"
    guess = did_you_mean(name, known)
    if guess:
        message += f"; did you mean {guess!r}?"
    if known:
        message += f" (the pipeline's {what}s: {', '.join(known)})" if what != "step" else f" (steps: {', '.join(known)})"
    return message

