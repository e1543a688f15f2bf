"""Shared by the tests split from test_documents.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kbuild.errors import SpecError
from kbuild.load.documents import (
    load_document,
)

Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def write(text: str | bytes, name: str = "doc.yaml") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return write


def load_error(path: Path, **kwargs: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_document(path, **kwargs)
    assert info.value.exit_code == 3
    assert info.value.problems
    return info.value
