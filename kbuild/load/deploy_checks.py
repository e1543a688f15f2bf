"""Checks of the deploy section that the schema cannot express: a replica
range that is empty or starts above the topic's partitions, a minimum of zero
an HPA cannot reach, lag scaling with no stream to lag."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kbuild.errors import Problem
from kbuild.load.documents import Parts
from kbuild.runtime.contract.references import reference_name

if TYPE_CHECKING:
    from kbuild.load.checks import Checker


def check_deploy(checker: Checker) -> None:
    deploy = checker.data.get("deploy")
    if not isinstance(deploy, Mapping):
        return
    serve = checker.data.get("serve")
    streams = isinstance(serve, Mapping) and serve.get("kafka") is not None
    scale_on = deploy.get("scale_on", "kafka_lag" if streams else "cpu")
    replicas = deploy.get("replicas")
    low = replicas.get("min", 1) if isinstance(replicas, Mapping) else 1
    high = replicas.get("max", 4) if isinstance(replicas, Mapping) else 4
    if isinstance(low, int) and isinstance(high, int) and low > high:
        checker.add(("deploy", "replicas", "min"), f"min {low} is above max {high}")
    partitions = deploy.get("partitions") if streams else None
    if isinstance(low, int) and isinstance(partitions, int) and low > partitions:
        checker.add(
            ("deploy", "replicas", "min"),
            f"min {low} is above the source topic's {partitions} partitions: a consumer group gives "
            f"each partition to one replica, so replicas beyond {partitions} would idle",
        )
    if low == 0 and scale_on != "kafka_lag":
        checker.add(
            ("deploy", "replicas", "min"),
            "min 0 needs scale_on: kafka_lag (KEDA can scale a stream to zero); "
            f"a HorizontalPodAutoscaler ({scale_on}) cannot reach zero replicas",
        )
    if scale_on == "kafka_lag" and not streams:
        checker.add(
            ("deploy", "scale_on"), "kafka_lag scales on a consumer group's lag: the pipeline serves no serve.kafka"
        )
    for key in ("kafka_lag_target", "partitions"):
        if key in deploy and not streams:
            checker.add(("deploy", key), f"{key} applies to a pipeline with serve.kafka; remove it", at_key=True)


_SECRET_KEY = re.compile(r"(password|secret|token|credentials?|\.key)$", re.IGNORECASE)
_CLIENT_SECTIONS = (("kafka", "client"), ("kafka", "consumer"), ("kafka", "producer"))


def secret_settings(data: Mapping[str, Any]) -> list[tuple[Parts, Any]]:
    """(where, value) of every client setting that holds a secret or may: the
    Kafka settings named like one, and the MQTT password."""
    serve = data.get("serve")
    found: list[tuple[Parts, Any]] = []
    if not isinstance(serve, Mapping):
        return found
    for transport, section in _CLIENT_SECTIONS:
        settings = (serve.get(transport) or {}).get(section) if isinstance(serve.get(transport), Mapping) else None
        for key, value in (settings or {}).items() if isinstance(settings, Mapping) else ():
            if _SECRET_KEY.search(str(key)):
                found.append((("serve", transport, section, str(key)), value))
    mqtt = serve.get("mqtt")
    if isinstance(mqtt, Mapping) and "password" in mqtt:
        found.append((("serve", "mqtt", "password"), mqtt["password"]))
    return found


def literal_secrets(checker: Checker) -> list[Problem]:
    """Secrets written in the pipeline: fine for a zipapp on one's own machine,
    refused for images and contexts (which would carry them)."""
    problems = []
    for parts, value in secret_settings(checker.data):
        if reference_name(value) is None:
            name = re.sub(r"[^A-Z0-9]+", "_", "_".join(str(p) for p in parts[1:]).upper()).strip("_")
            problems.append(
                checker.doc.problem(
                    parts,
                    f'a literal secret would be written into the image; write "${{{name}}}" and give '
                    f"{name} to the container (the Deployment takes it from the deploy.secret Secret)",
                )
            )
    return problems
