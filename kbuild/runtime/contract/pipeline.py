"""The pipeline as an artifact carries it: app/pipeline.json is exactly
`PipelineSpec.to_json()`, written by the compiler (kbuild.render) and read
back by the runtime with `PipelineSpec.read`.

The steps are carried as their JSON objects (paths rewritten into app/, the
spin's backend options added): each step type's runner reads its own fields.
The serve section is carried as written and parsed here, once, into
ServeSettings, with the process environment's overrides applied by the
runtime (kbuild.runtime.contract.serve).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbuild.runtime.contract.errors import LoadError
from kbuild.runtime.contract.layout import PIPELINE_FILE
from kbuild.runtime.contract.serve import ServeSettings, SettingsError, parse_serve
from kbuild.runtime.contract.step_types import walk

FORMAT = 1  # pipeline.json's "kbuild" key; a runtime reads only its own format

# Open Inference Protocol datatypes (the runtime maps each to a NumPy dtype)
DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)


@dataclass(frozen=True)
class TensorSpec:
    """A declared pipeline input or output. shape None accepts any shape; -1 is
    a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {"datatype": self.datatype, "shape": None if self.shape is None else list(self.shape)}

    @classmethod
    def from_json(cls, name: str, value: Any) -> TensorSpec:
        if not isinstance(value, Mapping):
            raise ValueError(f"tensor '{name}': expected an object with datatype and shape")
        datatype = value.get("datatype")
        if datatype not in DATATYPES:
            raise ValueError(f"tensor '{name}': unknown datatype {datatype!r} (one of {', '.join(DATATYPES)})")
        raw_shape = value.get("shape")
        shape: tuple[int, ...] | None = None
        if raw_shape is not None:
            if not isinstance(raw_shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in raw_shape
            ):
                raise ValueError(f"tensor '{name}': shape must be a list of integers >= -1")
            shape = tuple(raw_shape)
        return cls(name, datatype, shape)


@dataclass(frozen=True)
class PipelineSpec:
    """What pipeline.json holds (servers need name, inputs and serve to bind
    and describe themselves before any model loads)."""

    name: str
    version: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    steps: tuple[Mapping[str, Any], ...]
    serve: ServeSettings
    # the serve section as written, for to_json; `serve` is its parsed form
    serve_section: Mapping[str, Any] = field(default_factory=dict)
    # Threads for the model runtimes' pools (kbuild.runtime.threads), set by
    # the runtime from its CPU budget; None leaves each library its default.
    # Not part of pipeline.json.
    threads: int | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "kbuild": FORMAT,
            "name": self.name,
            "inputs": {t.name: t.to_json() for t in self.inputs},
            "outputs": {t.name: t.to_json() for t in self.outputs},
            "steps": [dict(step) for step in self.steps],
            "serve": dict(self.serve_section),
        }
        if self.version is not None:
            obj["version"] = self.version
        return obj

    @classmethod
    def read(cls, app_dir: Path, env: Mapping[str, str] | None = None) -> PipelineSpec:
        """pipeline.json of an artifact; `env` (the process environment, read
        by the caller) may override serve settings (kbuild.runtime.contract.serve)."""
        path = app_dir / PIPELINE_FILE
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LoadError(f"{path}: not found (is --root an artifact root?)") from None
        except (OSError, ValueError) as e:
            raise LoadError(f"{path}: cannot read: {e}") from None
        try:
            return cls.from_json(obj, env)
        except (ValueError, SettingsError) as e:
            raise LoadError(f"{path}: {e}") from None

    @classmethod
    def from_json(cls, obj: Any, env: Mapping[str, str] | None = None) -> PipelineSpec:
        # The compiler validated the file against the schema; these checks only
        # guard the runtime against a hand-edited or truncated pipeline.json.
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        if obj.get("kbuild") != FORMAT:
            raise ValueError(f"unsupported format {obj.get('kbuild')!r} (this runtime reads kbuild: {FORMAT})")
        name = obj.get("name")
        if not isinstance(name, str):
            raise ValueError("missing 'name'")
        version = obj.get("version")
        tensors: dict[str, tuple[TensorSpec, ...]] = {}
        for key in ("inputs", "outputs"):
            section = obj.get(key)
            if not isinstance(section, dict) or not section:
                raise ValueError(f"'{key}' must be a non-empty object")
            tensors[key] = tuple(TensorSpec.from_json(n, v) for n, v in section.items())
        steps = obj.get("steps")
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise ValueError("'steps' must be a list of objects")
        step_types = (str(step.get("type")) for step in walk(steps))  # branches' steps too
        raw_serve = obj.get("serve")
        serve = parse_serve(raw_serve, name=name, step_types=step_types, env=env or {})
        return cls(
            name=name,
            version=str(version) if version is not None else None,
            inputs=tensors["inputs"],
            outputs=tensors["outputs"],
            steps=tuple(steps),
            serve=serve,
            serve_section=dict(raw_serve) if isinstance(raw_serve, Mapping) else {},
        )
