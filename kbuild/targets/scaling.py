"""How the Deployment scales: a PodDisruptionBudget, and exactly one
autoscaler (DESIGN section 9):

    scale_on: cpu        a HorizontalPodAutoscaler (autoscaling/v2) on CPU utilisation
    scale_on: kafka_lag  a KEDA ScaledObject with a kafka trigger on the consumer
                         group's lag (and a TriggerAuthentication when the client
                         settings carry credentials: the same Secret as the pods')
    scale_on: none       neither

and the kustomization that applies the folder (`kubectl apply -k k8s/`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from kbuild import __version__
from kbuild.load.deploy_settings import DeploySettings
from kbuild.plan.pipeline_plan import Plan

_SASL = {
    "PLAIN": "plaintext",
    "SCRAM-SHA-256": "scram_sha256",
    "SCRAM-SHA-512": "scram_sha512",
    "OAUTHBEARER": "oauthbearer",
}


def dump(header: str, document: Mapping[str, Any]) -> str:
    lines = "".join(f"# {line}\n" for line in header.splitlines())
    return lines + yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False, width=120)


def _meta(values: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    return {"name": name or values["name"], "labels": dict(sorted(values["labels"].items()))}


def _target(values: Mapping[str, Any]) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": values["name"]}


def pdb(values: Mapping[str, Any]) -> str:
    return dump(
        f"{values['pipeline']}: at most one replica down at a time for voluntary disruptions (node drains).",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(values),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(values["selector"])}},
        },
    )


def hpa(values: Mapping[str, Any], deploy: DeploySettings) -> str:
    return dump(
        f"{values['pipeline']}: replicas {deploy.min_replicas}-{deploy.max_replicas} on CPU utilisation "
        f"({deploy.cpu_target_percent}% of the {values['sizing'].cpu} CPU request).",
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(values),
            "spec": {
                "scaleTargetRef": _target(values),
                "minReplicas": deploy.min_replicas,
                "maxReplicas": deploy.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": deploy.cpu_target_percent},
                        },
                    }
                ],
            },
        },
    )


def _kafka_auth(plan: Plan, deploy: DeploySettings) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(trigger metadata for SASL/TLS, TriggerAuthentication secret references)."""
    kafka = plan.pipeline.settings.kafka
    assert kafka is not None
    client = {**kafka.client, **kafka.consumer}
    metadata: dict[str, str] = {}
    protocol = str(client.get("security.protocol", "")).upper()
    mechanism = str(client.get("sasl.mechanism", client.get("sasl.mechanisms", "PLAIN"))).upper()
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        metadata["sasl"] = _SASL.get(mechanism, "plaintext")
    if protocol in ("SSL", "SASL_SSL"):
        metadata["tls"] = "enable"
    keys = {"sasl.username": "username", "sasl.password": "password", "ssl.key.password": "keyPassword"}
    refs = []
    for ref in deploy.secrets:
        parts = ref.setting.split(".", 3)  # serve, kafka, client|consumer|producer, the setting
        if len(parts) == 4 and parts[1] == "kafka" and parts[2] != "producer" and parts[3] in keys:
            refs.append({"parameter": keys[parts[3]], "name": deploy.secret, "key": ref.variable})
    return metadata, refs


def scaled_object(plan: Plan, values: Mapping[str, Any], deploy: DeploySettings) -> dict[str, str]:
    kafka = plan.pipeline.settings.kafka
    assert kafka is not None
    metadata, refs = _kafka_auth(plan, deploy)
    trigger: dict[str, Any] = {
        "type": "kafka",
        "metadata": {
            "bootstrapServers": kafka.bootstrap_servers,
            "consumerGroup": kafka.group_id,
            "topic": kafka.source.topic,
            "lagThreshold": str(deploy.kafka_lag_target),
            "offsetResetPolicy": "earliest",
            **metadata,
        },
    }
    files: dict[str, str] = {}
    auth_name = f"{values['name']}-kafka"
    if refs:
        trigger["authenticationRef"] = {"name": auth_name}
        files["triggerauthentication.yaml"] = dump(
            f"{values['pipeline']}: the Kafka credentials of the lag trigger, from the Secret {deploy.secret} "
            "(the same keys the pods read).",
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "TriggerAuthentication",
                "metadata": _meta(values, auth_name),
                "spec": {"secretTargetRef": refs},
            },
        )
    capped = f" (capped to the topic's {deploy.partitions} partitions)" if deploy.partitions else ""
    files["scaledobject.yaml"] = dump(
        f"{values['pipeline']}: replicas {deploy.min_replicas}-{deploy.max_replicas}{capped} on the lag of consumer "
        f"group {kafka.group_id} on {kafka.source.topic}, {deploy.kafka_lag_target} records per replica.\n"
        "KEDA (keda.sh) runs the HorizontalPodAutoscaler behind it. The lag it counts is the group's\n"
        "committed lag: kbuild_kafka_consumer_commit_lag_overall on each replica's /metrics, summed over the\n"
        "replicas (kbuild_kafka_consumer_lag_overall is what a replica has yet to read: a smaller number).",
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": _meta(values),
            "spec": {
                "scaleTargetRef": {"name": values["name"]},
                "minReplicaCount": deploy.min_replicas,
                "maxReplicaCount": deploy.max_replicas,
                "pollingInterval": 15,
                "cooldownPeriod": 300,
                "triggers": [trigger],
            },
        },
    )
    return files


def kustomization(names: Sequence[str]) -> str:
    return dump(
        f"Generated by kbuild {__version__}: kubectl apply -k k8s/",
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": sorted(names)},
    )


def scaling_manifests(plan: Plan, values: Mapping[str, Any]) -> dict[str, str]:
    deploy: DeploySettings = values["deploy"]
    files = {"pdb.yaml": pdb(values)}
    if deploy.scale_on == "cpu":
        files["hpa.yaml"] = hpa(values, deploy)
    elif deploy.scale_on == "kafka_lag":
        files.update(scaled_object(plan, values, deploy))
    return files
