"""serve.kafka as typed settings, and the Kafka clients' configuration.

The compiler validated the section against the schema; these checks guard the
runtime against a hand-edited pipeline.json and apply the environment's
overrides (a deployment knows its brokers, the build does not):

    KBUILD_KAFKA_BOOTSTRAP_SERVERS   replaces serve.kafka.bootstrap_servers
    KBUILD_KAFKA_GROUP_ID            replaces serve.kafka.group_id
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kbuild.runtime.errors import LoadError
from kbuild.runtime.streaming.codec import ENCODINGS
from kbuild.runtime.streaming.transforms import TransformsConfig

BOOTSTRAP_ENV = "KBUILD_KAFKA_BOOTSTRAP_SERVERS"
GROUP_ENV = "KBUILD_KAFKA_GROUP_ID"
DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_LATENCY_MS = 5.0
BUILT_IN_VERSION = "built-in"

# Settings kbuild owns: offsets are committed by the stream once outputs are
# acknowledged (at-least-once); servers and group come from their own fields.
RESERVED = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "delivery.report.only.error",
    }
)

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

    def consumer_settings(self) -> dict[str, Any]:
        return {
            **CONSUMER_DEFAULTS,
            **self.client,
            **self.consumer,
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }

    def producer_settings(self) -> dict[str, Any]:
        return {
            **PRODUCER_DEFAULTS,
            **self.client,
            **self.producer,
            "bootstrap.servers": self.bootstrap_servers,
            # The stream learns of acknowledgements from the drained queue
            # (offsets.py); a report per output would cost more than its path.
            "delivery.report.only.error": True,
        }

    def reader_settings(self) -> dict[str, Any]:
        """The model topic's reader: assigned partitions, never a group member,
        never committing (group.id is required by the client, not used)."""
        return {
            **self.client,
            **self.consumer,
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": f"{self.group_id}.models",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
        }


def parse(config: Mapping[str, Any], pipeline_name: str, env: Mapping[str, str]) -> StreamConfig:
    servers = env.get(BOOTSTRAP_ENV) or config.get("bootstrap_servers", DEFAULT_BOOTSTRAP)
    if isinstance(servers, list) and servers and all(isinstance(s, str) and s for s in servers):
        servers = ",".join(servers)
    if not isinstance(servers, str) or not servers:
        raise LoadError(f"serve.kafka.bootstrap_servers must be HOST:PORT or a list of them, got {servers!r}")
    group = env.get(GROUP_ENV) or config.get("group_id", pipeline_name)
    if not isinstance(group, str) or not group:
        raise LoadError(f"serve.kafka.group_id must be a non-empty string, got {group!r}")
    batching = _mapping(config, "batching")
    size = batching.get("max_batch_size", DEFAULT_MAX_BATCH)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise LoadError(f"serve.kafka.batching.max_batch_size must be an integer >= 1, got {size!r}")
    latency = batching.get("max_latency_ms", DEFAULT_MAX_LATENCY_MS)
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
        raise LoadError(f"serve.kafka.batching.max_latency_ms must be a number >= 0, got {latency!r}")
    dead_letter = config.get("dead_letter")
    return StreamConfig(
        bootstrap_servers=servers,
        group_id=group,
        source=_topic(config, "source"),
        sink=_topic(config, "sink"),
        dead_letter=_topic(config, "dead_letter").topic if dead_letter is not None else None,
        models=_models(config),
        max_batch_size=size,
        max_latency_s=float(latency) / 1000,
        client=_client(config, "client"),
        consumer=_client(config, "consumer"),
        producer=_client(config, "producer"),
        transforms=_transforms(config),
    )


def _mapping(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise LoadError(f"serve.kafka.{key} must be an object")
    return value


def _string(section: Mapping[str, Any], key: str, where: str) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value:
        raise LoadError(f"serve.kafka.{where}.{key} must be a non-empty string")
    return value


def _topic(config: Mapping[str, Any], key: str) -> Topic:
    if key not in config:
        raise LoadError(f"serve.kafka.{key} is required")
    section = _mapping(config, key)
    encoding = section.get("encoding", "json")
    if encoding not in ENCODINGS:
        raise LoadError(f"serve.kafka.{key}.encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    return Topic(_string(section, "topic", key), encoding)


def _models(config: Mapping[str, Any]) -> Models | None:
    if config.get("models") is None:
        return None
    section = _mapping(config, "models")
    allow = section.get("allow_unsigned", False)
    if not isinstance(allow, bool):
        raise LoadError("serve.kafka.models.allow_unsigned must be true or false")
    version = section.get("built_in_version", BUILT_IN_VERSION)
    if not isinstance(version, str) or not version:
        raise LoadError("serve.kafka.models.built_in_version must be a non-empty string")
    step = _string(section, "step", "models") if "step" in section else None
    return Models(_string(section, "topic", "models"), step, allow, version)


def _client(config: Mapping[str, Any], key: str) -> ClientSettings:
    section = _mapping(config, key)
    out: ClientSettings = {}
    for name, value in section.items():
        if name in RESERVED:
            raise LoadError(f"serve.kafka.{key}.{name} is set by kbuild and cannot be given")
        if not isinstance(value, (str, int, float, bool)):
            raise LoadError(f"serve.kafka.{key}.{name} must be a string, number or boolean")
        out[str(name)] = value
    return out


def _transforms(config: Mapping[str, Any]) -> TransformsConfig | None:
    if config.get("transforms") is None:
        return None
    section = _mapping(config, "transforms")
    refs: dict[str, str | None] = {}
    for key in ("code", "pre_transform", "predict", "post_transform"):
        value = section.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise LoadError(f"serve.kafka.transforms.{key} must be a non-empty string")
        refs[key] = value
    settings = section.get("config") or {}
    if not isinstance(settings, Mapping):
        raise LoadError("serve.kafka.transforms.config must be an object")
    return TransformsConfig(
        code=refs["code"],
        pre_transform=refs["pre_transform"],
        predict=refs["predict"],
        post_transform=refs["post_transform"],
        config=settings,
    )
