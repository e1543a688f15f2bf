"""The image target against a real Docker Engine: the iris image assembled on
the local base image (python3, no pip) and loaded, served with host
networking, its commands in the container, non-root, labels, layers reused
after a model change, the engine's absence, a failing setup step, and --push
to a local registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.build import EXAMPLES, copy_example, free_port, kbuild, post_json
from tests.helpers.docker_engine import (
    SESSION,
    ImageBuild,
    Registry,
    build_image,
    built,
    docker_cli,
    inspect,
    remove_image,
    run_kbuild,
    session_tag,
)

LABELS = ["setosa", "versicolor", "virginica"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.8, 5.1, 1.5]]


def onnx_answer(rows: list[list[float]]) -> tuple[list[str], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(EXAMPLES / "iris/models/iris.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(["probabilities"], {"float_input": np.array(rows, dtype=np.float32)})[0]
    return [LABELS[i] for i in probs.argmax(axis=1)], probs.max(axis=1)


def test_report_describes_the_image(iris_image: ImageBuild) -> None:
    report, image = iris_image.report, iris_image.report["image"]
    assert iris_image.stdout.strip() == iris_image.tag
    assert report["target"] == "image"
    assert report["artifact"] == {"image": iris_image.tag, "id": image["id"], "digest": image["digest"]}
    engine_view = inspect(iris_image.tag)
    assert image["id"] == engine_view["Id"] == image["id"]
    # loaded, not built: the engine's layers are the base's and the assembled ones
    assert image["assembled"] is True
    names = [layer["name"] for layer in image["layers"]]
    assert names[-3:] == ["runtime", "models", "config"] and all(n.startswith("package") for n in names[:-3])
    assert len(engine_view["RootFS"]["Layers"]) == image["base"]["layers"] + len(names)
    # what the layers add, uncompressed, is about what the engine counts over the base
    base_bytes = inspect(image["base"]["name"])["Size"]
    assert abs((engine_view["Size"] - base_bytes) - image["bytes_over_base"]) < 0.02 * image["bytes_over_base"]
    assert image["reference"] == f"kbuild-test/iris@{image['digest']}"
    assert report["verification"]["status"] == "passed"
    assert "inside the container" in report["verification"]["detail"]
    assert {"lock", "fetch", "render", "image", "load", "deploy", "verify"} <= set(report["timings_s"])


def test_progress_is_one_line_per_layer(iris_image: ImageBuild) -> None:
    lines = [line for line in iris_image.stderr.splitlines() if line.startswith("layer ")]
    assert [line.split(":")[0] for line in lines] == [
        f"layer {n['name']}" for n in iris_image.report["image"]["layers"]
    ]
    assert all(len(line) < 130 for line in lines)


def test_labels_user_entry_point_and_healthcheck(iris_image: ImageBuild) -> None:
    config = inspect(iris_image.tag)["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "iris"
    assert labels["org.opencontainers.image.version"] == "1.0.0"
    assert labels["org.opencontainers.image.base.name"] == iris_image.report["image"]["base"]["name"]
    assert labels["kbuild.spin"] == "cpu-linux-x86_64"
    assert labels["kbuild.lock.sha256"] == iris_image.report["lock"]["sha256"]
    assert labels["kbuild.pipeline.name"] == "iris"
    assert labels["kbuild.pipeline.version"] == "1.0.0"
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["python3", "-m", "kbuild.runtime", "--root", "/opt/kbuild"]
    assert config["Cmd"] == ["serve"]
    assert "/v2/health/ready" in " ".join(config["Healthcheck"]["Test"])
    assert "8080/tcp" in config["ExposedPorts"]


def test_image_runs_as_non_root_without_pip(iris_image: ImageBuild) -> None:
    probe = "import os, importlib.util as u; print(os.getuid(), os.getgid(), u.find_spec('pip') is None)"
    proc = docker_cli("run", "--rm", "--network", "none", "--entrypoint", "python3", iris_image.tag, "-c", probe)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["10001", "10001", "True"]


def test_serves_predict_with_host_networking(iris_image: ImageBuild) -> None:
    port = free_port()
    name = f"kbuild-test-serve-{port}"
    proc = docker_cli(
        "run", "-d", "--name", name, "--network", "host", "-e", f"KBUILD_HTTP_PORT={port}", iris_image.tag
    )
    assert proc.returncode == 0, proc.stderr
    try:
        _wait_ready(port, name)
        status, body = post_json(port, "/predict", {"features": ROWS})
        assert status == 200, body
        labels, probs = onnx_answer(ROWS)
        assert body["label"] == labels
        np.testing.assert_allclose(body["probability"], probs, rtol=1e-6)
        # the server runs as the image's user, not root
        top = docker_cli("top", name).stdout.splitlines()
        server = [row.split() for row in top[1:] if "kbuild.runtime" in row]
        assert server and server[0][0] == "10001", top
        # the HEALTHCHECK (the image's Python, no curl) turns healthy
        assert _health(name, timeout=90) == "healthy"
        # `docker stop` sends SIGTERM: the server drains and exits 0
        assert docker_cli("stop", "-t", "30", name).returncode == 0
        state = json.loads(docker_cli("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, docker_cli("logs", name).stderr
    finally:
        docker_cli("rm", "-f", name)


def _wait_ready(port: int, name: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"container not ready on port {port}: {docker_cli('logs', name).stderr[-2000:]}")


def _health(name: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = "?"
    while time.monotonic() < deadline:
        status = json.loads(docker_cli("inspect", name).stdout)[0]["State"]["Health"]["Status"]
        if status != "starting":
            return str(status)
        time.sleep(1)
    return status


def test_commands_in_the_container(iris_image: ImageBuild) -> None:
    """predict through run.sh (the flags the manifests stand for: read-only,
    no capabilities), check as the build ran it, info."""
    run_sh = iris_image.out / "run.sh"
    predict = run_script(
        run_sh, "predict", stdin=json.dumps({"features": ROWS[:1]}), env={"KBUILD_IMAGE": iris_image.tag}
    )
    assert predict.returncode == 0, predict.stderr
    assert json.loads(predict.stdout)["label"] == ["setosa"]
    check = docker_cli("run", "--rm", "--network", "none", iris_image.tag, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 passed, 0 failed" in check.stdout
    # the image's files, wheels' included, are those the build listed
    assert check.stdout.startswith("artifact files: ok (")
    info = docker_cli("run", "--rm", "--network", "none", iris_image.tag, "info")
    assert json.loads(info.stdout)["target"] == "image"


def run_script(script: Path, *args: str, stdin: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(script), *args], input=stdin, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


def test_a_model_change_rebuilds_only_the_last_layers(base_image: str, tmp_path: Path) -> None:
    """Two builds back to back (the first one all from the cache of the session's
    image), the second with new model bytes."""
    import onnx

    first, second = tmp_path / "first", tmp_path / "second"
    tags = (session_tag("model-before"), session_tag("model-after"))
    folders = [copy_example("iris", first), copy_example("iris", second)]
    model = onnx.load(str(folders[1] / "models/iris.onnx"))
    model.doc_string = "retrained"  # new bytes, same answers
    onnx.save(model, str(folders[1] / "models/iris.onnx"))
    try:
        before, after = (
            built(tmp, folder / "pipeline.yaml", build_image(tmp, folder / "pipeline.yaml", base_image, tag), tag)
            for tmp, folder, tag in zip((first, second), folders, tags, strict=True)
        )
        layers = [inspect(tag)["RootFS"]["Layers"] for tag in tags]
        assert len(layers[0]) == len(layers[1])
        changed = [i for i, (a, b) in enumerate(zip(*layers, strict=True)) if a != b]
        # the models layer and the config layer after it; base, packages and runtime are reused
        assert changed == [len(layers[1]) - 2, len(layers[1]) - 1], layers
        assert after.report["verification"]["status"] == "passed"
        assert before.report["image"]["id"] != after.report["image"]["id"]
    finally:
        for tag in tags:
            remove_image(tag)


def test_no_engine_is_exit_5_naming_docker_host(tmp_path: Path) -> None:
    folder = copy_example("iris", tmp_path)
    proc = run_kbuild(
        "--target",
        "image",
        "-o",
        tmp_path / "out",
        folder / "pipeline.yaml",
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )
    assert proc.returncode == 5, proc.stderr
    assert "DOCKER_HOST" in proc.stderr and "dockerd" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failing_setup_step_is_exit_5_with_its_output(base_image: str, tmp_path: Path) -> None:
    spins = tmp_path / "spins"
    spins.mkdir()
    (spins / "broken-setup.yaml").write_text(
        "kbuild-spin: 1\nname: broken-setup\nextends: cpu-linux-x86_64\n"
        'image:\n  setup: ["echo kbuild-test-marker-out && echo kbuild-test-marker-err >&2 && exit 7"]\n'
    )
    folder = copy_example("iris", tmp_path)
    # the same platform as cpu-linux-x86_64: its lock holds for this spin too
    shutil.copy(folder / "iris.cpu-linux-x86_64.lock", folder / "iris.broken-setup.lock")
    proc = run_kbuild(
        "--spin",
        "broken-setup",
        "--target",
        "image",
        "--base-image",
        base_image,
        "--tag",
        session_tag("broken"),
        "-o",
        tmp_path / "out",
        folder / "pipeline.yaml",
        env={"KBUILD_SPIN_PATH": str(spins)},
    )
    assert proc.returncode == 5, proc.stderr
    assert "kbuild-test-marker-out" in proc.stderr and "kbuild-test-marker-err" in proc.stderr
    assert "setup commands failed in the base image (exit 7)" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "context", "--push"], "--push needs --target image or --target oci"),
        (["--tag", "iris:x"], "not zipapp"),
        (["--target", "context", "--tag", "Not A Tag"], "not a valid image reference"),
    ],
)
def test_container_options_are_checked_first(iris_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    proc = kbuild(*args, "-o", tmp_path / "out", iris_dir / "pipeline.yaml")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


def test_push_to_a_local_registry_and_pull_back(
    iris_image: ImageBuild, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    tag = f"{registry.address}/kbuild-test/iris:pushed-{SESSION}"
    config = tmp_path / "docker-config"
    config.mkdir()
    try:
        # no credentials yet: the registry's refusal, exit 5
        refused = build_image(
            tmp_path, iris_image.pipeline, base_image, tag, "--push", "-q", env={"DOCKER_CONFIG": str(config)}
        )
        assert refused.returncode == 5, refused.stderr
        assert f"pushing {tag} failed" in refused.stderr and f"docker login {registry.address}" in refused.stderr

        login = docker_cli(
            "--config",
            str(config),
            "login",
            "-u",
            registry.user,
            "--password-stdin",
            registry.address,
            stdin=registry.password,
        )
        assert login.returncode == 0, login.stderr
        pushed = built(
            tmp_path,
            iris_image.pipeline,
            build_image(
                tmp_path, iris_image.pipeline, base_image, tag, "--push", "-q", env={"DOCKER_CONFIG": str(config)}
            ),
            tag,
        )
        assert pushed.stdout.strip() == tag and pushed.stderr == ""  # -q: nothing but the image
        record = pushed.report["image"]["pushed"]
        assert record["registry"] == registry.address and record["digest"].startswith("sha256:")
        assert "push" in pushed.report["timings_s"]
        assert f"pushed-{SESSION}" in registry.get("/v2/kbuild-test/iris/tags/list")["tags"]

        remove_image(tag)
        pulled = docker_cli("--config", str(config), "pull", tag)
        assert pulled.returncode == 0, pulled.stderr
        assert inspect(tag)["Id"] == pushed.report["image"]["id"]
    finally:
        remove_image(tag)


def test_a_setup_step_runs_once_per_base_as_its_own_layer(base_image: str, tmp_path: Path) -> None:
    spins = tmp_path / "spins"
    spins.mkdir()
    marker = f"vendor-{SESSION}-{time.time_ns()}"  # a new setup hash: not in any cache yet
    (spins / "vendor-setup.yaml").write_text(
        "kbuild-spin: 1\nname: vendor-setup\nextends: cpu-linux-x86_64\n"
        f'image:\n  setup: ["mkdir -p /opt/vendor && echo {marker} > /opt/vendor/ready"]\n'
    )
    folder = copy_example("iris", tmp_path)
    shutil.copy(folder / "iris.cpu-linux-x86_64.lock", folder / "iris.vendor-setup.lock")
    tag = session_tag("vendor")
    runs = []
    try:
        for out in ("one", "two"):
            proc = run_kbuild(
                "--spin",
                "vendor-setup",
                "--target",
                "image",
                "--base-image",
                base_image,
                "--tag",
                tag,
                "-o",
                tmp_path / out,
                folder / "pipeline.yaml",
                env={"KBUILD_SPIN_PATH": str(spins)},
            )
            assert proc.returncode == 0, proc.stderr
            runs.append(proc.stderr)
        assert "running the spin's 1 setup commands" in runs[0]
        assert "running the spin's" not in runs[1]  # from the cache: base digest + commands
        report = json.loads((tmp_path / "two" / "build-report.json").read_text())
        assert report["image"]["layers"][0]["name"] == "setup"
        shown = docker_cli("run", "--rm", "--network", "none", "--entrypoint", "cat", tag, "/opt/vendor/ready")
        assert shown.stdout.strip() == marker
    finally:
        remove_image(tag)


def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_the_deployment_starts_the_container_it_describes(iris_image: ImageBuild) -> None:
    """The Deployment's container spec, run as written by the real engine (its
    command, args, env, user, read-only root, /tmp volume, memory limit), answers
    each of its probes on the path and port the manifest names."""
    import yaml

    deployment = yaml.safe_load((iris_image.out / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    [spec] = pod["containers"]
    repository, digest = spec["image"].split("@")
    assert repository == iris_image.tag.rsplit(":", 1)[0] and digest == iris_image.report["image"]["digest"]
    security = {**pod["securityContext"], **spec["securityContext"]}
    args = [
        "run",
        "-d",
        "--network",
        "none",
        "--user",
        f"{security['runAsUser']}:{security['runAsGroup']}",
        "--memory",
        str(_memory_bytes(spec["resources"]["limits"]["memory"])),
    ]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    args += [f"--cap-drop={cap}" for cap in security.get("capabilities", {}).get("drop", [])]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    args += [f"--tmpfs={m['mountPath']}" for m in spec["volumeMounts"] if m["name"] in empty_dirs]
    args += [f"--env={e['name']}={e['value']}" for e in spec.get("env", [])]
    if "command" in spec:
        args += ["--entrypoint", spec["command"][0]]
    started = docker_cli(*args, iris_image.tag, *spec.get("command", [])[1:], *spec.get("args", []))
    assert started.returncode == 0, started.stderr
    name = started.stdout.strip()
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    try:
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = spec[probe_name]["httpGet"]
            url = f"http://127.0.0.1:{ports.get(probe['port'], probe['port'])}{probe['path']}"
            code = (
                "import sys, time, urllib.request\n"
                "for _ in range(600):\n"
                "    try:\n"
                f"        sys.exit(0 if urllib.request.urlopen({url!r}, timeout=2).status == 200 else 1)\n"
                "    except OSError:\n"
                "        time.sleep(0.1)\n"
                "sys.exit(2)\n"
            )
            answered = docker_cli("exec", name, "python3", "-c", code)
            assert answered.returncode == 0, (probe_name, url, docker_cli("logs", name).stderr[-2000:])
        top = docker_cli("top", name).stdout.splitlines()
        assert any(row.split()[0] == "10001" for row in top[1:] if "kbuild.runtime" in row), top
    finally:
        docker_cli("rm", "-f", name)
