"""Load ROOT/app/pipeline.json and run its steps over a dict of variables."""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from kbuild.runtime.contract.errors import AppError, LoadError, PipelineError, RowError, StepError, missing_library
from kbuild.runtime.contract.pipeline import PipelineSpec, TensorSpec
from kbuild.runtime.contract.step_types import CARRIED_FIELDS, walk
from kbuild.runtime.steps import Runner, StepContext
from kbuild.runtime.tensors import DTYPES, Array, Vars, shape_matches

_STEP_TYPE = re.compile(r"^[a-z][a-z0-9_]*$")

BuildFn = Callable[[Mapping[str, Any], StepContext], Runner]
# Told "loading"/"running", the step's name and type before each step starts;
# the build reads the last such line of a run that hung to name the step.
Trace = Callable[[str, str, str], None]


@dataclass(frozen=True)
class _Step:
    name: str
    type: str
    run: Runner


class PipelineRunner:
    def __init__(
        self, spec: PipelineSpec, steps: list[_Step], trace: Trace | None = None, app_dir: Path | None = None
    ) -> None:
        self.spec = spec
        self._steps = steps
        self.trace = trace
        self.app_dir = app_dir

    @classmethod
    def load(cls, app_dir: Path, spec: PipelineSpec | None = None, trace: Trace | None = None) -> PipelineRunner:
        """Build every step; raises LoadError naming the step on any failure."""
        if spec is None:
            spec = PipelineSpec.read(app_dir)
        steps = []
        for i, raw in enumerate(spec.steps):
            if trace is not None:
                trace("loading", str(raw.get("name")), str(raw.get("type")))
            steps.append(_load_step(app_dir, i, raw, spec.threads))
        return cls(spec, steps, trace, app_dir)

    def with_model(self, step_name: str, model: Path) -> PipelineRunner:
        """This pipeline with one step rebuilt by its step module around another
        model file (a hot model update); the other steps are shared. Raises
        LoadError naming the step, as load() does."""
        found = [i for i, raw in enumerate(self.spec.steps) if raw.get("name") == step_name]
        if not found:
            # a step inside a branch: its graph step is rebuilt, the step itself around the new file
            inside = [
                i for i, raw in enumerate(self.spec.steps) if any(s.get("name") == step_name for s in walk([raw]))
            ]
            if not inside or self.app_dir is None:
                raise LoadError(f"no step named {step_name!r}")
            index = inside[0]
            rebuilt = _load_step(self.app_dir, index, self.spec.steps[index], self.spec.threads, {step_name: model})
            steps = [rebuilt if i == index else s for i, s in enumerate(self._steps)]
            return PipelineRunner(self.spec, steps, self.trace, self.app_dir)
        index = found[0]
        raw = self.spec.steps[index]
        # The file lies outside the app folder, so the step is built with the
        # file's folder as its app folder; sha256 describes the built-in model.
        changed = {k: v for k, v in raw.items() if k != "sha256"}
        changed["model"] = model.name
        rebuilt = _load_step(model.parent, index, changed, self.spec.threads)
        steps = [rebuilt if i == index else s for i, s in enumerate(self._steps)]
        return PipelineRunner(self.spec, steps, self.trace, self.app_dir)

    def run(self, inputs: Vars) -> Vars | None:
        """Run the steps in order; None when a step dropped the record.

        Returns the declared outputs, in order, conformed to their declared
        datatypes. Raises StepError (naming the step) when a step fails and
        PipelineError when the outputs do not fit their declaration.
        """
        variables = _run_steps(self._steps, dict(inputs), self.trace)
        if variables is None:
            return None
        return {spec.name: _conform(spec, variables) for spec in self.spec.outputs}


def _run_steps(
    steps: list[_Step], variables: Vars, trace: Trace | None, written: set[str] | None = None
) -> Vars | None:
    """Run steps in order over `variables` (updated in place, the names set
    added to `written`); None when a step dropped the record. Failures name
    the step."""
    for step in steps:
        if trace is not None:
            trace("running", step.name, step.type)
        try:
            result = step.run(variables)
        except RowError as e:  # the client's row: a 4xx that names the step
            if e.message.startswith("step '"):  # named by a branch's step already
                raise
            raise RowError(f"step '{step.name}' ({step.type}): {e.message}") from e
        except StepError:  # from a step inside a branch: named already
            raise
        except Exception as e:  # any failure in a model library or user code
            raise StepError(step.name, f"step '{step.name}' ({step.type}) failed: {_describe(e)}") from e
        if result is None:
            return None
        variables.update(result)
        if written is not None:
            written.update(result)
    return variables


