"""${NAME} in client settings: read from the environment when a client is
configured, never before (a build's samples and an image's check run without
the secret); an unset variable is named, with the setting."""

from __future__ import annotations

import pytest

from kbuild.runtime.contract.fields import SettingsError
from kbuild.runtime.contract.references import reference_name
from kbuild.runtime.contract.serve import parse_serve

KAFKA = {
    "kafka": {
        "source": {"topic": "in"},
        "sink": {"topic": "out"},
        "client": {
            "sasl.username": "${KAFKA_USER}",
            "sasl.password": "${KAFKA_PASSWORD}",
            "client.id": "literal-${NOT_A_REFERENCE}",
        },
    }
}
MQTT = {"mqtt": {"request_topic": "req", "username": "${MQTT_USER}", "password": "${MQTT_PASSWORD}"}}


def test_kafka_settings_read_references_when_a_client_is_configured() -> None:
    settings = parse_serve(KAFKA, name="p", step_types=(), env={"KAFKA_USER": "ann", "KAFKA_PASSWORD": "s3cret"})
    assert settings.kafka is not None
    consumer = settings.kafka.consumer_settings()
    assert consumer["sasl.username"] == "ann" and consumer["sasl.password"] == "s3cret"
    assert consumer["client.id"] == "literal-${NOT_A_REFERENCE}"  # only whole values are references
    assert settings.kafka.producer_settings()["sasl.password"] == "s3cret"
    assert "s3cret" not in repr(settings.kafka)


def test_an_unset_variable_names_the_setting_and_the_variable() -> None:
    settings = parse_serve(KAFKA, name="p", step_types=(), env={"KAFKA_USER": "ann"})  # parsing needs no secret
    assert settings.kafka is not None
    with pytest.raises(SettingsError, match=r"serve\.kafka\.client\.sasl\.password is \$\{KAFKA_PASSWORD\}.*not set"):
        settings.kafka.consumer_settings()


def test_mqtt_credentials_from_references_and_the_old_variables() -> None:
    settings = parse_serve(MQTT, name="p", step_types=(), env={"MQTT_USER": "dev", "MQTT_PASSWORD": "pw"})
    assert settings.mqtt is not None and settings.mqtt.credentials() == ("dev", "pw")
    older = parse_serve(MQTT, name="p", step_types=(), env={"KBUILD_MQTT_USERNAME": "u", "KBUILD_MQTT_PASSWORD": "p"})
    assert older.mqtt is not None and older.mqtt.credentials() == ("u", "p")


@pytest.mark.parametrize(
    ("value", "name"), [("${A}", "A"), ("${A_1}", "A_1"), ("$A", None), ("x${A}", None), ("${1A}", None), (7, None)]
)
def test_what_counts_as_a_reference(value: object, name: str | None) -> None:
    assert reference_name(value) == name
