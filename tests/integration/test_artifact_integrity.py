"""An artifact checks its own files against app/files.json, which the build
writes: a zipapp's unpacked tree finds a truncated, rewritten or deleted file
at the next start and unpacks again; `check` reads every file (an image's too:
tests/integration/test_image.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.build import Built

ROW = {"features": [[5.1, 3.5, 1.4, 0.2]]}


def run(artifact: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(artifact), *args],
        input=json.dumps(ROW),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KBUILD_APP_CACHE": str(cache)},
    )


def unpacked(iris_onnx: Built, cache: Path) -> Path:
    first = run(iris_onnx.artifact, cache, "predict")
    assert first.returncode == 0, first.stderr
    [root] = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return root


def largest(root: Path, pattern: str) -> Path:
    return max(root.glob(pattern), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncate", "rewrite", "delete"])
def test_a_damaged_tree_is_unpacked_again_at_the_next_start(iris_onnx: Built, tmp_path: Path, damage: str) -> None:
    root = unpacked(iris_onnx, tmp_path)
    victim = largest(root, "site/**/*.so*") if damage != "delete" else root / "app" / "pipeline.json"
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "rewrite":
        time.sleep(0.01)
        victim.write_bytes(b"\0" * victim.stat().st_size)
    else:
        victim.unlink()
    again = run(iris_onnx.artifact, tmp_path, "predict")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["label"] == ["setosa"]
    [line] = again.stderr.splitlines()
    assert line.startswith(f"kbuild: the unpacked copy at {root} was damaged (") and "unpacking it again" in line
    assert victim.relative_to(root).as_posix() in line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".damaged-")]  # moved aside, then removed


def test_check_reads_every_file_and_finds_what_a_stat_cannot(iris_onnx: Built, tmp_path: Path) -> None:
    root = unpacked(iris_onnx, tmp_path)
    victim = largest(root, "site/**/*.so*")
    stat = victim.stat()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit flipped, size and time kept: bit rot
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert run(iris_onnx.artifact, tmp_path, "info").returncode == 0  # a start sees nothing
    checked = run(iris_onnx.artifact, tmp_path, "check")
    assert checked.returncode == 1
    assert checked.stdout.startswith("artifact files: FAIL: ")
    assert "does not have the content the build wrote" in checked.stdout and victim.name in checked.stdout
    healed = run(iris_onnx.artifact, tmp_path, "check")
    assert healed.returncode == 0, healed.stderr
    assert healed.stdout.startswith("artifact files: ok (")
