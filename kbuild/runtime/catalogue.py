"""The step types, in one place: what each is, whether it batches, where its
runner lives and where its packages come from.

The compiler's spec, plan and spins and the runtime's batching all read this
table; an artifact ships it with the runtime core (it imports nothing).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepKind:
    type: str
    role: str  # model (loads a model file) | code (user code) | transform (built in)
    # Output rows depend only on the matching input rows, so requests can share
    # a call without changing any answer: such steps batch without being asked.
    row_wise: bool
    # Where packages come from beyond the spin's backend entry: "step" (the
    # step's own `requirements`), "model" (what the model file records), or "".
    own_requirements: str = ""

    @property
    def module(self) -> str:
        """The runtime module that builds the step's runner."""
        return f"kbuild.runtime.steps.{self.type}"

    @property
    def file(self) -> str:
        """That module's file, relative to the folder holding the kbuild package."""
        return f"kbuild/runtime/steps/{self.type}.py"


CATALOGUE: dict[str, StepKind] = {
    kind.type: kind
    for kind in (
        StepKind("onnx", "model", row_wise=True),
        StepKind("sklearn", "model", row_wise=True, own_requirements="model"),
        StepKind("xgboost", "model", row_wise=True),
        StepKind("lightgbm", "model", row_wise=True),
        StepKind("torchscript", "model", row_wise=True),
        StepKind("tflite", "model", row_wise=True),
        StepKind("pmml", "model", row_wise=True),
        # a pyfunc may look across rows
        StepKind("mlflow", "model", row_wise=False, own_requirements="model"),
        StepKind("python", "code", row_wise=False, own_requirements="step"),
        StepKind("fields", "transform", row_wise=True),
        StepKind("image", "transform", row_wise=True),
        StepKind("scale", "transform", row_wise=True),
        StepKind("classify", "transform", row_wise=True),
        StepKind("threshold", "transform", row_wise=True),
    )
}
STEP_TYPES = frozenset(CATALOGUE)
MODEL_STEP_TYPES = frozenset(t for t, kind in CATALOGUE.items() if kind.role == "model")
ROW_WISE_STEPS = frozenset(t for t, kind in CATALOGUE.items() if kind.row_wise)
