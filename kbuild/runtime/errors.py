"""Errors the runtime reports to a user or a client.

Each carries the message a person reads, the exit code the CLI returns and the
HTTP status a server answers with, so that one place (the CLI, or a server's
request handler) turns any of them into output without knowing where it came from.
"""

from __future__ import annotations


class AppError(Exception):
    """Base of every error the runtime reports on purpose."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(AppError):
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
