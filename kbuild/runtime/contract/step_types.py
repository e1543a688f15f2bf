"""The step types, in one place: what each is, whether it batches, where its
runner lives and where its packages come from.

The compiler's spec, plan and spins and the runtime's batching all read this
table; an artifact ships it with the runtime core (it imports nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepKind:
    type: str
    role: str  # model (loads a model file) | code (user code) | transform (built in) | graph (holds branches)
    # Output rows depend only on the matching input rows, so requests can share
    # a call without changing any answer: such steps batch without being asked.
    row_wise: bool
    # Where packages come from beyond the spin's backend entry: "step" (the
    # step's own `requirements`), "model" (what the model file records), or "".
    own_requirements: str = ""
    # The field naming a file the artifact carries beside the pipeline (under
    # models/, hashed and listed like a model); model steps carry `model`.
    file_field: str = ""
    # A checkpoint the build converts (unless the step says `runtime: native`):
    # the framework family whose build-side environment reads it.
    framework: str = ""
    # runtime modules its own module imports, beside kbuild.runtime.steps (names without .py)
    helpers: tuple[str, ...] = ()

    @property
    def carried_field(self) -> str | None:
        return self.file_field or ("model" if self.role == "model" else None)

    @property
    def module(self) -> str:
        """The runtime module that builds the step's runner."""
        return f"kbuild.runtime.steps.{self.type}"

    @property
    def file(self) -> str:
        """That module's file, relative to the folder holding the kbuild package."""
        return f"kbuild/runtime/steps/{self.type}.py"

    @property
    def files(self) -> tuple[str, ...]:
        """Its module and the helpers it imports: what an artifact using it carries."""
        return (self.file, *(f"kbuild/runtime/steps/{helper}.py" for helper in self.helpers))


CATALOGUE: dict[str, StepKind] = {
    kind.type: kind
    for kind in (
        StepKind("onnx", "model", row_wise=True),
        StepKind("sklearn", "model", row_wise=True, own_requirements="model"),
        StepKind("xgboost", "model", row_wise=True),
        StepKind("lightgbm", "model", row_wise=True),
        StepKind("torchscript", "model", row_wise=True, helpers=("torch_tensors",)),
        StepKind("tflite", "model", row_wise=True, helpers=("quiet_stderr",)),
        StepKind("pmml", "model", row_wise=True),
        StepKind("keras", "model", row_wise=True, framework="tensorflow", helpers=("tf_tensors", "quiet_stderr")),
        StepKind("tensorflow", "model", row_wise=True, framework="tensorflow", helpers=("tf_tensors", "quiet_stderr")),
        StepKind("torch", "model", row_wise=True, framework="torch", helpers=("torch_tensors",)),
        # expands into tokenize or image, onnx, and classify or pool (plan.checkpoints); only
        # its runtime: native model runs as itself
        StepKind("huggingface", "model", row_wise=True, framework="transformers", helpers=("torch_tensors",)),
        # a pyfunc may look across rows
        StepKind("mlflow", "model", row_wise=False, own_requirements="model"),
        StepKind("python", "code", row_wise=False, own_requirements="step"),
        StepKind("fields", "transform", row_wise=True),
        StepKind("image", "transform", row_wise=True),
        # pads to the call's longest row: the ids of a row then depend on its
        # neighbours, but only by padding the attention mask hides
        StepKind("tokenize", "transform", row_wise=True, file_field="tokenizer"),
        StepKind("scale", "transform", row_wise=True),
        StepKind("classify", "transform", row_wise=True),
        StepKind("pool", "transform", row_wise=True),
        StepKind("threshold", "transform", row_wise=True),
        StepKind("ensemble", "transform", row_wise=True),
        # Rows are routed one by one: a graph step is row-wise when its branches are.
        StepKind("switch", "graph", row_wise=True),
        StepKind("split", "graph", row_wise=True),
    )
}
STEP_TYPES = frozenset(CATALOGUE)
MODEL_STEP_TYPES = frozenset(t for t, kind in CATALOGUE.items() if kind.role == "model")
ROW_WISE_STEPS = frozenset(t for t, kind in CATALOGUE.items() if kind.row_wise)
# step type -> the field naming the file it carries (model steps and tokenize)
CARRIED_FIELDS = {t: kind.carried_field for t, kind in CATALOGUE.items() if kind.carried_field}
CHECKPOINT_STEP_TYPES = frozenset(t for t, kind in CATALOGUE.items() if kind.framework)
GRAPH_STEP_TYPES = frozenset(t for t, kind in CATALOGUE.items() if kind.role == "graph")
# The fields of a graph step that hold branches: field -> whether it maps names to branches.
BRANCH_FIELDS = {"cases": True, "default": False, "branches": True}


def branches_of(step: object) -> list[tuple[tuple[str, ...], list[Any]]]:
    """The branches of a (possibly invalid) step mapping: (path under the step,
    the branch's list of steps); nothing for a step that is no graph step."""
    if not isinstance(step, dict):
        return []
    kind = step.get("type")
    if not isinstance(kind, str) or kind not in GRAPH_STEP_TYPES:
        return []
    found: list[tuple[tuple[str, ...], list[Any]]] = []
    for field, named in BRANCH_FIELDS.items():
        value = step.get(field)
        if named and isinstance(value, dict):
            found += [((field, str(name)), branch) for name, branch in value.items() if isinstance(branch, list)]
        elif not named and isinstance(value, list):
            found.append(((field,), value))
    return found


def walk(steps: object) -> list[dict[str, Any]]:
    """Every step mapping of a list of steps, branches' steps included, in order."""
    found: list[dict[str, Any]] = []
    for step in steps if isinstance(steps, (list, tuple)) else ():
        if isinstance(step, dict):
            found.append(step)
            for _, branch in branches_of(step):
                found += walk(branch)
    return found
