"""Which runtime files an artifact needs, for the compiler's packaging step.

An artifact ships CORE, the module of each step type its pipeline uses and the
modules of the transports it serves, nothing else (bootstrap.py is added by the
zipapp target, which runs it as __main__.py). Paths are relative to the folder
that holds the kbuild package, i.e. as they lie under ROOT/site.
"""

from __future__ import annotations

from collections.abc import Iterable

from kbuild.runtime.contract.serve import IMPLIES
from kbuild.runtime.contract.step_types import CATALOGUE

CORE = (
    "kbuild/__init__.py",
    "kbuild/runtime/__init__.py",
    "kbuild/runtime/__main__.py",
    "kbuild/runtime/answers.py",
    "kbuild/runtime/batching.py",
    "kbuild/runtime/cli.py",
    "kbuild/runtime/combine.py",
    "kbuild/runtime/deadlines.py",
    "kbuild/runtime/inference.py",
    "kbuild/runtime/lifecycle.py",
    "kbuild/runtime/log.py",
    "kbuild/runtime/metrics.py",
    "kbuild/runtime/pipeline_runner.py",
    "kbuild/runtime/pipeline_thread.py",
    "kbuild/runtime/routing.py",
    "kbuild/runtime/samples.py",
    "kbuild/runtime/steps/__init__.py",
    "kbuild/runtime/tensors.py",
    "kbuild/runtime/threads.py",
    "kbuild/runtime/transports/__init__.py",
    # the contract the compiler wrote the artifact by
    *(
        f"kbuild/runtime/contract/{module}.py"
        for module in (
            "__init__",
            "errors",
            "fields",
            "integrity",
            "layout",
            "pipeline",
            "references",
            "runtime_files",
            "serve",
            "step_types",
        )
    ),
)

TRANSPORTS = {
    "http": (
        "kbuild/runtime/oip.py",
        "kbuild/runtime/openai_api.py",
        "kbuild/runtime/openapi.py",
        "kbuild/runtime/transports/wire.py",
        "kbuild/runtime/transports/http.py",
        "kbuild/runtime/transports/http_api.py",
    ),
    "grpc": (
        "kbuild/runtime/oip.py",
        "kbuild/runtime/transports/grpc.py",
        "kbuild/runtime/transports/oip_proto.py",
    ),
    "mqtt": (
        "kbuild/runtime/transports/mqtt.py",
        "kbuild/runtime/contract/mqtt.py",
    ),
    "kafka": (
        "kbuild/runtime/transports/kafka.py",
        "kbuild/runtime/contract/kafka.py",
        "kbuild/runtime/contract/model_message.py",
        *(
            f"kbuild/runtime/streaming/{module}.py"
            for module in (
                "__init__",
                "clients",
                "codec",
                "commits",
                "delivery",
                "metrics",
                "microbatch",
                "model_assembly",
                "model_watcher",
                "offsets",
                "records",
                "stream",
                "stream_state",
                "transforms",
            )
        ),
    ),
}


def files_for(step_types: Iterable[str], transports: Iterable[str] = ("http",)) -> list[str]:
    """CORE plus the step and transport modules that a pipeline needs, sorted.
    A transport brings those it implies (a stream's HTTP health checks)."""
    files = set(CORE)
    files.update(f for t in step_types for f in CATALOGUE[t].files)
    enabled = set(transports)
    for transport in list(enabled):
        enabled.update(IMPLIES.get(transport, ()))
    for transport in enabled:
        files.update(TRANSPORTS.get(transport, (f"kbuild/runtime/transports/{transport}.py",)))
    return sorted(files)
