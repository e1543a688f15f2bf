"""Deployment files beside an image or context build: k8s/ and run.sh.

Both say the same thing in two dialects: the image, its ports, the health
probes, the spin's environment and what the spin needs from the host (devices,
host folders, ulimits, extended resources such as nvidia.com/gpu).

Kubernetes has no field for ulimits; the container inherits them from the
node's container runtime. A spin that needs one (aurora-linux: memlock
unlimited) gets an unprivileged init container that checks the limits and
stops the pod with instructions when the node does not grant them, plus an
annotation recording the need. run.sh passes them with --ulimit.

Host devices have no field either, short of a vendor device plugin: they are
hostPath volumes of type CharDevice, and the container is privileged, because
without a device plugin only a privileged container passes the device cgroup.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kbuild import __version__
from kbuild.errors import BuildError, SpinError
from kbuild.load.deploy_settings import GRACE_MARGIN_S, PROBE_PERIOD_S, deploy_settings, sizing
from kbuild.plan.pipeline_plan import Plan
from kbuild.render.artifact_root import template_environment
from kbuild.runtime.contract.serve import DRAIN_ENV, HTTP_PORT_ENV, SHUTDOWN_GRACE_S
from kbuild.targets.image_settings import USER_ID, ImageSettings
from kbuild.targets.kserve import kserve_manifests
from kbuild.targets.scaling import kustomization, scaling_manifests

K8S_DIR = "k8s"
KSERVE_DIR = "kserve"
RUN_SCRIPT = "run.sh"
_NVIDIA_GPU = "nvidia.com/gpu"
# Set by the NVIDIA device plugin or --gpus to what was granted; a value of our
# own (typically "all") would expose every GPU of the node.
_GPU_GRANTED_ENV = "NVIDIA_VISIBLE_DEVICES"
_DNS_LABEL_MAX = 63


@dataclass(frozen=True)
class HostMount:
    name: str  # volume name in the pod
    host_path: str
    path: str  # inside the container
    read_only: bool
    kind: str  # hostPath type: CharDevice | Directory


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int  # -1: unlimited
    hard: int

    @property
    def docker(self) -> str:
        return f"{self.name}={self.soft}:{self.hard}"


def dns_label(text: str, fallback: str = "kbuild") -> str:
    """A Kubernetes object or volume name: lowercase alphanumerics and dashes, at most 63."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower())[:_DNS_LABEL_MAX].strip("-")
    return label or fallback


