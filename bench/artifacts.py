"""Build time, artifact size and cold start of the iris ONNX pipeline.

    python bench/artifacts.py            # prints the three Markdown sections
    python bench/artifacts.py --write    # and puts them into BENCHMARKS.md

Build time: cold (empty wheel cache: everything is downloaded; for the image,
the engine's layers of earlier runs removed first), warm (same inputs again) and
after a model-only change (the ONNX file's bytes differ, its predictions do
not), for the zipapp and, when a Docker engine answers, the image.
Size: the zipapp and the image's bytes over its base, each against the sum of the
wheels the pipeline needs. Cold start: process start until /v2/health/ready
answers, for the zipapp's first start (unpacking), a cached start, and the image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, free_port, human_bytes, kbuild, machine, median, table, wait_http, write_section  # noqa: E402

BASE_IMAGE = "kbuild-test/python:3.11-bookworm"
IMAGE_TAG = "kbuild-bench/iris:1"
STAGES = ("load+validate", "plan", "lock", "fetch", "samples", "render", "package", "verify", "image")
COMMAND = "python bench/artifacts.py --write"


@dataclass
class Build:
    seconds: float
    report: dict[str, Any]


def _copy_example(dest: Path) -> Path:
    folder = dest / "iris"
    shutil.copytree(REPO / "examples" / "iris", folder, ignore=shutil.ignore_patterns("dist"))
    return folder


def _touch_model(folder: Path) -> None:
    """Change the ONNX file's bytes without changing what it computes, to
    bytes no earlier run had (which the engine's layer cache might hold)."""
    import onnx

    path = folder / "models" / "iris.onnx"
    model = onnx.load(str(path))
    model.doc_string = f"revision {uuid.uuid4().hex}"
    onnx.save(model, str(path))


def _forget_image(tag: str) -> None:
    """The engine drops the layers of earlier runs of this benchmark (the tagged
    image and the untagged stages), so that the cold row is cold for it too;
    the base image and other images' layers stay."""
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True, check=False)


def _build(folder: Path, out: Path, env: dict[str, str], *extra: str) -> Build:
    start = time.perf_counter()
    kbuild("--spin", "cpu-linux-x86_64", "-q", "-o", out, *extra, folder / "pipeline.yaml", env=env)
    seconds = time.perf_counter() - start
    return Build(seconds, json.loads((out / "build-report.json").read_text()))


def docker_ready() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.images.get(BASE_IMAGE)
        return True
    except Exception:  # any failure means: no engine or no base image to measure with
        return False


def storage_note() -> str:
    """What the engine's storage driver does to image timings, where it matters."""
    try:
        import docker

        driver = docker.from_env(timeout=5).info().get("Driver", "")
    except Exception:  # no engine: no image rows either
        return ""
    if driver != "vfs":
        return f" The engine stores layers with the {driver} driver."
    return (
        " The engine here stores layers with the vfs driver (as scripts/docker-setup.sh sets it up, to run inside a container), which "
        "copies the whole file system for each layer it commits and for each container it creates: the image "
        "rows and `docker run` pay that, a production engine on overlay2 much less."
    )


def measure_builds(work: Path) -> dict[str, dict[str, Build]]:
    results: dict[str, dict[str, Build]] = {}
    targets: list[tuple[str, tuple[str, ...]]] = [("zipapp", ())]
    if docker_ready():
        targets.append(("image", ("--target", "image", "--base-image", BASE_IMAGE, "--tag", IMAGE_TAG)))
    for target, extra in targets:
        cache = work / f"cache-{target}"
        env = {**os.environ, "KBUILD_CACHE_DIR": str(cache), "KBUILD_APP_CACHE": str(work / "apps")}
        folder = _copy_example(work / target)
        if target == "image":
            _forget_image(IMAGE_TAG)
        runs = {"cold": _build(folder, work / f"out-{target}-cold", env, *extra)}
        runs["warm"] = _build(folder, work / f"out-{target}-warm", env, *extra)
        _touch_model(folder)
        runs["model change"] = _build(folder, work / f"out-{target}-model", env, *extra)
        results[target] = runs
    return results


def build_section(results: dict[str, dict[str, Build]]) -> str:
    rows = []
    for target, runs in results.items():
        for name, run in runs.items():
            timings = run.report.get("timings_s", {})
            stages = ", ".join(f"{s} {timings[s]:.2f}" for s in STAGES if s in timings)
            rows.append([target, name, f"{run.seconds:.1f}", stages])
    note = "" if "image" in results else "\nNo Docker engine with the base image answered: image rows not measured.\n"
    return (
        "## Build time\n\n"
        + machine()
        + ".\n\nThe iris ONNX pipeline, wall-clock seconds of `kbuild`, and seconds per stage from "
        "`build-report.json`. Cold: an empty wheel cache (everything downloaded) and, for the image, none of "
        "this pipeline's layers in the engine (the base image stays). Model change: the ONNX file's "
        f"bytes differ, its answers do not.{storage_note() if 'image' in results else ''} Command: `{COMMAND}`.\n\n"
        + table(["target", "build", "total s", "stages (s)"], rows)
        + note
    )


