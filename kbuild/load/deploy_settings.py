"""The deploy section as the manifests need it: replicas, the one autoscaler,
the Secret, and the container's size, from the spec or from measurement.

Sizing: when the build ran the samples it measured the runtime's peak memory
and its time from start to answers (`measured` in the report). Unless
`deploy.resources` says otherwise, the memory request and limit are that peak
plus a quarter and 64 MiB (allocator and request buffers under load), the CPU
request one core, and the startup probe allows three times the measured time
plus 30 s (a node pulling and unpacking the image runs slower than the build).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kbuild.load.deploy_checks import secret_settings
from kbuild.load.pipeline import Pipeline
from kbuild.load.schema_errors import load_schema
from kbuild.runtime.contract.references import reference_name
from kbuild.runtime.contract.serve import SHUTDOWN_GRACE_S


def _schema_default(*path: str) -> int:
    """A deploy field's default, as the pipeline schema documents it: written there once."""
    node = load_schema("pipeline")["properties"]["deploy"]
    for key in path:
        node = node["properties"][key]
    return int(node["default"])


DEFAULT_MIN, DEFAULT_MAX = _schema_default("replicas", "min"), _schema_default("replicas", "max")
DEFAULT_CPU_TARGET = _schema_default("cpu_target_percent")
DEFAULT_LAG_TARGET = _schema_default("kafka_lag_target")
MEMORY_MARGIN = 1.25
MEMORY_HEADROOM_BYTES = 64 << 20
DEFAULT_MEMORY = "512Mi"  # where nothing was measured (a spin this machine cannot run)
STARTUP_FACTOR, STARTUP_SLACK_S = 3.0, 30.0
PROBE_PERIOD_S = 5
# SIGKILL comes this long after the runtime's own budget would have ended:
# time for the process to exit once its endpoints are closed
GRACE_MARGIN_S = 10.0
_MI = 1 << 20


@dataclass(frozen=True)
class Sizing:
    cpu: str
    memory: str
    startup_failure_threshold: int  # periods of PROBE_PERIOD_S the startup probe allows
    measured: bool  # memory and startup from the build's measurement
    source: str  # one line for the manifests: where the numbers come from


@dataclass(frozen=True)
class SecretRef:
    variable: str  # NAME of ${NAME}
    setting: str  # e.g. serve.kafka.client.sasl.password


@dataclass(frozen=True)
class DeploySettings:
    min_replicas: int
    max_replicas: int
    scale_on: str  # cpu | kafka_lag | none
    cpu_target_percent: int
    kafka_lag_target: int
    partitions: int | None
    drain_s: float  # KBUILD_DRAIN_S in the pod
    grace_s: int  # the pod's terminationGracePeriodSeconds: drain, shutdown budget, margin
    secret: str
    resources: Mapping[str, str]  # deploy.resources as written
    secrets: tuple[SecretRef, ...]
    warnings: tuple[str, ...]


def deploy_settings(pipeline: Pipeline) -> DeploySettings:
    deploy: Mapping[str, Any] = pipeline.document.get("deploy") or {}
    streams = pipeline.settings.kafka is not None
    replicas = deploy.get("replicas") or {}
    scale_on = str(deploy.get("scale_on", "kafka_lag" if streams else "cpu"))
    low = int(replicas.get("min", DEFAULT_MIN))
    high = int(replicas.get("max", DEFAULT_MAX))
    partitions = deploy.get("partitions")
    warnings = []
    if partitions is not None and high > int(partitions):
        warnings.append(
            f"deploy.replicas.max {high} is above the source topic's {partitions} partitions: "
            f"replicas beyond {partitions} would idle, so the autoscaler stops at {partitions}"
        )
        high = int(partitions)
    drain = float(deploy.get("drain_s", 0))
    refs = tuple(
        SecretRef(name, "serve." + ".".join(str(p) for p in parts[1:]))
        for parts, value in secret_settings(pipeline.document)
        if (name := reference_name(value)) is not None
    )
    refs += tuple(_other_refs(pipeline.document, {r.variable for r in refs}))
    return DeploySettings(
        min_replicas=low,
        max_replicas=high,
        scale_on=scale_on,
        cpu_target_percent=int(deploy.get("cpu_target_percent", DEFAULT_CPU_TARGET)),
        kafka_lag_target=int(deploy.get("kafka_lag_target", DEFAULT_LAG_TARGET)),
        partitions=int(partitions) if partitions is not None else None,
        drain_s=drain,
        grace_s=math.ceil(drain + SHUTDOWN_GRACE_S + GRACE_MARGIN_S),
        secret=str(deploy.get("secret") or f"{pipeline.name}-credentials".lower().replace("_", "-")),
        resources={str(k): str(v) for k, v in (deploy.get("resources") or {}).items()},
        secrets=refs,
        warnings=tuple(warnings),
    )


def _other_refs(document: Mapping[str, Any], known: set[str]) -> list[SecretRef]:
    """${NAME} in client settings not named like secrets (a SASL username, say)."""
    serve = document.get("serve") or {}
    found = []
    kafka = serve.get("kafka") if isinstance(serve, Mapping) else None
    for section in ("client", "consumer", "producer"):
        values = (kafka or {}).get(section) if isinstance(kafka, Mapping) else None
        for key, value in (values or {}).items():
            name = reference_name(value)
            if name and name not in known:
                known.add(name)
                found.append(SecretRef(name, f"serve.kafka.{section}.{key}"))
    mqtt = serve.get("mqtt") if isinstance(serve, Mapping) else None
    name = reference_name((mqtt or {}).get("username")) if isinstance(mqtt, Mapping) else None
    if name and name not in known:
        found.append(SecretRef(name, "serve.mqtt.username"))
    return found


def _mebibytes(n: float) -> str:
    return f"{math.ceil(n / _MI)}Mi"


def sizing(settings: DeploySettings, measured: Mapping[str, Any] | None) -> Sizing:
    override = settings.resources
    if measured:
        peak, ready = int(measured["peak_rss_bytes"]), float(measured["ready_s"])
        memory = _mebibytes(peak * MEMORY_MARGIN + MEMORY_HEADROOM_BYTES)
        budget = ready * STARTUP_FACTOR + STARTUP_SLACK_S
        source = (
            f"measured at build time: peak RSS {_mebibytes(peak)}, ready in {ready:.2f} s; memory = peak x "
            f"{MEMORY_MARGIN} + 64Mi, startup budget = {STARTUP_FACTOR:g} x ready + {STARTUP_SLACK_S:g} s"
        )
    else:
        memory, budget = DEFAULT_MEMORY, 120.0
        source = "not measured (the build could not run the samples for this spin): defaults"
    if override:
        source = f"deploy.resources ({', '.join(f'{k} {v}' for k, v in sorted(override.items()))}); " + source
    return Sizing(
        cpu=override.get("cpu", "1"),
        memory=override.get("memory", memory),
        startup_failure_threshold=max(3, math.ceil(budget / PROBE_PERIOD_S)),
        measured=bool(measured) and "memory" not in override,
        source=source,
    )
