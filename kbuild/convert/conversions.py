"""The convert stage: each conversion the plan owes is carried out in the
build-side environment (or found in the cache), checked against the step's
tolerance, and its ONNX file put in the checkpoint's place.

    converted = convert_plan(plan, cache=..., locked=..., offline=..., progress=...)
    converted.plan        the plan with every converted step's model replaced
    converted.report      what build-report.json records of each conversion

A conversion is cached under the hash of everything it reads: the checkpoint's
bytes, what it is compared on, the converter's own code and the environment's
pins. The same checkpoint gives the same ONNX bytes, so two builds give the
same artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kbuild.errors import BuildError, Problem, SpecError, VerificationError
from kbuild.load.checkpoints import read_keras, read_program
from kbuild.load.files import sha256_regular
from kbuild.load.pipeline import Pipeline, Step, walk_steps
from kbuild.plan.checkpoints import Conversion
from kbuild.plan.pipeline_plan import Plan, PlannedStep

WORKERS = Path(__file__).resolve().parent / "workers"
PACKAGE = WORKERS.parent.parent  # kbuild/
CONVERT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class BuildSide:
    """The build-side environment as the driver hands it over (kbuild.resolve.build_environment)."""

    pins: str  # the hash of its lock's pins: part of every conversion's cache key
    lock: Path
    frameworks: str  # for progress messages
    python: Callable[[], Path]  # makes the environment where missing; its interpreter


@dataclass(frozen=True)
class Converted:
    plan: Plan
    report: tuple[dict[str, Any], ...]
    lock: Path | None  # the build-side lock, where there was anything to convert


def tree_hash(path: Path) -> str:
    """A file's sha256, or a folder's: of its files' relative paths and sha256s, in order."""
    if path.is_file():
        return sha256_regular(path)
    lines = [f"{p.relative_to(path).as_posix()} {sha256_regular(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _workers_hash() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(WORKERS.glob("*.py")))).hexdigest()


def convert_plan(plan: Plan, side: BuildSide | None, *, cache: Path, progress: Callable[[str], None]) -> Converted:
    if not plan.conversions or side is None:
        return Converted(plan, (), None)
    pins = side.pins
    workers = _workers_hash()
    models: dict[str, tuple[Path, str]] = {}
    reports: list[dict[str, Any]] = []
    python: Path | None = None
    for conversion in plan.conversions:
        job = _job(plan.pipeline, conversion)
        checkpoint = tree_hash(conversion.checkpoint)  # read once: a folder's weights may be gigabytes
        key = hashlib.sha256(
            json.dumps(
                {"job": job, "checkpoint": checkpoint, "pins": pins, "workers": workers}, sort_keys=True
            ).encode()
        ).hexdigest()
        home = cache / "convert" / "models" / key
        files = {conversion.step: "model.onnx", **conversion.also}
        cached = all((home / f).is_file() for f in [*files.values(), "result.json"])
        if not cached:
            if python is None:
                progress(f"preparing the build-side environment for {side.frameworks} ({side.lock.name})")
                python = side.python()
            progress(f"converting step '{conversion.origin}' ({conversion.kind}) to ONNX")
            _run(python, conversion, job, home)
        result = json.loads((home / "result.json").read_text(encoding="utf-8"))
        _check(conversion, result)
        written = {step: (home / f, sha256_regular(home / f)) for step, f in files.items()}
        models.update(written)
        reports.append(_report(conversion, checkpoint, result, {s: sha for s, (_, sha) in written.items()}, cached))
    return Converted(_with_models(plan, models), tuple(reports), side.lock)


def _job(pipeline: Pipeline, conversion: Conversion) -> dict[str, Any]:
    """What the converter is asked, less where it writes: the same job, the same bytes."""
    step = next(s for s in walk_steps(pipeline.steps) if s.name == conversion.step)
    inputs = {t.name for t in pipeline.inputs}
    job: dict[str, Any] = {"kind": conversion.kind, "settings": dict(conversion.settings)}
    if conversion.kind != "huggingface":
        # the samples, for the model inputs that read the pipeline's inputs directly
        mapping = _inputs_of(step, conversion)
        job["samples"] = {
            name: [s["inputs"][var] for s in pipeline.samples]
            for name, var in mapping.items()
            if var in inputs and all(var in s["inputs"] for s in pipeline.samples)
        }
    else:
        # the samples' texts or images: what the step the model reads from reads
        stage = "image" if conversion.settings.get("task") == "image-classification" else "tokenize"
        first = next((s for s in walk_steps(pipeline.steps) if s.name == f"{conversion.origin}-{stage}"), None)
        source = first.reads[0] if first is not None else ""
        values = [t for s in pipeline.samples if source in s["inputs"] for t in s["inputs"][source]]
        job["images" if stage == "image" else "texts"] = values
    return job


def _inputs_of(step: Step, conversion: Conversion) -> dict[str, str]:
    """model input -> the variable it reads; "" for the only input of a model
    whose names show only once it is loaded (a legacy .h5)."""
    if "input" in step.config:
        if conversion.kind == "torch":
            names: tuple[str, ...] | None = read_program(conversion.checkpoint).inputs
        else:
            names = read_keras(conversion.checkpoint).inputs
        return {names[0] if names else "": str(step.config["input"])}
    return {str(k): str(v) for k, v in dict(step.config.get("inputs") or {}).items()}


def _run(python: Path, conversion: Conversion, job: Mapping[str, Any], home: Path) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=home.parent) as tmp:
        work = Path(tmp)
        out = work / "out"
        out.mkdir()
        request = {**job, "checkpoint": str(conversion.checkpoint), "output": str(out)}
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        # The worker imports kbuild from a folder holding it alone: where kbuild is
        # installed, its parent is this Python's site-packages, whose NumPy and
        # onnx must not shadow the build-side environment's own.
        (work / "path").mkdir()
        (work / "path" / "kbuild").symlink_to(PACKAGE, target_is_directory=True)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
        try:
            proc = subprocess.run(
                [str(python), "-E", "-s", "-m", "kbuild.convert.workers.convert", str(work / "request.json")],
                cwd=work / "path", env=env, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BuildError(f"converting step '{conversion.origin}' took over {CONVERT_TIMEOUT_S:.0f} s") from None
        result_file = out / "result.json"
        result = json.loads(result_file.read_text(encoding="utf-8")) if result_file.is_file() else None
        if proc.returncode == 3 and result and "error" in result:
            raise _checkpoint_error(conversion, str(result["error"]))
        if proc.returncode != 0 or result is None:
            tail = proc.stderr.strip().splitlines()[-8:]
            raise BuildError(f"the converter of step '{conversion.origin}' failed (exit {proc.returncode})", tail)
        if home.exists():
            shutil.rmtree(home)
        os.replace(out, home)


def _checkpoint_error(conversion: Conversion, message: str) -> SpecError:
    line, column, path = conversion.position
    problem = Problem(str(conversion.pipeline_file), line, column, path, f"{conversion.kind} model: {message}")
    return SpecError(
        f"{conversion.pipeline_file}: step '{conversion.origin}': cannot convert its checkpoint", [problem]
    )


def _check(conversion: Conversion, result: Mapping[str, Any]) -> None:
    similarity = result.get("similarity")
    if similarity is not None and float(similarity["min"]) < float(similarity["min_similarity"]):
        raise VerificationError(
            f"step '{conversion.origin}': the int8 model's embeddings are not close enough to the framework's",
            [
                f"lowest cosine similarity {float(similarity['min']):.4f} (min_similarity "
                f"{float(similarity['min_similarity']):g}), at {similarity.get('at', '')}; "
                f"mean {float(similarity['mean']):.4f} over {similarity['texts']} texts",
                "lower min_similarity if that is close enough, or leave quantize out to ship the float model",
            ],
        )
    over = [
        (name, float(found["max_abs_diff"]), str(found.get("at", "")))
        for name, found in sorted(result["outputs"].items())
        if float(found["max_abs_diff"]) > conversion.tolerance
    ]
    if over:
        raise VerificationError(
            f"step '{conversion.origin}': the ONNX conversion does not give {conversion.kind}'s answers",
            [
                *(f"output {name}: largest difference {diff:.3g} (tolerance {conversion.tolerance:g}), at {at}"
                  for name, diff, at in over),
                "raise the step's tolerance if that is close enough, or set runtime: native to ship the framework",
            ],
        )  # fmt: skip


def _report(
    conversion: Conversion, checkpoint: str, result: Mapping[str, Any], shas: Mapping[str, str], cached: bool
) -> dict[str, Any]:
    also = {step: {"onnx_sha256": shas[step]} for step in sorted(conversion.also)}
    return {
        "step": conversion.origin,
        "type": conversion.kind,
        "checkpoint": str(conversion.checkpoint),
        "checkpoint_sha256": checkpoint,
        "runtime": "onnx",
        "onnx_step": conversion.step,
        "onnx_sha256": shas[conversion.step],
        **({"also": also} if also else {}),
        "cached": cached,
        "tolerance": conversion.tolerance,
        "inputs_compared": int(result["compared"]),
        "outputs": {name: {"max_abs_diff": float(o["max_abs_diff"])} for name, o in sorted(result["outputs"].items())},
        "framework": dict(result.get("framework") or {}),
        # what the artifact's own preprocessing was checked against
        **{
            key: result[key]
            for key in ("tokenizer", "image_processor", "fusions", "quantize", "similarity")
            if key in result
        },
    }


def _with_models(plan: Plan, models: Mapping[str, tuple[Path, str]]) -> Plan:
    """The plan with each converted step's model file replaced by its ONNX file."""

    def swap(step: Step) -> Step:
        branches = tuple((where, tuple(swap(s) for s in branch)) for where, branch in step.branches)
        if step.name in models:
            path, sha = models[step.name]
            return replace(step, model=path, sha256=sha, branches=branches)
        return replace(step, branches=branches) if branches else step

    pipeline = replace(plan.pipeline, steps=tuple(swap(s) for s in plan.pipeline.steps))
    steps = tuple(PlannedStep(swap(p.step), p.backend, p.runtime_module) for p in plan.steps)
    return replace(plan, pipeline=pipeline, steps=steps)
