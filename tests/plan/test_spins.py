"""Spin files: the catalogue, `extends`, platform tags and marker values."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.build import load_plan
from kbuild.errors import SpecError, SpinError
from kbuild.plan.spins import available_spins, load_spin
from kbuild.targets.image_settings import image_settings
from tests.helpers.build import EXAMPLES, SHIPPED_SPINS


def test_catalogue_loads() -> None:
    assert set(SHIPPED_SPINS) <= set(available_spins())
    for name in SHIPPED_SPINS:
        spin = load_spin(name)
        assert spin.name == name and spin.os == "linux" and spin.python == "3.11"
        assert {"onnx", "sklearn", "python", "fields", "scale", "classify", "threshold"} <= set(spin.backends)


def test_extends_merges_and_overrides() -> None:
    cuda13 = load_spin("cuda13-linux-x86_64")
    assert cuda13.chain == ("cuda13-linux-x86_64", "cuda12-linux-x86_64", "cpu-linux-x86_64")
    assert cuda13.accelerator == "cuda"  # from cuda12
    assert cuda13.runtime["resources"] == {"nvidia.com/gpu": 1}
    assert any(r.startswith("onnxruntime-gpu") and ">=1.27" in r for r in cuda13.backends["onnx"].requirements)
    assert cuda13.backends["onnx"].options["providers"][0] == "CUDAExecutionProvider"
    assert cuda13.backends["sklearn"].requirements == ("scikit-learn>=1.5",)  # inherited from the CPU spin
    cuda12 = load_spin("cuda12-linux-x86_64")
    assert any("<1.27" in r for r in cuda12.backends["onnx"].requirements)


def test_aurora_spin_describes_the_vector_host() -> None:
    aurora = load_spin("aurora-linux")
    assert aurora.image_base.startswith("rockylinux:8") and aurora.image_python == "python3.11"
    assert any("ve-container" in step and "nec-sdk-runtime" in step for step in aurora.image_setup)
    assert "/dev/ve0" in aurora.runtime["devices"]
    assert any("/var/opt/nec/ve/veos" in v for v in aurora.runtime["volumes"])
    assert aurora.runtime["ulimits"] == {"memlock": -1}
    assert set(aurora.runtime["env"]) == {"VE_NODE_NUMBER", "VE_OMP_NUM_THREADS"}
    assert "vector host" in (aurora.backends["onnx"].warning or "")


def test_platform_tags_and_markers_are_the_targets() -> None:
    arm = load_spin("cpu-linux-aarch64")
    tags = arm.platform_tags()
    assert tags[0] == "manylinux_2_28_aarch64" and "manylinux2014_aarch64" in tags
    assert all(t.endswith("_aarch64") for t in tags)
    assert arm.marker_environment()["platform_machine"] == "aarch64"
    assert load_spin("cpu-linux-x86_64").platform_tags()[-1] == "manylinux1_x86_64"


def test_a_spin_file_by_path_can_remove_a_backend(tmp_path: Path) -> None:
    custom = tmp_path / "no-onnx.yaml"
    custom.write_text("kbuild-spin: 1\nname: no-onnx\nextends: cpu-linux-x86_64\nbackends:\n  onnx: null\n")
    spin = load_spin(str(custom))
    assert "onnx" not in spin.backends and "sklearn" in spin.backends


def test_unknown_and_circular_spins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpinError, match="unknown spin 'cpu-linux-arm64'"):
        load_spin("cpu-linux-arm64")
    (tmp_path / "a.yaml").write_text("kbuild-spin: 1\nname: a\nextends: b\n")
    (tmp_path / "b.yaml").write_text("kbuild-spin: 1\nname: b\nextends: a\n")
    monkeypatch.setenv("KBUILD_SPIN_PATH", str(tmp_path))
    with pytest.raises(SpinError, match="extends itself"):
        load_spin("a")


def test_invalid_spin_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kbuild-spin: 1\nname: bad\nextends: cpu-linux-x86_64\npython: 3.11\nacelerator: cpu\n")
    with pytest.raises(SpecError) as info:
        load_spin(str(bad))
    text = info.value.render()
    assert "bad.yaml:4" in text and "bad.yaml:5" in text and "did you mean 'accelerator'" in text


@pytest.mark.parametrize(
    ("spin", "installs"),
    [("cpu-linux-x86_64", "apt-get"), ("cuda12-linux-x86_64", "apt-get"), ("aurora-linux", "dnf -y install libgomp")],
)
def test_a_backends_setup_runs_only_in_images_of_pipelines_that_use_it(spin: str, installs: str) -> None:
    gbm = image_settings(load_plan(EXAMPLES / "lightgbm" / "pipeline.yaml", spin), "0" * 64, None, None)
    iris = image_settings(load_plan(EXAMPLES / "iris" / "pipeline.yaml", spin), "0" * 64, None, None)
    spin_setup = tuple(load_spin(spin).image_setup)
    assert iris.setup == spin_setup
    assert gbm.setup[: len(spin_setup)] == spin_setup
    added = gbm.setup[len(spin_setup) :]
    assert len(added) == 1 and installs in added[0] and "libgomp" in added[0]
    assert (gbm.network, iris.network) == ("host", "host" if spin_setup else "none")  # only a setup needs the mirrors
