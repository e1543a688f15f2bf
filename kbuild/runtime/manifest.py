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
    "kbuild/runtime/batching.py",
    "kbuild/runtime/cli.py",
    "kbuild/runtime/errors.py",
    "kbuild/runtime/log.py",
    "kbuild/runtime/manifest.py",
    "kbuild/runtime/metrics.py",
    "kbuild/runtime/pipeline.py",
    "kbuild/runtime/samples.py",
    "kbuild/runtime/serve.py",
    "kbuild/runtime/service.py",
    "kbuild/runtime/tensors.py",
    "kbuild/runtime/steps/__init__.py",
    "kbuild/runtime/server/__init__.py",
)

TRANSPORTS = {
    "http": (
        "kbuild/runtime/oip.py",
        "kbuild/runtime/openapi.py",
        "kbuild/runtime/server/wire.py",
        "kbuild/runtime/server/http.py",
        "kbuild/runtime/server/http_api.py",
    ),
    "grpc": (
        "kbuild/runtime/oip.py",
        "kbuild/runtime/server/grpc.py",
        "kbuild/runtime/server/oip_proto.py",
    ),
    "kafka": (
        "kbuild/runtime/server/kafka.py",
        *(
            f"kbuild/runtime/streaming/{module}.py"
            for module in (
                "__init__", "assembly", "clients", "codec", "combine", "config", "metrics", "modelmsg",
                "models", "offsets", "records", "stream", "transforms",
            )
        ),
    ),
}
# A stream's health checks and metrics are served over HTTP.
IMPLIES = {"kafka": ("http",)}


def with_implied(transports: Iterable[str]) -> set[str]:
    """The transports and those they need (the compiler plans for these, the
    runtime starts them)."""
    enabled = set(transports)
    for transport in list(enabled):
        enabled.update(IMPLIES.get(transport, ()))
    return enabled


def files_for(step_types: Iterable[str], transports: Iterable[str] = ("http",)) -> list[str]:
    """CORE plus the step and server modules that a pipeline needs, sorted."""
    files = set(CORE)
    files.update(f"kbuild/runtime/steps/{t}.py" for t in step_types)
    for transport in with_implied(transports):
        files.update(TRANSPORTS.get(transport, (f"kbuild/runtime/server/{transport}.py",)))
    return sorted(files)
