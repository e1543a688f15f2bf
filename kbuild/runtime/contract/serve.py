"""How a pipeline is served: the serve section as typed, frozen settings.

This is the one contract between the compiler and the runtime. The artifact
parses pipeline.json's serve section here, once, when it loads; every transport
receives its own settings object, never a dict. The compiler builds the same
objects from the validated pipeline, so defaults (ports, the listen host, HTTP
when nothing else is served, the transports a stream implies) live here alone.

    settings = parse_serve(document["serve"], name="iris", step_types={"onnx"}, env=os.environ)
    settings.transports        # ("http", "grpc")
    settings.http.port         # 8080

The environment is passed in, never read here:

    KBUILD_HTTP_HOST                 replaces serve.http.host
    KBUILD_KAFKA_BOOTSTRAP_SERVERS   replaces serve.kafka.bootstrap_servers
    KBUILD_KAFKA_GROUP_ID            replaces serve.kafka.group_id
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kbuild.runtime.contract.errors import ArtifactUsageError
from kbuild.runtime.contract.fields import SettingsError, integer, number, section, text
from kbuild.runtime.contract.step_types import ROW_WISE_STEPS

if TYPE_CHECKING:  # the Kafka and MQTT settings ship only in artifacts that use them
    from kbuild.runtime.contract.kafka import StreamConfig
    from kbuild.runtime.contract.mqtt import MqttSettings

__all__ = [
    "BatchSettings",
    "GrpcSettings",
    "HttpSettings",
    "ServeSettings",
    "SettingsError",
    "parse_serve",
]

# In the order the runtime starts them.
TRANSPORTS = ("http", "grpc", "kafka", "mqtt")
# A stream's (and an MQTT server's) health checks and metrics are served over HTTP.
IMPLIES: Mapping[str, tuple[str, ...]] = {"kafka": ("http",), "mqtt": ("http",)}

DEFAULT_HOST = "0.0.0.0"
DEFAULT_HTTP_PORT = 8080
DEFAULT_GRPC_PORT = 8081
DEFAULT_MAX_BODY = 64 * 1024 * 1024
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
DEFAULT_TIMEOUT_MS = 30_000
# A client has this long to send a request's head once it started it, and its
# body once the head is in (slow clients must not hold connections forever);
# a connection with no request in progress closes after the idle timeout.
DEFAULT_HEADER_TIMEOUT_MS = 10_000
DEFAULT_BODY_TIMEOUT_MS = 30_000
DEFAULT_IDLE_TIMEOUT_MS = 60_000
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_LATENCY_MS = 2.0

HOST_ENV = "KBUILD_HTTP_HOST"
HTTP_PORT_ENV = "KBUILD_HTTP_PORT"
# Seconds to keep serving, not ready, after SIGTERM (default 0): where load
# balancers learn of readiness by polling, new requests keep coming for a
# moment after the signal. The deploy section's drain_s sets it in the pod.
DRAIN_ENV = "KBUILD_DRAIN_S"
# After the drain, the endpoints finish what is in flight within this budget;
# a container manager's grace period must cover drain + SHUTDOWN_GRACE_S.
SHUTDOWN_GRACE_S = 20.0
GRPC_PORT_ENV = "KBUILD_GRPC_PORT"
_PORT_MAX = 65535
_LABELS = {"http": "HTTP", "grpc": "gRPC"}


@dataclass(frozen=True)
class OpenAISettings:
    """serve.http.openai: OpenAI's embeddings API beside the others."""

    model: str
    max_inputs: int = 2048  # OpenAI's own limit on inputs per request
    max_queued: int = 4096  # texts waiting for the model; past it, 429


@dataclass(frozen=True)
class HttpSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_HTTP_PORT  # 0: any free port (command line and environment only)
    max_body_bytes: int = DEFAULT_MAX_BODY
    timeout_s: float = DEFAULT_TIMEOUT_MS / 1000
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_MS / 1000
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_MS / 1000
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_MS / 1000
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    openai: OpenAISettings | None = None


@dataclass(frozen=True)
class GrpcSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_GRPC_PORT
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    timeout_s: float = DEFAULT_TIMEOUT_MS / 1000


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int  # rows per pipeline call; 1 turns combining off
    max_latency_s: float
    asked: bool = False  # serve.batching was written (else the default for the step types)


@dataclass(frozen=True)
class ServeSettings:
    http: HttpSettings | None
    grpc: GrpcSettings | None
    kafka: StreamConfig | None
    batching: BatchSettings
    mqtt: MqttSettings | None = None
    # Transports started only because another needs them (a stream's HTTP
    # health checks and metrics): served, but not offered as a Service.
    implied: tuple[str, ...] = ()

    @property
    def transports(self) -> tuple[str, ...]:
        """The enabled transports, in start order."""
        return tuple(t for t in TRANSPORTS if getattr(self, t) is not None)

    @property
    def ports(self) -> dict[str, int]:
        """transport -> port, for those that listen."""
        return {t: s.port for t in ("http", "grpc") if (s := getattr(self, t)) is not None}

    @property
    def service_ports(self) -> dict[str, int]:
        """transport -> port, for those the pipeline serves on purpose."""
        return {t: p for t, p in self.ports.items() if t not in self.implied}

    def with_ports(self, http: int | None = None, grpc: int | None = None) -> ServeSettings:
        """These settings with ports overridden (the command line, the environment).
        Raises ArtifactUsageError for a port of a transport that is not served."""
        changed = self
        for name, port in (("http", http), ("grpc", grpc)):
            if port is None:
                continue
            current = getattr(changed, name)
            if current is None:
                label = _LABELS[name]
                raise ArtifactUsageError(f"--{name}-port: this pipeline does not serve {label} (no serve.{name})")
            if not 0 <= port <= _PORT_MAX:
                raise ArtifactUsageError(f"{name} port must be an integer 0-{_PORT_MAX}, got {port!r}")
            changed = dataclasses.replace(changed, **{name: dataclasses.replace(current, port=port)})
        return changed


