"""The pip layer: the versions its patches know, and each patch checking what
it replaces before it replaces it."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from kbuild.errors import ResolutionError
from kbuild.plan.spins import load_spin
from kbuild.resolve.pip import KNOWN_PIP, KNOWN_PIP_TOOLS, versions
from kbuild.resolve.pip.compile_for_target import PATCHES
from kbuild.resolve.pip.patches import PatchError, require
from tests.helpers.build import REPO


def test_the_installed_pip_and_pip_tools_are_known_versions() -> None:
    found = versions.check_versions()
    for name, (low, high) in (("pip", KNOWN_PIP), ("pip-tools", KNOWN_PIP_TOOLS)):
        release = tuple(int(part) for part in found[name].split(".")[:2])
        assert low <= release < high, (name, found[name])


@pytest.mark.parametrize("installed", ["99.1", "1.0"])
def test_an_unknown_pip_is_refused_with_the_versions_to_install(
    monkeypatch: pytest.MonkeyPatch, installed: str
) -> None:
    real = versions.version
    monkeypatch.setattr(versions, "version", lambda name: installed if name == "pip" else real(name))
    with pytest.raises(ResolutionError) as refused:
        versions.check_versions()
    rendered = refused.value.render()
    assert f"pip {installed} is installed" in rendered and "python -m pip install 'pip>=" in rendered


def test_a_patch_names_what_this_pip_lacks() -> None:
    with pytest.raises(PatchError, match=r"pip\._internal\.x\.gone is not there"):
        require(SimpleNamespace(), "gone", "pip._internal.x")


def test_every_patch_applies_to_the_installed_pip() -> None:
    """In a child process, as the compile runs: pip's internals stay untouched here."""
    markers = load_spin("cpu-linux-aarch64").marker_environment()
    code = (
        "import json, sys\n"
        "from kbuild.resolve.pip.compile_for_target import PATCHES\n"
        "target = json.loads(sys.argv[1])\n"
        "for patch in PATCHES:\n"
        "    patch.apply(target)\n"
        "import pip._vendor.packaging.markers as m\n"
        "print(m.default_environment()['platform_machine'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps({"markers": markers})],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "aarch64"
    assert len(PATCHES) == 4 and len({p.__name__ for p in PATCHES}) == 4
