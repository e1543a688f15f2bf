"""KServe: a ServingRuntime that runs the image and an InferenceService that
uses it, for pipelines with HTTP or gRPC endpoints (DESIGN section 9).

The model is inside the image, so the InferenceService names no storage; it
runs in KServe's Standard deployment mode (a plain Deployment, no Knative)
with the autoscaler class matching deploy.scale_on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kbuild.load.deploy_settings import DeploySettings
from kbuild.plan.pipeline_plan import Plan
from kbuild.runtime.contract.serve import GRPC_PORT_ENV, HTTP_PORT_ENV
from kbuild.targets.scaling import dump

_AUTOSCALER = {"cpu": "hpa", "kafka_lag": "keda", "none": "none"}


def kserve_manifests(plan: Plan, values: Mapping[str, Any]) -> dict[str, str]:
    settings = plan.pipeline.settings
    named = [t for t in ("http", "grpc") if t in values["ports"] and t not in settings.implied]
    if not named:
        return {}
    deploy: DeploySettings = values["deploy"]
    name = values["name"]
    runtime_name = f"{name}-kbuild"
    model_format = f"kbuild-{name}"
    ports = values["ports"]
    container_ports = []
    env = [{"name": k, "value": v} for k, v in sorted(values["env"].items())]
    if "http" in ports:
        container_ports.append({"name": "http1", "containerPort": ports["http"], "protocol": "TCP"})
        env.append({"name": HTTP_PORT_ENV, "value": str(ports["http"])})
    if "grpc" in ports:
        container_ports.append({"name": "h2c", "containerPort": ports["grpc"], "protocol": "TCP"})
        env.append({"name": GRPC_PORT_ENV, "value": str(ports["grpc"])})
    env += [
        {"name": ref.variable, "valueFrom": {"secretKeyRef": {"name": deploy.secret, "key": ref.variable}}}
        for ref in deploy.secrets
    ]
    sizing = values["sizing"]
    protocols = ["v2"] + (["grpc-v2"] if "grpc" in ports else [])
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": runtime_name, "labels": dict(sorted(values["labels"].items()))},
        "spec": {
            "supportedModelFormats": [{"name": model_format, "version": "1", "autoSelect": True}],
            "protocolVersions": protocols,
            "multiModel": False,
            "containers": [
                {
                    "name": "kserve-container",
                    "image": values["image"],
                    "args": ["serve"],
                    "env": env,
                    "ports": container_ports,
                    "resources": {
                        "requests": {"cpu": sizing.cpu, "memory": sizing.memory},
                        "limits": {"memory": sizing.memory},
                    },
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": values["uid"],
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }
    predictor: dict[str, Any] = {
        "minReplicas": max(deploy.min_replicas, 1),
        "maxReplicas": deploy.max_replicas,
        "model": {
            "modelFormat": {"name": model_format, "version": "1"},
            "runtime": runtime_name,
            "protocolVersion": "v2",
        },
    }
    if deploy.scale_on == "cpu":
        predictor.update(scaleMetric="cpu", scaleTarget=deploy.cpu_target_percent)
    service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": dict(sorted(values["labels"].items())),
            "annotations": {
                "serving.kserve.io/deploymentMode": "Standard",
                "serving.kserve.io/autoscalerClass": _AUTOSCALER[deploy.scale_on],
            },
        },
        "spec": {"predictor": predictor},
    }
    header = f"{values['pipeline']} on KServe (Standard mode): kubectl apply -f kserve/"
    return {
        "servingruntime.yaml": dump(
            header + "\nThe runtime: the kbuild image speaks the Open Inference Protocol.", runtime
        ),
        "inferenceservice.yaml": dump(header, service),
    }