def parse_serve(
    serve: Mapping[str, Any] | None,
    *,
    name: str,
    step_types: Iterable[str],
    env: Mapping[str, str],
) -> ServeSettings:
    """Typed settings of a serve section; SettingsError names the field at fault."""
    serve = {} if serve is None else serve
    if not isinstance(serve, Mapping):
        raise SettingsError("serve must be an object")
    named = {t for t in TRANSPORTS if serve.get(t) is not None} or {"http"}
    wanted = set(named)
    for transport in named:
        wanted.update(IMPLIES.get(transport, ()))
    settings = ServeSettings(
        http=_http(section(serve, "http", "serve"), env, name) if "http" in wanted else None,
        grpc=_grpc(section(serve, "grpc", "serve")) if "grpc" in wanted else None,
        kafka=_kafka(section(serve, "kafka", "serve"), name, env) if "kafka" in wanted else None,
        batching=_batching(serve, step_types),
        mqtt=_mqtt(section(serve, "mqtt", "serve"), env) if "mqtt" in wanted else None,
        implied=tuple(t for t in TRANSPORTS if t in wanted - named),
    )
    # the environment's ports; KBUILD_GRPC_PORT counts only where gRPC is served
    # (the manifests set both for every pod)
    grpc = port_from_env(env, "grpc") if settings.grpc is not None else None
    return settings.with_ports(http=port_from_env(env, "http"), grpc=grpc)


def _http(config: Mapping[str, Any], env: Mapping[str, str], name: str) -> HttpSettings:
    where = "serve.http"
    host = env.get(HOST_ENV) or text(config, "host", where, DEFAULT_HOST)
    openai = None
    if config.get("openai") is not None:
        asked = section(config, "openai", where)
        openai = OpenAISettings(
            model=text(asked, "model", f"{where}.openai", name),
            max_inputs=integer(asked, "max_inputs", f"{where}.openai", 2048, 1),
            max_queued=integer(asked, "max_queued", f"{where}.openai", 4096, 1),
        )
    return HttpSettings(
        host=host,
        port=integer(config, "port", where, DEFAULT_HTTP_PORT, 1, _PORT_MAX),
        max_body_bytes=integer(config, "max_body_bytes", where, DEFAULT_MAX_BODY, 1),
        timeout_s=number(config, "timeout_ms", where, DEFAULT_TIMEOUT_MS, positive=True) / 1000,
        header_timeout_s=number(config, "header_timeout_ms", where, DEFAULT_HEADER_TIMEOUT_MS, positive=True) / 1000,
        body_timeout_s=number(config, "body_timeout_ms", where, DEFAULT_BODY_TIMEOUT_MS, positive=True) / 1000,
        idle_timeout_s=number(config, "idle_timeout_ms", where, DEFAULT_IDLE_TIMEOUT_MS, positive=True) / 1000,
        max_connections=integer(config, "max_connections", where, DEFAULT_MAX_CONNECTIONS, 1),
        openai=openai,
    )


def _grpc(config: Mapping[str, Any]) -> GrpcSettings:
    where = "serve.grpc"
    return GrpcSettings(
        host=text(config, "host", where, DEFAULT_HOST),
        port=integer(config, "port", where, DEFAULT_GRPC_PORT, 1, _PORT_MAX),
        max_message_bytes=integer(config, "max_message_bytes", where, DEFAULT_MAX_MESSAGE, 1),
        timeout_s=number(config, "timeout_ms", where, DEFAULT_TIMEOUT_MS, positive=True) / 1000,
    )


def _kafka(config: Mapping[str, Any], name: str, env: Mapping[str, str]) -> StreamConfig:
    from kbuild.runtime.contract.kafka import parse_kafka

    return parse_kafka(config, name, env)


def _mqtt(config: Mapping[str, Any], env: Mapping[str, str]) -> MqttSettings:
    from kbuild.runtime.contract.mqtt import parse_mqtt

    return parse_mqtt(config, env)


def _batching(serve: Mapping[str, Any], step_types: Iterable[str]) -> BatchSettings:
    """serve.batching, or where it is absent the default for a pipeline of
    these step types: built-in steps batch, user code only when asked."""
    if serve.get("batching") is None:
        types = set(step_types)
        if types and types <= ROW_WISE_STEPS:
            return BatchSettings(DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_LATENCY_MS / 1000)
        return BatchSettings(1, 0.0)
    config = section(serve, "batching", "serve")
    size = integer(config, "max_batch_size", "serve.batching", DEFAULT_MAX_BATCH_SIZE, 1)
    latency = number(config, "max_latency_ms", "serve.batching", DEFAULT_MAX_LATENCY_MS, positive=False)
    return BatchSettings(size, latency / 1000, asked=True)


def port_from_env(env: Mapping[str, str], transport: str) -> int | None:
    """KBUILD_HTTP_PORT / KBUILD_GRPC_PORT, if set."""
    variable = {"http": HTTP_PORT_ENV, "grpc": GRPC_PORT_ENV}[transport]
    value = env.get(variable)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ArtifactUsageError(f"{variable}={value!r} is not a port number") from None
