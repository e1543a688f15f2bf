"""Render: lay out the artifact root (docs/artifact.md) in a staging folder,
and kbuild's template environment (the targets render their files with it).

The root holds only the runtime modules this pipeline uses: the runtime core,
the server modules of the enabled endpoints and one module per step type.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

import kbuild.runtime
from kbuild.load.resources import data_dir
from kbuild.plan.pipeline_plan import Plan
from kbuild.runtime.contract.bootstrap import wheel_members
from kbuild.runtime.contract.layout import (
    APP_DIR,
    BUILD_FILE,
    FILES_LIST,
    PIPELINE_FILE,
    SAMPLES_FILE,
    SITE_DIR,
    code_path,
    model_path,
    transforms_path,
)
from kbuild.runtime.contract.pipeline import PipelineSpec
from kbuild.runtime.contract.runtime_files import files_for
from kbuild.runtime.contract.step_types import CARRIED_FIELDS, walk

RUNTIME = Path(kbuild.runtime.__file__).resolve().parent
BOOTSTRAP = RUNTIME / "contract" / "bootstrap.py"


def dumps(data: Any) -> str:
    """JSON as every artifact file is written: sorted keys, so the same inputs give the same bytes."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def template_environment() -> jinja2.Environment:
    """kbuild's templates: sandboxed, StrictUndefined, with the quoting
    filters that container files need (json, dq)."""
    env = jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["json"] = _json
    env.filters["dq"] = _dockerfile_string
    return env


def _dockerfile_string(value: Any) -> str:
    """A double-quoted Dockerfile word: no variable expansion, no line breaks."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '"' + " ".join(text.splitlines()) + '"'


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_template(name: str, **context: Any) -> str:
    return template_environment().get_template(name).render(**context)


def runtime_files(plan: Plan) -> list[tuple[Path, str]]:
    """(source file, path inside site/) of every runtime module the artifact needs."""
    package_root = RUNTIME.parent.parent
    return [(package_root / rel, rel) for rel in files_for(plan.step_types, plan.endpoints)]


def _copy_tree_or_file(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git"))
    else:
        shutil.copyfile(source, dest)


def pipeline_spec(plan: Plan) -> PipelineSpec:
    """The pipeline as the artifact carries it (app/pipeline.json): paths
    rewritten into app/, the spin's backend options added to each step."""
    pipeline = plan.pipeline
    steps: list[dict[str, Any]] = json.loads(json.dumps(pipeline.document["steps"]))
    by_name = {p.step.name: p for p in plan.steps}
    for step in walk(steps):  # the steps of branches too (names are unique)
        planned = by_name[step["name"]]
        if planned.step.model is not None:
            step[CARRIED_FIELDS[planned.step.type]] = model_path(step["name"], planned.step.model.name)
        if planned.step.code is not None:
            step["code"] = code_path(step["name"], planned.step.code.name)
        step["options"] = dict(planned.backend.options)
    serve: dict[str, Any] = json.loads(json.dumps(dict(pipeline.serve)))
    source = transforms_code(plan)
    if source is not None:
        serve["kafka"]["transforms"]["code"] = transforms_path(source.name)
    return PipelineSpec(
        name=pipeline.name,
        version=pipeline.version,
        inputs=pipeline.inputs,
        outputs=pipeline.outputs,
        steps=tuple(steps),
        serve=pipeline.settings,
        serve_section=serve,
    )


def transforms_code(plan: Plan) -> Path | None:
    """The code of serve.kafka.transforms (Maki Nage's serve functions), if any."""
    kafka = plan.pipeline.settings.kafka
    code = kafka.transforms.code if kafka is not None and kafka.transforms is not None else None
    return plan.pipeline.path.parent / code if code else None


def render_root(
    plan: Plan, root: Path, embedded_report: Mapping[str, Any], sample_outputs: Sequence[Any] | None = None
) -> None:
    """Write site/ (runtime modules) and app/ of the artifact root, with the
    samples' recorded outputs (None: not recorded; the `record` run reads the
    inputs from a root rendered without them)."""
    for source, rel in runtime_files(plan):
        dest = root / SITE_DIR / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    app = root / APP_DIR
    app.mkdir(parents=True, exist_ok=True)
    for planned in plan.steps:
        step = planned.step
        if step.model is not None:
            _copy_tree_or_file(step.model, app / model_path(step.name, step.model.name))
        if step.code is not None:
            _copy_tree_or_file(step.code, app / code_path(step.name, step.code.name))
    transforms = transforms_code(plan)
    if transforms is not None:
        _copy_tree_or_file(transforms, app / transforms_path(transforms.name))
    (app / PIPELINE_FILE).write_text(dumps(pipeline_spec(plan).to_json()), encoding="utf-8")
    outputs = [None] * len(plan.pipeline.samples) if sample_outputs is None else sample_outputs
    samples = [
        {**({"expect": s["expect"]} if "expect" in s else {}), "inputs": s["inputs"], "outputs": out}
        for s, out in zip(plan.pipeline.samples, outputs, strict=True)
    ]
    (app / SAMPLES_FILE).write_text(dumps(samples), encoding="utf-8")
    (app / BUILD_FILE).write_text(dumps(embedded_report), encoding="utf-8")


def write_files_list(root: Path, wheels: Sequence[Path]) -> int:
    """app/files.json: every file the artifact's root holds once installed (the
    root's own and the wheels' installed files) with its size and sha256, for
    the artifact to check itself (kbuild.runtime.contract.bootstrap). Returns the count."""
    files: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[path.relative_to(root).as_posix()] = (path.stat().st_size, _sha256(path.read_bytes()))
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for info, rel in wheel_members(zf):
                files[f"{SITE_DIR}/{rel.as_posix()}"] = (info.file_size, _sha256(zf.read(info)))
    (root / FILES_LIST).write_text(dumps({k: list(v) for k, v in sorted(files.items())}), encoding="utf-8")
    return len(files)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
