"""What every target does: package the rendered root, then verify the result.

`build()` runs the compile pipeline the same way for every target; the
differences between a zipapp, a build context and an image live behind this
protocol. A target is made before the slow stages (lock, fetch), so that a
missing engine or a bad option fails at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kbuild.plan.pipeline_plan import Plan
from kbuild.resolve.fetch import Wheel, sha256_file
from kbuild.resolve.lock import Lock
from kbuild.verify.artifact_runs import Verification
from kbuild.verify.report import StageTimer
from kbuild.verify.sbom import BaseImageRef

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Staged:
    """Everything a target packages: the plan, its lock and wheels, and the
    artifact root (site/ and app/) the render stage wrote."""

    plan: Plan
    lock: Lock
    wheels: list[Wheel]
    root: Path
    output_dir: Path
    name: str  # NAME[-VERSION]-SPIN, the stem of every file the build writes
    scratch: Path  # a temporary folder of the build's own
    measured: Mapping[str, Any] | None = None  # the samples run's peak_rss_bytes and ready_s, where it ran


@dataclass
class Packaged:
    """What a target made: what the CLI prints, the report's artifact section
    and any further report sections (image, deployment)."""

    printed: str
    artifact: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rendered:
    """The target's generated files, rendered from templates in the render stage:
    the container's (Dockerfile, wheel installer) and the deployment's (k8s/, run.sh)."""

    container: Mapping[str, str] = field(default_factory=dict)
    deployment: Mapping[str, str] = field(default_factory=dict)
    settings: Any = None  # the target's own settings the files were rendered from
    base: Any = None  # an image's base (oci.bases.Base), resolved before the SBOM is written
    sbom_base: BaseImageRef | None = None  # the base as the SBOM names it


class Target(Protocol):
    name: str
    # what the artifact holds, recorded inside it (embedded report, SBOM): the
    # image and oci targets carry one image, so both record "image" and their
    # images have the same configuration, hence the same ID
    kind: str

    def render(self, staged: Staged) -> Rendered: ...

    def package(self, staged: Staged, rendered: Rendered, timer: StageTimer, progress: Progress) -> Packaged: ...

    def verify(self, staged: Staged, packaged: Packaged, timeout: float) -> Verification: ...

    def push(self, packaged: Packaged, progress: Progress) -> None:
        """Send the artifact where --push says; only targets that accept --push are asked."""
        ...


def file_artifact(path: Path) -> dict[str, Any]:
    """The report's artifact section for a target that writes one file."""
    return {"path": str(path.resolve()), "sha256": sha256_file(path), "bytes": path.stat().st_size}
