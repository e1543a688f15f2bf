"""Deployment files: k8s/ manifests that validate against the Kubernetes
schemas, and run.sh with the equivalent docker run flags, for the spins'
runtime needs (none, a GPU, the vector engine)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
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
from tests.helpers.text import replace_once

# the oldest Kubernetes still in common support, and the newest schemas shipped
K8S_VERSIONS = ("1.28", str(kubernetes_validate.latest_version()))
LOCK_SHA = "0" * 64


def validate(document: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


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
    proc = kbuild("--spin", "cpu-linux-x86_64", "--target", "context", "--tag", "registry.example.com/ml/iris:1.0.0",
                  "-o", tmp_path / "out", folder / "pipeline.yaml")
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
    assert main["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                       "capabilities": {"drop": ["ALL"]}}
    assert "resources" not in main and "initContainers" not in pod
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
    script = run_script("cpu-linux-x86_64")
    assert "--read-only" in script and "--cap-drop=ALL" in script and "--gpus" not in script


def test_cuda_spins_ask_for_a_gpu() -> None:
    for spin in ("cuda12-linux-x86_64", "cuda13-linux-x86_64"):
        main = container(manifests(spin)["deployment.yaml"])
        assert main["resources"]["limits"] == {"nvidia.com/gpu": "1"}
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
    assert host_paths == {"/dev/ve0": "CharDevice", "/dev/veslot0": "CharDevice",
                          "/var/opt/nec/ve/veos": "Directory"}
    assert sorted(mounts[name] for name, v in volumes.items() if "hostPath" in v) == [
        "/dev/ve0", "/dev/veslot0", "/var/opt/nec/ve/veos"]
    assert main["securityContext"]["privileged"] is True  # the device cgroup, without a device plugin
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env == {"VE_NODE_NUMBER": "0", "VE_OMP_NUM_THREADS": "8"}
    # no ulimit field in Kubernetes: an unprivileged init container checks, an annotation records
    assert pod["initContainers"][0]["name"] == "check-ulimits"
    assert pod["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert deployment["spec"]["template"]["metadata"]["annotations"]["kbuild/ulimits"] == "memlock=-1:-1"
    script = run_script("aurora-linux")
    for flag in ("--device=/dev/ve0", "--device=/dev/veslot0", "--volume=/var/opt/nec/ve/veos:/var/opt/nec/ve/veos",
                 "--ulimit=memlock=-1:-1", "--env=VE_NODE_NUMBER=0", "--env=VE_OMP_NUM_THREADS=8"):
        assert flag in script


def _ulimit_check(spin: str | Path) -> list[str]:
    init = manifests(str(spin))["deployment.yaml"]["spec"]["template"]["spec"]["initContainers"][0]
    assert init["name"] == "check-ulimits"
    return [sys.executable, *init["command"][1:]]  # this machine's Python for the image's


def _run_limited(command: list[str], soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard)))


def test_the_ulimit_check_stops_a_pod_the_node_does_not_grant() -> None:
    proc = _run_limited(_ulimit_check("aurora-linux"), 65536, 65536)
    assert proc.returncode != 0
    assert "memlock is 65536:65536, needs unlimited:unlimited" in proc.stderr
    assert "LimitMEMLOCK=infinity" in proc.stderr


def test_the_ulimit_check_passes_where_the_node_grants_enough(tmp_path: Path) -> None:
    spin = tmp_path / "finite-memlock.yaml"
    spin.write_text("kbuild-spin: 1\nname: finite-memlock\nextends: aurora-linux\n"
                    "runtime: {ulimits: {memlock: \"32768:65536\"}}\n")
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
    assert set(files) == {"deployment.yaml"}
    main = container(files["deployment.yaml"])
    assert "ports" not in main and "readinessProbe" not in main and "livenessProbe" not in main


def test_names_and_labels_follow_kubernetes_rules() -> None:
    assert dns_label("iris-") == "iris"
    assert len(dns_label("a" * 80)) == 63
    assert label_value("1.0.0+local.7") == "1.0.0_local.7"
    assert label_value("-x-") == "x"
