"""Shared by the tests split from test_streaming.py."""

from __future__ import annotations

import hashlib

from kbuild.runtime.contract.model_message import (
    Manifest,
    sha256_of,
    split,
)

KEY = b"secret"


def manifest_for(data: bytes, chunk: int, version: str = "2", published: int = 1000) -> tuple[Manifest, list[bytes]]:
    chunks = split(data, chunk)
    return (
        Manifest(
            id=hashlib.md5(data + version.encode()).hexdigest(),
            version=version,
            name="model.onnx",
            sha256=sha256_of(chunks),
            size=len(data),
            chunks=len(chunks),
            published_at_ms=published,
        ),
        chunks,
    )
