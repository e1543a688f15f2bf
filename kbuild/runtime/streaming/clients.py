"""Kafka client plumbing shared by the stream and the model watcher."""

from __future__ import annotations

import logging
from typing import TextIO

from confluent_kafka import Message

from kbuild.runtime.log import log_event

Headers = list[tuple[str, str | bytes | None]]  # as the client types them


def incoming_headers(msg: Message) -> Headers:
    """A consumed record's headers, always as a new list of pairs."""
    headers = msg.headers()
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers or ())


def client_logger(stream: TextIO) -> logging.Logger:
    """librdkafka's own log lines, as structured lines on the same stream."""
    logger = logging.getLogger("kbuild.kafka")
    if not logger.handlers:
        logger.addHandler(_EventHandler(stream))
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger


class _EventHandler(logging.Handler):
    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning"
        log_event(self.stream, "kafka-client", level=level, message=record.getMessage())
