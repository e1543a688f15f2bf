"""Packages a backend declares unused leave pip-compile's output with what
only they required; what something kept also requires stays."""

from __future__ import annotations

from kbuild.resolve.pip.unused import drop_unused

BODY = """\
anyio==4.16.0 \\
    --hash=sha256:aa
    # via httpx2
filelock==4.3.1 \\
    --hash=sha256:bb
    # via
    #   huggingface-hub
    #   torch
httpx2==2.16.2 \\
    --hash=sha256:cc
    # via huggingface-hub
huggingface-hub==2.4.0 \\
    --hash=sha256:dd
    # via tokenizers
numpy==2.4.6 \\
    --hash=sha256:ee
    # via
    #   -r kbuild.in
    #   onnxruntime
tokenizers==0.23.3 \\
    --hash=sha256:ff
    # via -r kbuild.in
torch==2.13.0+cpu \\
    --hash=sha256:gg
    # via -r kbuild.in
"""


def names(body: str) -> list[str]:
    return [line.split("==")[0] for line in body.splitlines() if "==" in line]


def test_the_unused_package_and_what_only_it_needs_are_dropped() -> None:
    body, dropped = drop_unused(BODY, ["HuggingFace_Hub"])
    assert dropped == ("anyio", "httpx2", "huggingface-hub")
    assert names(body) == ["filelock", "numpy", "tokenizers", "torch"]  # filelock: torch needs it too
    assert "#   torch" in body and "sha256:ff" in body


def test_nothing_unused_changes_nothing() -> None:
    assert drop_unused(BODY, []) == (BODY, ())
    assert drop_unused(BODY, ["not-there"]) == (BODY, ())


def test_a_named_requirement_goes_with_what_only_it_needs() -> None:
    body, dropped = drop_unused(BODY, ["tokenizers"])
    assert "tokenizers" in dropped and "huggingface-hub" in dropped
    assert "numpy" in names(body) and "torch" in names(body)
