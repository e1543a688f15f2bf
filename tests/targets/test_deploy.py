"""Deployment files: k8s/ manifests that validate against the Kubernetes
schemas, and run.sh with the equivalent docker run flags, for the spins'
runtime needs (none, a GPU, the vector engine)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kbuild.build import load_plan
from kbuild.targets.deploy import (
    dns_label,
    label_value,
    render_manifests,
    render_run_script,
)
from kbuild.targets.image_settings import image_settings
from tests.helpers.build import EXAMPLES, copy_example, kbuild
from tests.helpers.manifests import kustomize
from tests.helpers.manifests import validate_manifest as validate
from tests.helpers.text import replace_once

LOCK_SHA = "0" * 64


def manifests(spin: str, pipeline: Path = EXAMPLES / "iris" / "pipeline.yaml") -> dict[str, dict[str, Any]]:
    plan = load_plan(pipeline, spin)
    rendered = render_manifests(plan, image_settings(plan, LOCK_SHA, None, None))
    documents = {name: yaml.safe_load(text) for name, text in rendered.items()}
    for document in documents.values():
        validate(document)
    return documents


def run_script(spin: str, pipeline: Path = EXAMPLES / "iris" / "pipeline.yaml") -> str:
    plan = load_plan(pipeline, spin)
    script = render_run_script(plan, image_settings(plan, LOCK_SHA, None, None))
    syntax = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    return script


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_the_files_beside_a_build_validate(tmp_path: Path) -> None:
    folder = copy_example("iris", tmp_path)
    proc = kbuild(
        "--spin",
        "cpu-linux-x86_64",
        "--target",
        "context",
        "--tag",
        "registry.example.com/ml/iris:1.0.0",
        "-o",
        tmp_path / "out",
        folder / "pipeline.yaml",
    )
    assert proc.returncode == 0, proc.stderr
    k8s = tmp_path / "out" / "k8s"
    deployment = yaml.safe_load((k8s / "deployment.yaml").read_text())
    service = yaml.safe_load((k8s / "service.yaml").read_text())
    validate(deployment)
    validate(service)
    main = container(deployment)
    assert main["image"] == "registry.example.com/ml/iris:1.0.0"
    assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert "registry.example.com/ml/iris:1.0.0" in (tmp_path / "out" / "run.sh").read_text()


def test_cpu_spin_runs_restricted_and_non_root() -> None:
    deployment = manifests("cpu-linux-x86_64")["deployment.yaml"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    main = container(deployment)
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # nothing measured here (no samples run): one core and the stated default memory
    assert main["resources"] == {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "512Mi"}}
    assert "initContainers" not in pod
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
    script = run_script("cpu-linux-x86_64")
    assert "--read-only" in script and "--cap-drop=ALL" in script and "--gpus" not in script


def test_cuda_spins_ask_for_a_gpu() -> None:
    for spin in ("cuda12-linux-x86_64", "cuda13-linux-x86_64"):
        main = container(manifests(spin)["deployment.yaml"])
        assert main["resources"]["limits"] == {"memory": "512Mi", "nvidia.com/gpu": "1"}
        env = {e["name"]: e["value"] for e in main["env"]}
        # the device plugin says which GPUs were granted; "all" would expose every one
        assert "NVIDIA_VISIBLE_DEVICES" not in env
        assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
        script = run_script(spin)
        assert "--gpus=1" in script and "NVIDIA_VISIBLE_DEVICES" not in script


def test_aurora_gets_the_ve_device_veos_socket_folder_and_memlock() -> None:
    deployment = manifests("aurora-linux")["deployment.yaml"]
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    host_paths = {v["hostPath"]["path"]: v["hostPath"]["type"] for v in volumes.values() if "hostPath" in v}
    assert host_paths == {"/dev/ve0": "CharDevice", "/dev/veslot0": "CharDevice", "/var/opt/nec/ve/veos": "Directory"}
    assert sorted(mounts[name] for name, v in volumes.items() if "hostPath" in v) == [
        "/dev/ve0",
        "/dev/veslot0",
        "/var/opt/nec/ve/veos",
    ]
    assert main["securityContext"]["privileged"] is True  # the device cgroup, without a device plugin
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env == {"VE_NODE_NUMBER": "0", "VE_OMP_NUM_THREADS": "8"}
    # no ulimit field in Kubernetes: an unprivileged init container checks, an annotation records
    assert pod["initContainers"][0]["name"] == "check-ulimits"
    assert pod["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert deployment["spec"]["template"]["metadata"]["annotations"]["kbuild/ulimits"] == "memlock=-1:-1"
    script = run_script("aurora-linux")
    for flag in (
        "--device=/dev/ve0",
        "--device=/dev/veslot0",
        "--volume=/var/opt/nec/ve/veos:/var/opt/nec/ve/veos",
        "--ulimit=memlock=-1:-1",
        "--env=VE_NODE_NUMBER=0",
        "--env=VE_OMP_NUM_THREADS=8",
    ):
        assert flag in script


def _ulimit_check(spin: str | Path) -> list[str]:
    init = manifests(str(spin))["deployment.yaml"]["spec"]["template"]["spec"]["initContainers"][0]
    assert init["name"] == "check-ulimits"
    return [sys.executable, *init["command"][1:]]  # this machine's Python for the image's


def _run_limited(command: list[str], soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard)),
    )


def test_the_ulimit_check_stops_a_pod_the_node_does_not_grant() -> None:
    proc = _run_limited(_ulimit_check("aurora-linux"), 65536, 65536)
    assert proc.returncode != 0
    assert "memlock is 65536:65536, needs unlimited:unlimited" in proc.stderr
    assert "LimitMEMLOCK=infinity" in proc.stderr


def test_the_ulimit_check_passes_where_the_node_grants_enough(tmp_path: Path) -> None:
    spin = tmp_path / "finite-memlock.yaml"
    spin.write_text(
        'kbuild-spin: 1\nname: finite-memlock\nextends: aurora-linux\nruntime: {ulimits: {memlock: "32768:65536"}}\n'
    )
    command = _ulimit_check(spin)
    proc = _run_limited(command, 65536, 65536)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ulimits ok"
    assert _run_limited(command, 16384, 65536).returncode != 0


def _pipeline(tmp_path: Path, serve: str) -> Path:
    folder = copy_example("iris", tmp_path)
    text = replace_once((folder / "pipeline.yaml").read_text(), "serve:\n  http: {port: 8080}\n", serve)
    (folder / "pipeline.yaml").write_text(text)
    return folder / "pipeline.yaml"


def test_grpc_only_probes_the_grpc_port(tmp_path: Path) -> None:
    files = manifests("cpu-linux-x86_64", _pipeline(tmp_path, "serve:\n  grpc: {port: 9001}\n"))
    main = container(files["deployment.yaml"])
    assert main["ports"] == [{"name": "grpc", "containerPort": 9001, "protocol": "TCP"}]
    assert main["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert files["service.yaml"]["spec"]["ports"][0]["port"] == 9001


def test_a_stream_only_pipeline_has_no_service_and_no_probes(tmp_path: Path) -> None:
    serve = "serve:\n  kafka: {bootstrap_servers: 'kafka:9092', source: {topic: data}, sink: {topic: out}}\n"
    files = manifests("cpu-linux-x86_64", _pipeline(tmp_path, serve))
    # no Service; KEDA scales it on the consumer group's lag, no HPA
    assert set(files) == {"deployment.yaml", "pdb.yaml", "scaledobject.yaml", "kustomization.yaml"}
    main = container(files["deployment.yaml"])
    assert "ports" not in main and "readinessProbe" not in main and "livenessProbe" not in main


def test_names_and_labels_follow_kubernetes_rules() -> None:
    assert dns_label("iris-") == "iris"
    assert len(dns_label("a" * 80)) == 63
    assert label_value("1.0.0+local.7") == "1.0.0_local.7"
    assert label_value("-x-") == "x"


def _build_context(tmp_path: Path, pipeline: Path, *extra: str) -> Path:
    proc = kbuild(
        "--spin",
        "cpu-linux-x86_64",
        "--target",
        "context",
        "--tag",
        "registry.example.com/ml/x:1",
        "-o",
        tmp_path / "out",
        *extra,
        pipeline,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "out"


def _documents(folder: Path) -> dict[str, dict[str, Any]]:
    found = {p.name: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))}
    for document in found.values():
        validate(document)
    return found


def test_an_http_pipeline_gets_an_hpa_sized_from_measurement(tmp_path: Path) -> None:
    folder = copy_example("iris", tmp_path)
    out = _build_context(tmp_path, folder / "pipeline.yaml")
    report = json.loads((out / "build-report.json").read_text())
    measured = report["measured"]
    assert measured["peak_rss_bytes"] > 20 << 20 and 0 < measured["ready_s"] < 60
    k8s = _documents(out / "k8s")
    assert set(k8s) == {"deployment.yaml", "service.yaml", "pdb.yaml", "hpa.yaml", "kustomization.yaml"}
    hpa = k8s["hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4)
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    main = container(k8s["deployment.yaml"])
    memory = main["resources"]["requests"]["memory"]
    assert memory == main["resources"]["limits"]["memory"] and memory.endswith("Mi")
    assert int(memory[:-2]) << 20 > measured["peak_rss_bytes"]  # above the measured peak, with the margin
    assert main["startupProbe"]["failureThreshold"] * main["startupProbe"]["periodSeconds"] > measured["ready_s"]
    assert "measured at build time" in (out / "k8s" / "deployment.yaml").read_text()
    pdb = k8s["pdb.yaml"]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"] == k8s["deployment.yaml"]["spec"]["selector"]
    # KServe: the runtime runs the image, the InferenceService names it and the v2 protocol
    kserve = _documents(out / "kserve")
    runtime, service = kserve["servingruntime.yaml"], kserve["inferenceservice.yaml"]
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    assert runtime["spec"]["containers"][0]["name"] == "kserve-container"
    assert runtime["spec"]["containers"][0]["image"] == "registry.example.com/ml/x:1"
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] == "v2"
    assert service["metadata"]["annotations"] == {
        "serving.kserve.io/deploymentMode": "Standard",
        "serving.kserve.io/autoscalerClass": "hpa",
    }
    rendered = kustomize(out / "k8s")
    assert sorted(d["kind"] for d in rendered) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]


STREAM = """serve:
  kafka:
    bootstrap_servers: kafka.example.com:9092
    group_id: iris-scorers
    source: {topic: measurements}
    sink: {topic: species}
    client:
      security.protocol: SASL_SSL
      sasl.mechanism: SCRAM-SHA-512
      sasl.username: "${KAFKA_USER}"
      sasl.password: "${KAFKA_PASSWORD}"
