"""serve.kafka as typed settings, and the Kafka clients' configuration.

Part of the serve contract (kbuild.runtime.contract.serve). The environment's
overrides apply here (a deployment knows its brokers, the build does not):

    KBUILD_KAFKA_BOOTSTRAP_SERVERS   replaces serve.kafka.bootstrap_servers
    KBUILD_KAFKA_GROUP_ID            replaces serve.kafka.group_id
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kbuild.runtime.contract.fields import (
    SettingsError,
    flag,
    integer,
    number,
    optional_text,
    section,
    text,
)
from kbuild.runtime.contract.references import resolve_all

BOOTSTRAP_ENV = "KBUILD_KAFKA_BOOTSTRAP_SERVERS"
GROUP_ENV = "KBUILD_KAFKA_GROUP_ID"
DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_LATENCY_MS = 5.0
BUILT_IN_VERSION = "built-in"
# Record encodings (kbuild.runtime.streaming.codec implements them).
ENCODINGS = ("json", "msgpack", "raw")

# Settings kbuild owns: offsets are committed by the stream once outputs are
# acknowledged (at-least-once); servers and group come from their own fields.
_OWN_COMMITS = "kbuild commits offsets itself, once the outputs are acknowledged (at-least-once); remove it"
RESERVED: Mapping[str, str] = {
    "bootstrap.servers": "set serve.kafka.bootstrap_servers instead",
    "group.id": "set serve.kafka.group_id instead",
    "enable.auto.commit": _OWN_COMMITS,
    "enable.auto.offset.store": _OWN_COMMITS,
    "delivery.report.only.error": "kbuild learns of acknowledgements itself (at-least-once); remove it",
}

# Defaults a user may override through client/consumer/producer.
CONSUMER_DEFAULTS: dict[str, Any] = {
    # A new group starts at the beginning: records written before the first
    # deployment are answered too.
    "auto.offset.reset": "earliest",
    # A replica that died hands its partitions on after 10 s, not Kafka's 45 s.
    "session.timeout.ms": 10000,
}
PRODUCER_DEFAULTS: dict[str, Any] = {
    # Retries never duplicate or reorder an output within one session.
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
}

ClientSettings = dict[str, str | int | float | bool]


@dataclass(frozen=True)
class TransformsConfig:
    """serve.kafka.transforms: Maki Nage's serve functions (streaming/transforms.py)."""

    code: str | None = None  # relative to the app folder
    pre_transform: str | None = None
    predict: str | None = None
    post_transform: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topic:
    topic: str
    encoding: str = "json"


@dataclass(frozen=True)
class Models:
    topic: str
    step: str | None  # None: the pipeline's one step with a model
    allow_unsigned: bool = False
    built_in_version: str = BUILT_IN_VERSION


@dataclass(frozen=True)
class StreamConfig:
    bootstrap_servers: str
    group_id: str
    source: Topic
    sink: Topic
    dead_letter: str | None = None
    models: Models | None = None
    max_batch_size: int = DEFAULT_MAX_BATCH
    max_latency_s: float = DEFAULT_MAX_LATENCY_MS / 1000
    client: ClientSettings = field(default_factory=dict)
    consumer: ClientSettings = field(default_factory=dict)
    producer: ClientSettings = field(default_factory=dict)
    transforms: TransformsConfig | None = None
    # where ${NAME} values are read when a client is configured (the process's environment)
    environment: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def _own(self, section: str) -> dict[str, Any]:
        values: ClientSettings = getattr(self, section)
        return resolve_all(values, self.environment, f"serve.kafka.{section}")

    def consumer_settings(self) -> dict[str, Any]:
        return {
            **CONSUMER_DEFAULTS,
            **self._own("client"),
            **self._own("consumer"),
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }

    def producer_settings(self) -> dict[str, Any]:
        return {
            **PRODUCER_DEFAULTS,
            **self._own("client"),
            **self._own("producer"),
            "bootstrap.servers": self.bootstrap_servers,
            # The stream learns of acknowledgements from the drained queue
            # (offsets.py); a report per output would cost more than its path.
            "delivery.report.only.error": True,
        }

    def reader_settings(self) -> dict[str, Any]:
        """The model topic's reader: assigned partitions, never a group member,
        never committing (group.id is required by the client, not used)."""
        return {
            **self._own("client"),
            **self._own("consumer"),
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": f"{self.group_id}.models",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
        }


def parse_kafka(config: Mapping[str, Any], pipeline_name: str, env: Mapping[str, str]) -> StreamConfig:
    where = "serve.kafka"
    servers: Any = env.get(BOOTSTRAP_ENV) or config.get("bootstrap_servers", DEFAULT_BOOTSTRAP)
    if isinstance(servers, list) and servers and all(isinstance(s, str) and s for s in servers):
        servers = ",".join(servers)
    if not isinstance(servers, str) or not servers:
        raise SettingsError(f"{where}.bootstrap_servers must be HOST:PORT or a list of them, got {servers!r}")
    group = env.get(GROUP_ENV) or text(config, "group_id", where, pipeline_name)
    batching = section(config, "batching", where)
    return StreamConfig(
        bootstrap_servers=servers,
        group_id=group,
        source=_topic(config, "source"),
        sink=_topic(config, "sink"),
        dead_letter=_topic(config, "dead_letter").topic if config.get("dead_letter") is not None else None,
        models=_models(config),
        max_batch_size=integer(batching, "max_batch_size", f"{where}.batching", DEFAULT_MAX_BATCH, 1),
        max_latency_s=number(batching, "max_latency_ms", f"{where}.batching", DEFAULT_MAX_LATENCY_MS, positive=False)
        / 1000,
        client=_client(config, "client"),
        consumer=_client(config, "consumer"),
        producer=_client(config, "producer"),
        transforms=_transforms(config),
        environment=env,
    )


def _topic(config: Mapping[str, Any], key: str) -> Topic:
    if key not in config:
        raise SettingsError(f"serve.kafka.{key} is required")
    topic = section(config, key, "serve.kafka")
    encoding = topic.get("encoding", "json")
    if encoding not in ENCODINGS:
        raise SettingsError(f"serve.kafka.{key}.encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    return Topic(text(topic, "topic", f"serve.kafka.{key}"), encoding)


def _models(config: Mapping[str, Any]) -> Models | None:
    if config.get("models") is None:
        return None
    where = "serve.kafka.models"
    models = section(config, "models", "serve.kafka")
    return Models(
        text(models, "topic", where),
        optional_text(models, "step", where),
        flag(models, "allow_unsigned", where, False),
        text(models, "built_in_version", where, BUILT_IN_VERSION),
    )


def _client(config: Mapping[str, Any], key: str) -> ClientSettings:
    out: ClientSettings = {}
    for name, value in section(config, key, "serve.kafka").items():
        if name in RESERVED:
            raise SettingsError(f"serve.kafka.{key}.{name} is set by kbuild: {RESERVED[name]}")
        if not isinstance(value, (str, int, float, bool)):
            raise SettingsError(f"serve.kafka.{key}.{name} must be a string, number or boolean")
        out[str(name)] = value
    return out


def _transforms(config: Mapping[str, Any]) -> TransformsConfig | None:
    if config.get("transforms") is None:
        return None
    where = "serve.kafka.transforms"
    transforms = section(config, "transforms", "serve.kafka")
    return TransformsConfig(
        code=optional_text(transforms, "code", where),
        pre_transform=optional_text(transforms, "pre_transform", where),
        predict=optional_text(transforms, "predict", where),
        post_transform=optional_text(transforms, "post_transform", where),
        config=section(transforms, "config", where),
    )