def _branch_builder(
    app_dir: Path, threads: int | None, models: Mapping[str, Path]
) -> Callable[[Sequence[Mapping[str, Any]]], Runner]:
    """What a graph step builds its branches with: the same loader as the
    pipeline's (a step named in `models` around that model file instead, a
    hot model update), and a runner that returns what the branch set."""

    def load(index: int, raw: Mapping[str, Any]) -> _Step:
        model = models.get(str(raw.get("name")))
        if model is None:
            return _load_step(app_dir, index, raw, threads, models)
        changed = {k: v for k, v in raw.items() if k != "sha256"}
        changed["model"] = model.name
        return _load_step(model.parent, index, changed, threads)

    def build(raw_steps: Sequence[Mapping[str, Any]]) -> Runner:
        if not isinstance(raw_steps, list) or not all(isinstance(s, Mapping) for s in raw_steps):
            raise LoadError("a branch must be a list of steps")
        steps = [load(i, raw) for i, raw in enumerate(raw_steps)]

        def run(variables: Vars) -> Vars | None:
            written: set[str] = set()
            after = _run_steps(steps, dict(variables), None, written)
            return None if after is None else {name: after[name] for name in sorted(written)}

        return run

    return build


def _load_step(
    app_dir: Path, index: int, raw: Mapping[str, Any], threads: int | None, models: Mapping[str, Path] | None = None
) -> _Step:
    name = str(raw.get("name") or f"#{index + 1}")
    step_type = raw.get("type")
    if not isinstance(step_type, str) or not _STEP_TYPE.match(step_type):
        raise LoadError(f"step '{name}': invalid type {step_type!r}")
    options = raw.get("options") or {}
    if not isinstance(options, Mapping):
        raise LoadError(f"step '{name}' ({step_type}): 'options' must be an object")
    ctx = StepContext(
        name=name,
        app_dir=app_dir,
        options=options,
        threads=threads,
        branch=_branch_builder(app_dir, threads, models or {}),
    )
    where = f"step '{name}' ({step_type})"
    try:
        carried = CARRIED_FIELDS.get(step_type)
        if carried is not None and "sha256" in raw and carried in raw:
            _verify_model(ctx, raw, carried)
        build = _step_builder(step_type)
        runner = build(raw, ctx)
    except AppError as e:
        raise LoadError(f"{where}: {e.message}") from e
    except ModuleNotFoundError as e:
        raise LoadError(f"{where}: needs the Python module {e.name!r}, which is not installed in this artifact") from e
    except Exception as e:  # a model library rejecting the model file, user code
        library = missing_library(e)
        raise LoadError(f"{where}: {library}" if library else f"{where}: cannot load: {_describe(e)}") from e
    return _Step(name, step_type, runner)


def _step_builder(step_type: str) -> BuildFn:
    module_name = f"kbuild.runtime.steps.{step_type}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise LoadError(f"this step type is not in this artifact (no module {module_name})") from None
    build = getattr(module, "build", None)
    if not callable(build):
        raise LoadError(f"{module_name} has no build() function")
    return cast(BuildFn, build)


def _verify_model(ctx: StepContext, raw: Mapping[str, Any], field: str) -> None:
    """Refuse a model file that differs from the one the pipeline was built with.

    Only files are hashed: a directory model (e.g. MLflow) has no single sha256,
    so the field is not checked for one.
    """
    expected = raw["sha256"]
    path = ctx.path(str(raw[field]), field)
    if not isinstance(expected, str) or not path.is_file():
        return
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected.lower():
        raise LoadError(
            f"{field} {raw[field]!r} has sha256 {actual}, expected {expected}; "
            f"the {field} file changed after the build, refusing to start"
        )


def _conform(spec: TensorSpec, variables: Vars) -> Array:
    arr = variables.get(spec.name)
    if arr is None:
        raise PipelineError(f"output '{spec.name}' was not set by any step")
    target = DTYPES[spec.datatype]
    if spec.datatype == "BYTES":
        if arr.dtype.kind in "US":
            arr = arr.astype(object)
        elif arr.dtype.kind != "O":
            raise PipelineError(f"output '{spec.name}': declared BYTES, the pipeline produced {arr.dtype}")
    elif arr.dtype != target:
        # same_kind allows float64 -> float32 and int -> float, never the
        # silent truncation of float -> int or text -> numbers.
        if arr.dtype.kind in "OUS" or not np.can_cast(arr.dtype, target, "same_kind"):
            raise PipelineError(f"output '{spec.name}': declared {spec.datatype}, the pipeline produced {arr.dtype}")
        arr = arr.astype(target)
    if spec.shape is not None and not shape_matches(arr.shape, spec.shape):
        raise PipelineError(
            f"output '{spec.name}': declared shape {list(spec.shape)}, the pipeline produced {list(arr.shape)}"
        )
    return arr


def _describe(e: BaseException) -> str:
    if isinstance(e, AppError):
        return e.message
    return f"{type(e).__name__}: {e}"
