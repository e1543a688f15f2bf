"""The build report: what was built, from what, and how long each stage took."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbuild import __version__
from kbuild.load.deploy_settings import DeploySettings
from kbuild.load.pipeline import Step
from kbuild.plan.pipeline_plan import Plan
from kbuild.resolve.fetch import Wheel, sha256_file
from kbuild.resolve.lock import Lock
from kbuild.verify.artifact_runs import Verification


@dataclass
class StageTimer:
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)


# what a conversion's record holds that depends on where and when it was built
_CONVERSION_CIRCUMSTANCES = ("checkpoint", "cached")


def embedded_report(
    plan: Plan, lock: Lock, wheels: list[Wheel], target: str, conversions: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The part of the report that depends only on the inputs; it goes inside the artifact."""
    spin = plan.spin
    branches = branch_of(plan.pipeline.steps)
    return {
        "kbuild": __version__,
        "pipeline": {"name": plan.pipeline.name, "version": plan.pipeline.version},
        "spin": {
            "name": spin.name,
            "python": spin.python,
            "os": spin.os,
            "arch": spin.arch,
            "accelerator": spin.accelerator,
        },
        "target": target,
        "endpoints": list(plan.endpoints),
        "steps": [
            {
                "name": p.step.name,
                "type": p.step.type,
                "device": p.backend.device,
                **({"in": branches[p.step.name]} if p.step.name in branches else {}),
                **({"warning": p.backend.warning} if p.backend.warning else {}),
            }
            for p in plan.steps
        ],
        "lock": {"file": lock.path.name, "sha256": lock.sha256},
        "packages": [
            {"name": w.package.name, "version": w.package.version, "wheel": w.path.name, "sha256": w.sha256}
            for w in wheels
        ],
        "models": [
            {"step": p.step.name, "file": p.step.model.name, "sha256": p.step.sha256}
            for p in plan.steps
            if p.step.model is not None
        ],
        "warnings": list(plan.warnings),
        **(
            {"expanded": {name: list(steps) for name, steps in sorted(plan.expansions.items())}}
            if plan.expansions
            else {}
        ),
        **(
            {"conversions": [{k: v for k, v in c.items() if k not in _CONVERSION_CIRCUMSTANCES} for c in conversions]}
            if conversions
            else {}
        ),
    }


def branch_of(steps: tuple[Step, ...], where: str = "") -> dict[str, str]:
    """The branch each step in a branch runs in: step name -> 'route.cases.eu'."""
    found: dict[str, str] = {}
    for step in steps:
        if where:
            found[step.name] = where
        for label, branch in step.branches:
            found.update(branch_of(branch, f"{step.name}.{label}"))
    return found


REPORT_FILE = "build-report.json"  # beside the artifact


def final_report(
    embedded: dict[str, Any],
    *,
    target: str,
    packaged: tuple[dict[str, Any], dict[str, Any]],
    pipeline_path: Path,
    lock_path: Path,
    resolved: bool,
    sbom_path: Path,
    verification: Verification,
    measured: dict[str, Any] | None,
    deploy: DeploySettings | None,
    timings: dict[str, float],
    conversions: Sequence[Mapping[str, Any]] = (),
    convert_lock: Path | None = None,
) -> dict[str, Any]:
    """build-report.json: the embedded report with what only the finished
    build knows (the artifact, the SBOM's path and hash, the verification,
    the timings). `packaged` is the target's artifact section and its
    further sections (image, deployment)."""
    artifact, sections = packaged
    report: dict[str, Any] = {
        **embedded,
        **sections,
        "target": target,
        "pipeline": {**embedded["pipeline"], "path": str(pipeline_path)},
        "artifact": artifact,
        "lock": {**embedded["lock"], "path": str(lock_path), "resolved": resolved},
        "sbom": {"path": str(sbom_path.resolve()), "sha256": sha256_file(sbom_path)},
        "verification": verification.as_dict(),
        "measured": measured,
        "timings_s": timings,
    }
    if conversions:
        report["conversions"] = [dict(c) for c in conversions]
        report["convert_lock"] = str(convert_lock)
    if deploy is not None:
        report["deploy"] = {
            "scale_on": deploy.scale_on,
            "replicas": {"min": deploy.min_replicas, "max": deploy.max_replicas},
            "secret": deploy.secret,
            "warnings": list(deploy.warnings),
        }
    return report


def write_report(report: dict[str, Any], output_dir: Path, also: Path | None = None) -> Path:
    """build-report.json in the output folder (and at `also`, where --report names a path)."""
    report_path = output_dir / REPORT_FILE
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    report_path.write_text(text, encoding="utf-8")
    if also:
        also.parent.mkdir(parents=True, exist_ok=True)
        also.write_text(text, encoding="utf-8")
    return report_path