deploy:
  replicas: {min: 0, max: 12}
  partitions: 6
  kafka_lag_target: 50
  secret: iris-kafka
"""


def test_a_stream_gets_a_scaled_object_capped_at_its_partitions_and_one_secret(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, STREAM)
    proc = kbuild(
        "--spin",
        "cpu-linux-x86_64",
        "--target",
        "context",
        "--tag",
        "registry.example.com/ml/x:1",
        "-o",
        tmp_path / "out",
        pipeline,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning: deploy.replicas.max 12 is above the source topic's 6 partitions" in proc.stderr
    out = tmp_path / "out"
    k8s = _documents(out / "k8s")
    assert "hpa.yaml" not in k8s and "service.yaml" not in k8s
    scaled = k8s["scaledobject.yaml"]["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 6)
    trigger = scaled["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"] == {
        "bootstrapServers": "kafka.example.com:9092",
        "consumerGroup": "iris-scorers",
        "topic": "measurements",
        "lagThreshold": "50",
        "offsetResetPolicy": "earliest",
        "sasl": "scram_sha512",
        "tls": "enable",
    }
    auth = k8s["triggerauthentication.yaml"]
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert sorted(auth["spec"]["secretTargetRef"], key=lambda r: r["parameter"]) == [
        {"parameter": "password", "name": "iris-kafka", "key": "KAFKA_PASSWORD"},
        {"parameter": "username", "name": "iris-kafka", "key": "KAFKA_USER"},
    ]
    env = {e["name"]: e for e in container(k8s["deployment.yaml"])["env"]}
    for name in ("KAFKA_USER", "KAFKA_PASSWORD"):
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "iris-kafka", "key": name}}
    assert not (out / "kserve").exists()  # a stream has no inference endpoint for KServe
    # no secret value anywhere: only the ${NAME} reference, in the pipeline inside the context
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".sh", ".json"):
            assert "hunter2" not in path.read_text()
    run = (out / "run.sh").read_text()
    assert "--env=KAFKA_PASSWORD" in run and "--env=KAFKA_PASSWORD=" not in run
    assert sorted(d["kind"] for d in kustomize(out / "k8s")) == [
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    ]


def test_a_literal_password_is_refused_for_containers_showing_the_reference(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, STREAM.replace('"${KAFKA_PASSWORD}"', "hunter2"))
    proc = kbuild("--spin", "cpu-linux-x86_64", "--target", "context", "-o", tmp_path / "out", pipeline)
    assert proc.returncode == 3, proc.stderr
    assert "pipeline.yaml:" in proc.stderr and "serve.kafka.client" in proc.stderr.replace("$.", "")
    assert '"${KAFKA_CLIENT_SASL_PASSWORD}"' in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "k8s").exists()


@pytest.mark.parametrize(
    ("deploy", "phrase"),
    [
        ("deploy:\n  replicas: {min: 5, max: 2}\n", "min 5 is above max 2"),
        ("deploy:\n  replicas: {min: 0}\n", "cannot reach zero"),
        ("deploy:\n  scale_on: kafka_lag\n", "serves no serve.kafka"),
        ("deploy:\n  resources: {memory: lots}\n", "$.deploy.resources.memory"),
        ("deploy:\n  replica: {min: 1}\n", "replica"),
    ],
)
def test_a_bad_deploy_section_is_exit_3_with_its_line(tmp_path: Path, deploy: str, phrase: str) -> None:
    pipeline = _pipeline(tmp_path, "serve:\n  http: {port: 8080}\n" + deploy)
    proc = kbuild("validate", pipeline)
    assert proc.returncode == 3, proc.stderr
    assert phrase in proc.stderr and f"{pipeline.name}:" in proc.stderr


def test_a_minimum_above_the_partitions_is_refused_at_its_line(tmp_path: Path) -> None:
    stream = STREAM.split("deploy:")[0]
    pipeline = _pipeline(tmp_path, stream + "deploy:\n  replicas: {min: 6, max: 8}\n  partitions: 4\n")
    proc = kbuild("validate", pipeline)
    assert proc.returncode == 3, proc.stderr
    line = pipeline.read_text().splitlines().index("  replicas: {min: 6, max: 8}") + 1
    assert f"{pipeline.name}:{line}:" in proc.stderr, proc.stderr
    assert "min 6 is above the source topic's 4 partitions" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("deploy", "drain", "grace"),
    [("", None, 30), ("deploy:\n  drain_s: 15\n", "15", 45), ("deploy:\n  drain_s: 2.5\n", "2.5", 33)],
)
def test_the_grace_period_covers_the_drain_and_the_shutdown(
    tmp_path: Path, deploy: str, drain: str | None, grace: int
) -> None:
    pipeline = _pipeline(tmp_path, "serve:\n  http: {port: 8080}\n" + deploy)
    files = manifests("cpu-linux-x86_64", pipeline)
    pod = files["deployment.yaml"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == grace
    env = {e["name"]: e.get("value") for e in container(files["deployment.yaml"]).get("env") or []}
    assert env.get("KBUILD_DRAIN_S") == drain
    script = run_script("cpu-linux-x86_64", pipeline)
    assert f"--stop-timeout={grace}" in script
    assert (f"--env=KBUILD_DRAIN_S={drain}" in script) == (drain is not None)
