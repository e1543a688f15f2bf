"""The embedded samples: record their outputs at build time, check them where
the artifact is deployed.

app/samples.json is [{"inputs": {...}, "expect": {...}?, "outputs": {...}|null}].
Recorded outputs use the JSON encoding of /predict; a record the pipeline
dropped is recorded as {} (every pipeline declares at least one output, so {}
cannot be a real answer), and null means "not recorded" (not verified).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kbuild.runtime.contract.errors import AppError, LoadError
from kbuild.runtime.contract.layout import SAMPLES_FILE
from kbuild.runtime.contract.pipeline import TensorSpec
from kbuild.runtime.pipeline_runner import PipelineRunner
from kbuild.runtime.tensors import decode_inputs, encode_outputs

RTOL = 1e-5
ATOL = 1e-6


@dataclass(frozen=True)
class Sample:
    inputs: Any
    expect: Mapping[str, Any] | None
    outputs: Mapping[str, Any] | None


@dataclass(frozen=True)
class Result:
    index: int  # 1-based, as people count
    status: str  # "ok" | "fail" | "unverified"
    problems: tuple[str, ...] = ()


def read_samples(app_dir: Path) -> list[Sample]:
    path = app_dir / SAMPLES_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise LoadError(f"{path}: cannot read: {e}") from None
    if not isinstance(raw, list):
        raise LoadError(f"{path}: expected a list of samples")
    samples = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict) or "inputs" not in item:
            raise LoadError(f"{path}: sample {i} must be an object with 'inputs'")
        expect, outputs = item.get("expect"), item.get("outputs")
        for key, value in (("expect", expect), ("outputs", outputs)):
            if value is not None and not isinstance(value, dict):
                raise LoadError(f"{path}: sample {i}: '{key}' must be an object or null")
        samples.append(Sample(item["inputs"], expect, outputs))
    return samples


def run_sample(pipeline: PipelineRunner, sample: Sample) -> dict[str, Any]:
    """Encoded outputs; {} when the record was dropped."""
    outputs = pipeline.run(decode_inputs(sample.inputs, pipeline.spec.inputs))
    return {} if outputs is None else encode_outputs(outputs)


def record(pipeline: PipelineRunner, samples: list[Sample]) -> list[dict[str, Any]]:
    """Every sample's outputs; a sample that fails is an error (a build must
    not embed a failure as the expected answer)."""
    recorded = []
    for i, sample in enumerate(samples, 1):
        try:
            recorded.append(run_sample(pipeline, sample))
        except AppError as e:
            error = AppError(f"sample {i}: {e.message}")
            error.exit_code = e.exit_code
            raise error from e
    return recorded


def check(pipeline: PipelineRunner, samples: list[Sample]) -> list[Result]:
    specs = {s.name: s for s in pipeline.spec.outputs}
    results = []
    for i, sample in enumerate(samples, 1):
        try:
            actual = run_sample(pipeline, sample)
        except AppError as e:
            results.append(Result(i, "fail", (e.message,)))
            continue
        if sample.outputs is None and sample.expect is None:
            results.append(Result(i, "unverified"))
            continue
        problems: list[str] = []
        if sample.outputs is not None:
            problems += _compare_all(specs, sample.outputs, actual, "recorded", exact_rank=True)
        if sample.expect is not None:
            problems += _compare_all(specs, sample.expect, actual, "expected", exact_rank=False)
        results.append(Result(i, "fail" if problems else "ok", tuple(problems)))
    return results


def _compare_all(
    specs: Mapping[str, TensorSpec],
    wanted: Mapping[str, Any],
    actual: Mapping[str, Any],
    what: str,
    exact_rank: bool,
) -> list[str]:
    if not actual:
        return [] if not wanted else [f"the record was dropped; {what} outputs {_short(wanted)}"]
    if not wanted and exact_rank:
        return [f"{what}: the record is dropped, the pipeline returned outputs"]
    problems = []
    for name, value in wanted.items():
        spec = specs.get(name)
        if spec is None or name not in actual:
            problems.append(f"{what} output {name!r} is not an output of the pipeline")
            continue
        problem = _compare(spec, value, actual[name], exact_rank)
        if problem is not None:
            problems.append(f"output {name!r}: {what} {_short(value)}, got {_short(actual[name])}{problem}")
    return problems


def _compare(spec: TensorSpec, wanted: Any, got: Any, exact_rank: bool) -> str | None:
    """None when equal (numbers within RTOL/ATOL, text and booleans exactly),
    else a detail to append to the message ("" when there is none).

    An `expect` written for a single record may leave out the batch axis
    ({label: setosa} for [setosa]), as inputs may; recorded outputs may not.
    """
    numeric = spec.datatype not in ("BYTES", "BOOL")
    try:
        w = np.asarray(wanted, dtype=np.float64 if numeric else object)
        g = np.asarray(got, dtype=np.float64 if numeric else object)
    except (ValueError, TypeError):
        return " (not comparable)"
    if not exact_rank and w.ndim == g.ndim - 1 and g.shape[:1] == (1,):
        w = w[np.newaxis]
    if w.shape != g.shape:
        return f" (shape {list(w.shape)} vs {list(g.shape)})"
    if numeric:
        if np.allclose(g, w, rtol=RTOL, atol=ATOL, equal_nan=True):
            return None
        return f" (max difference {float(np.nanmax(np.abs(g - w))):.3g})"
    return None if w.tolist() == g.tolist() else ""


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
