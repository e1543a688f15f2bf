"""kbuild finds its data folders in a source checkout and in an installation."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from kbuild.resources import data_dir


def test_source_checkout_folders() -> None:
    assert (data_dir("spins") / "cpu-linux-x86_64.yaml").is_file()
    assert (data_dir("schemas") / "pipeline.schema.json").is_file()
    assert data_dir("templates").is_dir()


def test_installed_layout_is_preferred(tmp_path: Path) -> None:
    package = tmp_path / "kbuild"
    for folder in ("spin_files", "schemas", "templates"):
        (package / folder).mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "kbuild" / "resources.py", package / "resources.py")
    spec = importlib.util.spec_from_file_location("installed_resources", package / "resources.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.data_dir("spins") == (package / "spin_files").resolve()
    assert module.data_dir("schemas") == (package / "schemas").resolve()
