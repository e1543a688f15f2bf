"""Plan: map each step to the spin's backend and collect what the artifact needs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kbuild.errors import SpinError
from kbuild.load.pipeline import Pipeline, Step, walk_steps
from kbuild.plan.checkpoints import Conversion, expand_checkpoints
from kbuild.plan.model_info import mlflow_requirements, sklearn_version
from kbuild.plan.spins import Backend, Spin
from kbuild.runtime.contract.step_types import CATALOGUE

# What each record encoding needs; orjson and msgpack have wheels for every spin's platform.
ENCODING_REQUIREMENTS = {"json": ("orjson>=3.10",), "msgpack": ("msgpack>=1.0",)}
# OpenAI's embeddings answer with hundreds of floats a text: orjson writes
# one 384-float answer in 11 µs from the float32 array where the standard
# library takes 288 µs from Python floats, and that is the serving loop's
# time (bench/embeddings.py). The same orjson as the json record encoding.
OPENAI_REQUIREMENTS = ENCODING_REQUIREMENTS["json"]


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    backend: Backend
    runtime_module: str  # e.g. kbuild.runtime.steps.onnx


@dataclass(frozen=True)
class Plan:
    pipeline: Pipeline
    spin: Spin
    steps: tuple[PlannedStep, ...]  # every step, the steps of branches too, in order
    endpoints: tuple[str, ...]
    requirements: tuple[str, ...]  # sorted, de-duplicated
    warnings: tuple[str, ...]
    index_urls: tuple[str, ...] = ()  # the spin's extra indexes, then those of the backends used
    unused: tuple[str, ...] = ()  # packages left out of the lock (the backends' `unused`), sorted
    conversions: tuple[Conversion, ...] = ()  # checkpoints the convert stage owes (plan.checkpoints)
    expansions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # checkpoint step -> its steps

    @property
    def step_types(self) -> tuple[str, ...]:
        return tuple(sorted({p.step.type for p in self.steps}))


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _step_requirements(planned: PlannedStep) -> list[str]:
    """The backend's requirements, with scikit-learn pinned to the version that saved the model
    and an MLflow model's own requirements added."""
    requirements = [*planned.backend.requirements, *planned.step.requirements]
    if CATALOGUE[planned.step.type].own_requirements != "model" or planned.step.model is None:
        return requirements
    if planned.step.type == "sklearn":
        version = sklearn_version(planned.step.model)
        if version:
            requirements = [r for r in requirements if _requirement_name(r) != "scikit-learn"]
            requirements.append(f"scikit-learn=={version}")
    if planned.step.type == "mlflow":
        # The spin's mlflow-skinny loads the model; the model's own mlflow pin
        # would pull the whole tracking server (and may name a version whose
        # mlflow-skinny the index lacks).
        requirements += [
            r
            for r in mlflow_requirements(planned.step.model)
            if _requirement_name(r) not in ("mlflow", "mlflow-skinny")
        ]
    return requirements


def _encoding_requirements(pipeline: Pipeline) -> list[str]:
    """What the stream's record encodings need beyond the Kafka client."""
    kafka = pipeline.settings.kafka
    if kafka is None:
        return []
    encodings = {kafka.source.encoding, kafka.sink.encoding}
    return [r for e in sorted(encodings) for r in ENCODING_REQUIREMENTS.get(e, ())]


def make_plan(pipeline: Pipeline, spin: Spin) -> Plan:
    expanded = expand_checkpoints(pipeline)
    pipeline = expanded.pipeline
    planned: list[PlannedStep] = []
    problems: list[str] = []
    warnings: list[str] = []
    for step in walk_steps(pipeline.steps):  # the steps of branches too
        backend = spin.backends.get(step.type)
        if backend is None:
            supported = ", ".join(sorted(t for t, b in spin.backends.items() if not b.unsupported)) or "none"
            problems.append(
                f"step '{step.name}' has type '{step.type}', which spin '{spin.name}' does not support "
                f"(supported there: {supported})"
            )
            continue
        if backend.unsupported:
            problems.append(
                f"step '{step.name}' has type '{step.type}', which spin '{spin.name}' cannot run: {backend.unsupported}"
            )
            continue
        if backend.warning:
            warnings.append(f"step '{step.name}' ({step.type}) on {spin.name}: {backend.warning}")
        planned.append(PlannedStep(step, backend, CATALOGUE[step.type].module))
    if problems:
        raise SpinError(f"pipeline '{pipeline.name}' cannot be built for spin '{spin.name}'", problems)

    endpoints = pipeline.settings.transports
    requirements: set[str] = set(spin.core_requirements)
    for endpoint in endpoints:
        requirements.update(spin.endpoint_requirements.get(endpoint, ()))
    requirements.update(_encoding_requirements(pipeline))
    http = pipeline.settings.http
    if http is not None and http.openai is not None:
        requirements.update(OPENAI_REQUIREMENTS)
    for p in planned:
        requirements.update(_step_requirements(p))
    index_urls = list(spin.extra_index_urls)
    for p in planned:
        index_urls += [u for u in p.backend.index_urls if u not in index_urls]
    return Plan(
        pipeline=pipeline,
        spin=spin,
        steps=tuple(planned),
        endpoints=endpoints,
        requirements=tuple(sorted(requirements, key=str.lower)),
        warnings=tuple(warnings),
        index_urls=tuple(index_urls),
        # what one backend leaves out stays where another asks for it by name
        unused=tuple(
            sorted(
                {_requirement_name(u) for p in planned for u in p.backend.unused}
                - {_requirement_name(r) for r in requirements}
            )
        ),
        conversions=expanded.conversions,
        expansions=expanded.expansions,
    )
