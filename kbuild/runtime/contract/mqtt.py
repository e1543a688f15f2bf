"""serve.mqtt as typed settings (part of the serve contract,
kbuild.runtime.contract.serve); shipped only in artifacts that serve MQTT.

The environment, passed in, overrides the broker and carries credentials
(never written in the pipeline or the image):

    KBUILD_MQTT_BROKER     replaces serve.mqtt.broker (HOST:PORT)
    KBUILD_MQTT_USERNAME   and KBUILD_MQTT_PASSWORD: the broker's credentials
                           (or serve.mqtt.username/password as ${NAME} references)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kbuild.runtime.contract.fields import SettingsError, integer, optional_text, section, text
from kbuild.runtime.contract.references import resolve

BROKER_ENV = "KBUILD_MQTT_BROKER"
USERNAME_ENV = "KBUILD_MQTT_USERNAME"
PASSWORD_ENV = "KBUILD_MQTT_PASSWORD"
DEFAULT_BROKER = "localhost:1883"
DEFAULT_SESSION_EXPIRY_S = 300
MAX_SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Tls:
    ca_file: str | None
    cert_file: str | None
    key_file: str | None


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    request_topic: str
    response_topic: str | None  # for requests that name no MQTT 5 response topic
    error_topic: str | None
    qos: int
    client_id: str | None  # None: unique per process
    session_expiry_s: int  # how long the broker keeps the session while disconnected
    tls: Tls | None
    username: str | None  # may be ${NAME}: read from `environment` when connecting
    password: str | None
    environment: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password), ${NAME} values read from the environment."""
        return (
            resolve(self.username, self.environment, "serve.mqtt.username"),
            resolve(self.password, self.environment, "serve.mqtt.password"),
        )


def parse_mqtt(config: Mapping[str, Any], env: Mapping[str, str]) -> MqttSettings:
    where = "serve.mqtt"
    broker = env.get(BROKER_ENV) or text(config, "broker", where, DEFAULT_BROKER)
    host, sep, port = broker.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{where}.broker must be HOST:PORT, got {broker!r}")
    tls = section(config, "tls", where)
    return MqttSettings(
        host=host.strip("[]"),
        port=int(port),
        request_topic=text(config, "request_topic", where),
        response_topic=optional_text(config, "response_topic", where),
        error_topic=optional_text(config, "error_topic", where),
        qos=integer(config, "qos", where, 1, 0, 1),
        client_id=optional_text(config, "client_id", where),
        session_expiry_s=integer(config, "session_expiry_s", where, DEFAULT_SESSION_EXPIRY_S, 0, MAX_SESSION_EXPIRY_S),
        tls=Tls(*(optional_text(tls, k, f"{where}.tls") for k in ("ca_file", "cert_file", "key_file")))
        if config.get("tls") is not None
        else None,
        username=env.get(USERNAME_ENV) or optional_text(config, "username", where),
        password=env.get(PASSWORD_ENV) or optional_text(config, "password", where),
        environment=env,
    )
