"""kbuild finds its data folders in a source checkout and in an installation."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.load import resources
from kbuild.load.resources import data_dir


def test_source_checkout_folders() -> None:
    assert (data_dir("spins") / "cpu-linux-x86_64.yaml").is_file()
    assert (data_dir("schemas") / "pipeline.schema.json").is_file()
    assert data_dir("templates").is_dir()


def test_installed_layout_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "kbuild"
    for folder in ("spin_files", "schemas", "templates"):
        (package / folder).mkdir(parents=True)
    monkeypatch.setattr(resources, "_PACKAGE", package)
    assert resources.data_dir("spins") == package / "spin_files"
    assert resources.data_dir("schemas") == package / "schemas"
    assert resources.data_dir("templates") == package / "templates"
