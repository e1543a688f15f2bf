"""Which runtime files an artifact needs, for the compiler's packaging step.

An artifact ships CORE, the module of each step type its pipeline uses and the
modules of the transports it serves, nothing else (bootstrap.py is added by the
zipapp target, which runs it as __main__.py). Paths are relative to the folder
that holds the kbuild package, i.e. as they lie under ROOT/site.
"""

from __future__ import annotations

from collections.abc import Iterable

CORE = (
    "kbuild/__init__.py",
    "kbuild/runtime/__init__.py",
    "kbuild/runtime/__main__.py",
    "kbuild/runtime/cli.py",
    "kbuild/runtime/errors.py",
    "kbuild/runtime/log.py",
    "kbuild/runtime/manifest.py",
    "kbuild/runtime/pipeline.py",
    "kbuild/runtime/samples.py",
    "kbuild/runtime/serve.py",
    "kbuild/runtime/service.py",
    "kbuild/runtime/tensors.py",
    "kbuild/runtime/steps/__init__.py",
    "kbuild/runtime/server/__init__.py",
)

TRANSPORTS = {
    "http": ("kbuild/runtime/server/wire.py", "kbuild/runtime/server/http.py"),
}


def files_for(step_types: Iterable[str], transports: Iterable[str] = ("http",)) -> list[str]:
    """CORE plus the step and server modules that a pipeline needs, sorted."""
    files = set(CORE)
    files.update(f"kbuild/runtime/steps/{t}.py" for t in step_types)
    for transport in transports:
        files.update(TRANSPORTS.get(transport, (f"kbuild/runtime/server/{transport}.py",)))
    return sorted(files)