def _wheel_bytes(report: dict[str, Any], cache: Path) -> int:
    total = 0
    for package in report["packages"]:
        total += (cache / "wheels" / package["sha256"] / package["wheel"]).stat().st_size
    return total


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def size_section(results: dict[str, dict[str, Build]], work: Path) -> str:
    zipapp = results["zipapp"]["warm"].report
    wheels = _wheel_bytes(zipapp, work / "cache-zipapp")
    rows = [
        [
            "zipapp (.pyz)",
            human_bytes(zipapp["artifact"]["bytes"]),
            human_bytes(wheels),
            f"{zipapp['artifact']['bytes'] / wheels:.3f}",
        ]
    ]
    if "image" in results:
        image = results["image"]["warm"].report["image"]
        rows.append(
            [
                "image, bytes over the base",
                human_bytes(image["bytes_over_base"]),
                human_bytes(wheels),
                f"{image['bytes_over_base'] / wheels:.2f}",
            ]
        )
    from serving_servers import mlserver_venv

    venv = mlserver_venv()
    rows.append(
        ["MLServer 1.7.1 + mlserver-sklearn environment (scikit-learn model)", human_bytes(_folder_bytes(venv)), "", ""]
    )
    return (
        "## Size\n\n"
        + machine()
        + ".\n\nThe iris ONNX pipeline (numpy, onnxruntime). The minimality ratio is the artifact's bytes "
        "over the sum of the wheels the pipeline needs (1.0 = nothing but the wheels; an image holds them "
        f"unpacked). Command: `{COMMAND}`.\n\n" + table(["artifact", "bytes", "wheels needed", "ratio"], rows)
    )


def _start_to_ready(cmd: list[str], env: dict[str, str], port: int) -> float:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cold_start_section(results: dict[str, dict[str, Build]], work: Path, repeats: int = 5) -> str:
    artifact = results["zipapp"]["warm"].report["artifact"]["path"]
    first, cached = [], []
    for i in range(repeats):
        cache = work / f"apps-cold-{i}"
        env = {**os.environ, "KBUILD_APP_CACHE": str(cache)}
        port = free_port()
        first.append(_start_to_ready([sys.executable, artifact, "serve", "--http-port", str(port)], env, port))
        port = free_port()
        cached.append(_start_to_ready([sys.executable, artifact, "serve", "--http-port", str(port)], env, port))
    rows = [
        ["zipapp, first start (unpacks)", f"{median(first):.3f}"],
        ["zipapp, cached start", f"{median(cached):.3f}"],
    ]
    if "image" in results:
        tag = results["image"]["warm"].report["image"]["tag"]
        runs = []
        for _ in range(repeats):
            port = free_port()
            name = f"kbuild-bench-{port}"
            cmd = ["docker", "run", "--rm", "--name", name, "--network", "host", "-e", f"KBUILD_HTTP_PORT={port}", tag]
            try:
                runs.append(_start_to_ready(cmd, dict(os.environ), port))
            finally:
                subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        rows.append(["image, `docker run` to ready", f"{median(runs):.3f}"])
    from serving_servers import mlserver_venv, start_mlserver, stop_mlserver

    venv, runs = mlserver_venv(), []
    for i in range(repeats):
        folder = work / f"mlserver-cold-{i}"
        folder.mkdir()
        start = time.perf_counter()
        server = start_mlserver(venv, folder, 0)
        runs.append(time.perf_counter() - start)
        stop_mlserver(server)
    rows.append(["MLServer 1.7.1, parallel_workers 0, start to model ready", f"{median(runs):.3f}"])
    return (
        "## Cold start\n\n" + machine() + ".\n\nProcess start until `GET /v2/health/ready` answers 200, median of "
        f"{repeats}.{storage_note() if 'image' in results else ''} Command: `{COMMAND}`.\n\n"
        + table(["artifact", "seconds"], rows)
    )


def sections() -> list[str]:
    with tempfile.TemporaryDirectory(prefix="kbuild-bench-") as tmp:
        work = Path(tmp)
        results = measure_builds(work)
        return [build_section(results), size_section(results, work), cold_start_section(results, work)]


def main() -> None:
    parts = sections()
    if "--write" in sys.argv[1:]:
        for part in parts:
            write_section(part.split("\n", 1)[0].removeprefix("## "), part)
    print("\n".join(parts))


if __name__ == "__main__":
    main()