def label_value(text: str) -> str:
    """A Kubernetes label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:_DNS_LABEL_MAX].strip("._-")


def _mounts(plan: Plan) -> list[HostMount]:
    runtime = plan.spin.runtime
    mounts: list[HostMount] = []
    used: set[str] = set()

    def name_for(prefix: str, path: str) -> str:
        base = dns_label(f"{prefix}-{path}")
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base[: _DNS_LABEL_MAX - len(str(n)) - 1]}-{n}"
        used.add(name)
        return name

    for device in runtime.get("devices") or []:
        device = str(device)
        mounts.append(HostMount(name_for("device", device), device, device, False, "CharDevice"))
    for volume in runtime.get("volumes") or []:
        parts = str(volume).split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise SpinError(f"spin {plan.spin.name}: runtime.volumes entry {volume!r} is not HOST:CONTAINER[:ro|rw]")
        mounts.append(HostMount(name_for("host", parts[1]), parts[0], parts[1], parts[2:] == ["ro"], "Directory"))
    return mounts


def _ulimits(plan: Plan) -> list[Ulimit]:
    limits: list[Ulimit] = []
    for name, value in sorted((plan.spin.runtime.get("ulimits") or {}).items()):
        text = str(value)
        soft, _, hard = text.partition(":")
        try:
            limits.append(Ulimit(str(name), int(soft), int(hard or soft)))
        except ValueError:
            raise SpinError(
                f"spin {plan.spin.name}: runtime.ulimits.{name} must be N, -1 or SOFT:HARD, not {value!r}"
            ) from None
    return limits


def _resources(plan: Plan) -> dict[str, str]:
    return {str(k): str(v) for k, v in sorted((plan.spin.runtime.get("resources") or {}).items())}


def _env(plan: Plan, resources: Mapping[str, str], drain_s: float) -> dict[str, str]:
    env = {str(k): str(v) for k, v in sorted((plan.spin.runtime.get("env") or {}).items())}
    if drain_s:
        env[DRAIN_ENV] = f"{drain_s:g}"
    if _NVIDIA_GPU in resources:
        env.pop(_GPU_GRANTED_ENV, None)
    return env


def _values(
    plan: Plan, settings: ImageSettings, measured: Mapping[str, Any] | None = None, image: str | None = None
) -> dict[str, Any]:
    """Everything the templates need, computed once."""
    pipeline = plan.pipeline
    deploy = deploy_settings(pipeline)
    name = dns_label(pipeline.name)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "kbuild"}
    if pipeline.version and label_value(pipeline.version):
        labels["app.kubernetes.io/version"] = label_value(pipeline.version)
    resources = _resources(plan)
    mounts = _mounts(plan)
    ulimits = _ulimits(plan)
    ports = dict(sorted(settings.ports.items()))
    probe: dict[str, Any] | None = None
    if "http" in ports:
        probe = {"kind": "http", "port": "http"}
    elif ports:
        probe = {"kind": "tcp", "port": next(iter(ports))}
    return {
        "kbuild_version": __version__,
        "name": name,
        "pipeline": pipeline.name,
        "spin": plan.spin.name,
        "image": image or settings.tag,
        "replicas": max(deploy.min_replicas, 1) if deploy.scale_on != "none" else deploy.max_replicas,
        "deploy": deploy,
        "sizing": sizing(deploy, measured),
        "secrets": list(deploy.secrets),
        "secret": deploy.secret,
        "probe_period": PROBE_PERIOD_S,
        "python": settings.python,
        "uid": USER_ID,
        "labels": labels,
        "selector": {"app.kubernetes.io/name": name},
        "ports": ports,
        "probe": probe,
        "env": _env(plan, resources, deploy.drain_s),
        "shutdown_grace_s": f"{SHUTDOWN_GRACE_S:g}",
        "grace_margin_s": f"{GRACE_MARGIN_S:g}",
        "resources": resources,
        "mounts": mounts,
        "devices": [m for m in mounts if m.kind == "CharDevice"],
        "ulimits": ulimits,
        "privileged": any(m.kind == "CharDevice" for m in mounts),
        "port_env": HTTP_PORT_ENV,
    }


def _ulimit_check(values: Mapping[str, Any]) -> str:
    return (
        template_environment()
        .get_template("k8s/ulimit-check.py.j2")
        .render(
            ulimits=[[u.name, u.soft, u.hard] for u in values["ulimits"]],
        )
    )


def render_manifests(
    plan: Plan, settings: ImageSettings, measured: Mapping[str, Any] | None = None, image: str | None = None
) -> dict[str, str]:
    """File name -> YAML text; the Service only where the pipeline listens on a port;
    the PodDisruptionBudget, the one autoscaler and the kustomization (scaling.py)."""
    return _manifests(plan, _values(plan, settings, measured, image))


def _manifests(plan: Plan, values: Mapping[str, Any]) -> dict[str, str]:
    env = template_environment()
    files = {
        "deployment.yaml": env.get_template("k8s/deployment.yaml.j2").render(
            **values, ulimit_check=_ulimit_check(values) if values["ulimits"] else None
        ),
    }
    if values["ports"]:
        files["service.yaml"] = env.get_template("k8s/service.yaml.j2").render(**values)
    files.update(scaling_manifests(plan, values))
    files["kustomization.yaml"] = kustomization(list(files))
    for file_name, text in files.items():
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as error:  # a template bug, never the user's
            raise BuildError(f"rendered {K8S_DIR}/{file_name} is not valid YAML", [str(error)]) from None
    return files


def _docker_flags(values: Mapping[str, Any]) -> list[str]:
    # docker stop's default is SIGKILL after 10 s: give the drain and shutdown their time
    flags = ["--read-only", "--tmpfs=/tmp", f"--stop-timeout={values['deploy'].grace_s}"]
    if not values["privileged"]:
        flags += ["--cap-drop=ALL", "--security-opt=no-new-privileges"]
    flags += [f"--device={m.host_path}" for m in values["devices"]]
    for mount in values["mounts"]:
        if mount.kind == "Directory":
            flags.append(f"--volume={mount.host_path}:{mount.path}{':ro' if mount.read_only else ''}")
    flags += [f"--ulimit={u.docker}" for u in values["ulimits"]]
    flags += [f"--env={k}={v}" for k, v in values["env"].items()]
    # a secret passes from the caller's environment, never written here
    flags += [f"--env={ref.variable}" for ref in values["secrets"]]
    gpus = values["resources"].get(_NVIDIA_GPU)
    if gpus:
        flags.append(f"--gpus={gpus}")
    return [shlex.quote(f) for f in flags]


def render_run_script(plan: Plan, settings: ImageSettings) -> str:
    return _run_script(_values(plan, settings))


def _run_script(values: Mapping[str, Any]) -> str:
    others = [k for k in values["resources"] if k != _NVIDIA_GPU]
    return (
        template_environment()
        .get_template("run.sh.j2")
        .render(**values, flags=_docker_flags(values), unmapped_resources=others)
    )


def render_deployment(
    plan: Plan, settings: ImageSettings, measured: Mapping[str, Any] | None = None, image: str | None = None
) -> dict[str, str]:
    """k8s/*.yaml, kserve/*.yaml and run.sh: path relative to the output folder -> text.
    `image`: what the manifests run, REPO@sha256:DIGEST where the digest is known
    (assembled images), else the tag."""
    values = _values(plan, settings, measured, image)
    files = {f"{K8S_DIR}/{name}": text for name, text in _manifests(plan, values).items()}
    files.update({f"{KSERVE_DIR}/{name}": text for name, text in kserve_manifests(plan, values).items()})
    # run.sh runs what the engine here holds: the tag (a loaded image has no registry digest)
    files[RUN_SCRIPT] = _run_script({**values, "image": settings.tag})
    return files


def write_deployment(output_dir: Path, files: Mapping[str, str]) -> list[Path]:
    """Write rendered deployment files into output_dir; return their paths."""
    for name in (K8S_DIR, KSERVE_DIR):  # e.g. a Service from a build whose pipeline had ports
        shutil.rmtree(output_dir / name, ignore_errors=True)
    (output_dir / K8S_DIR).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in sorted(files.items()):
        path = output_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if name == RUN_SCRIPT:
            path.chmod(0o755)
        written.append(path)
    return written
