"""Errors the runtime reports to a user or a client.

Each carries the message a person reads, the exit code the CLI returns and the
HTTP status a server answers with, so that one place (the CLI, or a server's
request handler) turns any of them into output without knowing where it came from.
"""

from __future__ import annotations

import re


class AppError(Exception):
    """Base of every error the runtime reports on purpose."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArtifactUsageError(AppError):
    """Bad command line or environment (e.g. a non-numeric KBUILD_HTTP_PORT)."""

    exit_code = 2


class ClientError(AppError):
    """The caller's inputs do not fit the pipeline's declared inputs."""

    exit_code = 2
    http_status = 400


class NotReady(AppError):
    """A request arrived before the models were loaded."""

    exit_code = 3
    http_status = 503


class LoadError(AppError):
    """The artifact cannot start: bad pipeline.json, missing or altered model,
    a step module or model library missing, a port that cannot be bound."""

    exit_code = 3


class ConfigError(AppError):
    """Raised by a step's build() when its fields make no sense; the pipeline
    loader turns it into a LoadError that names the step."""

    exit_code = 3


class DataError(AppError):
    """Raised by a step's runner when the data it receives does not fit it; the
    pipeline turns it into a StepError that names the step."""

    exit_code = 4


class RowError(ClientError):
    """Raised by a step's runner for a row the client sent that the step cannot
    take (an image that does not decode, text that is not UTF-8): the client's
    fault, a 4xx; the pipeline adds the step's name."""


class PipelineError(AppError):
    """The pipeline failed on a request (not the client's fault as far as the
    declared inputs can tell)."""

    exit_code = 4
    http_status = 500


class StepError(PipelineError):
    """A step raised while running; the message names the step."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


def short(text: str, limit: int = 100) -> str:
    """`text` cut to `limit` characters with its length said: names and values
    echoed in messages must not make the message itself too large."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}…({len(text)} characters)"


# Shared libraries that wheels expect from the system, and the packages that
# usually provide them (Debian/Ubuntu; RHEL/Rocky).
_LIBRARY_PACKAGES = {
    "libstdc++.so": ("libstdc++6", "libstdc++"),
    "libgomp.so": ("libgomp1", "libgomp"),
    "libgcc_s.so": ("libgcc-s1", "libgcc"),
    "libz.so": ("zlib1g", "zlib"),
    "libGL.so": ("libgl1", "mesa-libGL"),
    "libglib-2.0.so": ("libglib2.0-0", "glib2"),
    "libcuda.so": ("the NVIDIA driver", "the NVIDIA driver"),
    "libcudart.so": ("the CUDA runtime (nvidia-cuda-runtime wheels or the CUDA toolkit)", "cuda-cudart"),
    "libveo.so": ("NEC's veoffload (nec-sdk-runtime)", "veoffload"),
}
_MISSING_LIBRARY = re.compile(r"([A-Za-z0-9_.+-]+\.so(?:\.[0-9.]+)?): cannot open shared object file")


def missing_library(error: BaseException) -> str | None:
    """One line for an import that failed because the system lacks a shared
    library, naming it and the package that usually provides it; else None."""
    match = _MISSING_LIBRARY.search(str(error))
    if match is None:
        return None
    library = match.group(1)
    for prefix, (debian, rhel) in _LIBRARY_PACKAGES.items():
        if library.startswith(prefix):
            return (
                f"this machine lacks the system library {library}, which the artifact's packages need; "
                f"install {debian} (Debian/Ubuntu) or {rhel} (RHEL/Rocky)"
            )
    return f"this machine lacks the system library {library}, which the artifact's packages need; install it"
