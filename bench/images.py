"""Images: assembled (kbuild's route) against the Dockerfile route, side by side.

    python bench/images.py            # prints the Markdown section
    python bench/images.py --write    # and puts it into BENCHMARKS.md

The iris ONNX pipeline on the local Debian base image, on this machine's
engine. Each round runs both routes, taking turns:

  assembled   kbuild --target image: layers written by kbuild, loaded through
              the Docker SDK; and kbuild --target oci with no engine at all
  dockerfile  kbuild --target context, then `docker build --network none`

Rows: cold (empty kbuild cache, so wheels are downloaded; none of this
pipeline's layers in the engine), warm (the same inputs again), model change
(the ONNX file's bytes differ, its answers do not). Seconds to a loaded image
leave out the check that runs after it (a container for both routes).
Then bytes over the base against the installed packages' bytes, and the
image's cold start (`docker run` until /v2/health/ready answers).
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
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REPO,
    free_port,
    human_bytes,
    kbuild,
    machine,
    median,
    table,
    wait_http,
    write_section,
)

BASE_IMAGE = "kbuild-test/python:3.11-bookworm"
ASSEMBLED_TAG = "kbuild-bench/iris:assembled"
DOCKERFILE_TAG = "kbuild-bench/iris:dockerfile"
COMMAND = "python bench/images.py --write"
NO_ENGINE = "tcp://127.0.0.1:9"


def _copy_example(dest: Path) -> Path:
    folder = dest / "iris"
    shutil.copytree(REPO / "examples" / "iris", folder, ignore=shutil.ignore_patterns("dist"))
    return folder


def _touch_model(folder: Path) -> None:
    import onnx

    path = folder / "models" / "iris.onnx"
    model = onnx.load(str(path))
    model.doc_string = f"revision {uuid.uuid4().hex}"
    onnx.save(model, str(path))


def _docker(*args: str, stdin: Any = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], stdin=stdin, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def _forget(*tags: str) -> None:
    for tag in tags:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True, check=False)


def assembled(folder: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    kbuild(
        "--spin",
        "cpu-linux-x86_64",
        "--target",
        "image",
        "--base-image",
        BASE_IMAGE,
        "--tag",
        ASSEMBLED_TAG,
        "-q",
        "-o",
        out,
        folder / "pipeline.yaml",
        env=env,
    )
    total = time.perf_counter() - start
    report = json.loads((out / "build-report.json").read_text())
    timings = report["timings_s"]
    return {
        "total": total,
        "loaded": total - timings.get("verify", 0.0),
        "assembly": timings.get("image", 0.0),
        "report": report,
    }


def oci_no_engine(folder: Path, out: Path, env: dict[str, str], base: Path) -> dict[str, Any]:
    start = time.perf_counter()
    kbuild(
        "--spin",
        "cpu-linux-x86_64",
        "--target",
        "oci",
        "--base-image",
        f"oci-archive:{base}",
        "-q",
        "-o",
        out,
        folder / "pipeline.yaml",
        env={**env, "DOCKER_HOST": NO_ENGINE},
    )
    total = time.perf_counter() - start
    report = json.loads((out / "build-report.json").read_text())
    timings = report["timings_s"]
    return {
        "total": total,
        "written": total - timings.get("verify", 0.0),
        "assembly": timings.get("image", 0.0),
        "report": report,
    }


def dockerfile(folder: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    proc = kbuild(
        "--spin",
        "cpu-linux-x86_64",
        "--target",
        "context",
        "--base-image",
        BASE_IMAGE,
        "--tag",
        DOCKERFILE_TAG,
        "-q",
        "-o",
        out,
        folder / "pipeline.yaml",
        env=env,
    )
    context = Path(proc.stdout.strip().splitlines()[-1])
    built = time.perf_counter()
    with context.open("rb") as tar:
        _docker("build", "--network", "none", "-t", DOCKERFILE_TAG, "-", stdin=tar)
    loaded = time.perf_counter() - start
    check_start = time.perf_counter()
    _docker("run", "--rm", "--network", "none", "--read-only", DOCKERFILE_TAG, "check")
    return {"total": loaded + time.perf_counter() - check_start, "loaded": loaded, "assembly": loaded - (built - start)}


def _image_size(tag: str) -> int:
    return int(json.loads(_docker("image", "inspect", tag).stdout)[0]["Size"])


def installed_bytes(report: dict[str, Any], cache: Path) -> int:
    """What the locked wheels hold once installed (the files the image needs)."""
    total = 0
    for package in report["packages"]:
        with zipfile.ZipFile(cache / "wheels" / package["sha256"] / package["wheel"]) as wheel:
            total += sum(i.file_size for i in wheel.infolist() if ".data/" not in i.filename)
    return total


def cold_start(tag: str, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        port = free_port()
        name = f"kbuild-bench-{port}"
        proc = subprocess.Popen(
            ["docker", "run", "--rm", "--name", name, "--network", "host", "-e", f"KBUILD_HTTP_PORT={port}", tag],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            runs.append(wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc))
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            proc.wait(timeout=60)
    return median(runs)


def measure(work: Path, repeats: int = 3) -> dict[str, Any]:
    base = work / "base.oci.tar"
    subprocess.run(["skopeo", "copy", "-q", f"docker-daemon:{BASE_IMAGE}", f"oci-archive:{base}"], check=True)
    env = {**os.environ, "KBUILD_APP_CACHE": str(work / "apps")}
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    folder = {name: _copy_example(work / name) for name in ("assembled", "oci", "dockerfile")}
    caches = {name: work / f"cache-{name}" for name in folder}
    _forget(ASSEMBLED_TAG, DOCKERFILE_TAG)
    for phase in ("cold", "warm", "model change"):
        if phase == "model change":
            for path in folder.values():
                _touch_model(path)
        rows[phase] = {}
        for name, run in (("dockerfile", dockerfile), ("assembled", assembled)):
            rows[phase][name] = run(
                folder[name], work / f"out-{name}-{phase}", {**env, "KBUILD_CACHE_DIR": str(caches[name])}
            )
        rows[phase]["oci"] = oci_no_engine(
            folder["oci"], work / f"out-oci-{phase}", {**env, "KBUILD_CACHE_DIR": str(caches["oci"])}, base
        )
    report = rows["warm"]["assembled"]["report"]
    base_size = _image_size(BASE_IMAGE)
    sizes = {
        "installed": installed_bytes(report, caches["assembled"]),
        "assembled": _image_size(ASSEMBLED_TAG) - base_size,
        "dockerfile": _image_size(DOCKERFILE_TAG) - base_size,
        "assembled_compressed": report["image"]["compressed_bytes_over_base"],
    }
    starts: dict[str, list[float]] = {}
    for _ in range(repeats):  # the two images take turns
        for name, tag in (("dockerfile", DOCKERFILE_TAG), ("assembled", ASSEMBLED_TAG)):
            starts.setdefault(name, []).append(cold_start(tag, 1))
    layers = [len(rows[p]["oci"]["report"]["image"]["layers"]) for p in ("warm", "model change")]
    changed = sum(
        a["digest"] != b["digest"]
        for a, b in zip(
            rows["warm"]["oci"]["report"]["image"]["layers"],
            rows["model change"]["oci"]["report"]["image"]["layers"],
            strict=True,
        )
    )
    return {
        "rows": rows,
        "sizes": sizes,
        "starts": {k: median(v) for k, v in starts.items()},
        "changed_layers": changed,
        "layers": layers[0],
    }


def section(results: dict[str, Any]) -> str:
    rows = []
    for phase, runs in results["rows"].items():
        d, a, o = runs["dockerfile"], runs["assembled"], runs["oci"]
        rows.append(
            [
                phase,
                f"{d['assembly']:.2f}",
                f"{a['assembly']:.2f}",
                f"{o['assembly']:.2f}",
                f"{d['loaded']:.1f}",
                f"{a['loaded']:.1f}",
                f"{o['written']:.1f}",
                f"{d['loaded'] / a['loaded']:.2f}×",
            ]
        )
    sizes = results["sizes"]
    size_rows = [
        ["installed packages (the wheels unpacked)", human_bytes(sizes["installed"]), "1.00"],
        [
            "Dockerfile route: image over the base",
            human_bytes(sizes["dockerfile"]),
            f"{sizes['dockerfile'] / sizes['installed']:.2f}",
        ],
        [
            "assembled: image over the base",
            human_bytes(sizes["assembled"]),
            f"{sizes['assembled'] / sizes['installed']:.2f}",
        ],
        [
            "assembled: compressed layers over the base (what a push sends)",
            human_bytes(sizes["assembled_compressed"]),
            f"{sizes['assembled_compressed'] / sizes['installed']:.2f}",
        ],
    ]
    starts = results["starts"]
    return (
        "## Images: assembled against the Dockerfile route\n\n" + machine() + ".\n\n"
        "The iris ONNX pipeline on the local Debian base image (python3, no pip), both routes in the same run, "
        "taking turns. *Image work*: for the Dockerfile route, `docker build` of the context; for the assembled "
        "routes, writing the layers (the `image` stage of the report). *To a loaded image*: kbuild's wall clock "
        "up to the image being in the engine (for `--target oci` with `DOCKER_HOST` pointing nowhere, up to the "
        "archive being written), leaving out the check that follows it. Cold: empty kbuild cache (wheels "
        "downloaded) and none of the pipeline's layers in the engine; model change: the ONNX file's bytes differ, "
        "its answers do not. The engine here stores layers with the vfs driver, which copies the whole file system "
        f"for each layer the Dockerfile route commits. Command: `{COMMAND}`.\n\n"
        + table(
            [
                "build",
                "image work s: Dockerfile",
                "assembled",
                "oci, no engine",
                "to a loaded image s: Dockerfile",
                "assembled",
                "oci, no engine (written)",
                "Dockerfile / assembled",
            ],
            rows,
        )
        + f"\n\nAfter the model change {results['changed_layers']} of the {results['layers']} layers over the base "
        "had a new digest (models and config): a push sends those two and the image config.\n\n"
        + table(["bytes", "size", "× installed"], size_rows)
        + "\n\n"
        + table(
            ["cold start (`docker run` to ready), median of 3", "seconds"],
            [["Dockerfile route", f"{starts['dockerfile']:.2f}"], ["assembled", f"{starts['assembled']:.2f}"]],
        )
        + "\n"
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kbuild-bench-images-") as tmp:
        results = measure(Path(tmp))
    text = section(results)
    if "--write" in sys.argv[1:]:
        write_section(text.split("\n", 1)[0].removeprefix("## "), text)
    print(text)


if __name__ == "__main__":
    main()
