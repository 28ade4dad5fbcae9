from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import Settings


def test_defaults_work_on_this_machine() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/basewatch"
    assert (settings.mqtt_host, settings.mqtt_port) == ("127.0.0.1", 1883)
    assert settings.topic_prefix == "basewatch/v1"
    assert settings.auto_register is False


def test_values_are_parsed_by_type() -> None:
    settings = Settings.from_env(
        {
            "BASEWATCH_MQTT_PORT": "8883",
            "BASEWATCH_MQTT_TLS": "yes",
            "BASEWATCH_AUTO_REGISTER": "TRUE",
            "BASEWATCH_TIMESCALE": "Off",
            "BASEWATCH_LOG_LEVEL": "debug",
            "BASEWATCH_TOPIC_PREFIX": "plant/v2",
        }
    )
    assert settings.mqtt_port == 8883
    assert settings.mqtt_tls is True
    assert settings.auto_register is True
    assert settings.timescale == "off"
    assert settings.log_level == "DEBUG"
    assert settings.topic_prefix == "plant/v2"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("BASEWATCH_MQTT_PORT", "eighty", "expected an integer"),
        ("BASEWATCH_MQTT_PORT", "70000", "between 1 and 65535"),
        ("BASEWATCH_AUTO_REGISTER", "maybe", "expected true or false"),
        ("BASEWATCH_TIMESCALE", "sometimes", "must be one of auto, on, off"),
        ("BASEWATCH_TOPIC_PREFIX", "plant/#", "without wildcards"),
        ("BASEWATCH_TOPIC_PREFIX", "/plant", "without wildcards"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert caught.value.name == name
    assert expected in str(caught.value)


def test_certificate_needs_key_and_password_needs_user() -> None:
    with pytest.raises(ConfigError, match="KEY_FILE"):
        Settings.from_env({"BASEWATCH_MQTT_CERT_FILE": "/etc/cert.pem"})
    with pytest.raises(ConfigError, match="USERNAME"):
        Settings.from_env({"BASEWATCH_MQTT_PASSWORD": "secret"})


def test_unknown_variables_are_reported_and_secrets_masked() -> None:
    env = {"BASEWATCH_MQTT_HOTS": "x", "BASEWATCH_MQTT_HOST": "broker"}
    assert Settings.unknown_variables(env) == ["BASEWATCH_MQTT_HOTS"]
    settings = Settings.from_env(
        {
            "BASEWATCH_MQTT_USERNAME": "ingest",
            "BASEWATCH_MQTT_PASSWORD": "s3cret",
            "BASEWATCH_DATABASE_URL": "postgresql://bw:pw@db:5432/basewatch",
        }
    )
    shown = settings.public()
    assert shown["BASEWATCH_MQTT_PASSWORD"] == "***"
    assert shown["BASEWATCH_DATABASE_URL"] == "postgresql://bw:***@db:5432/basewatch"


def test_client_ids_are_stable_and_distinct_per_process() -> None:
    settings = Settings.from_env({"BASEWATCH_MQTT_CLIENT_ID": "ingest-a"})
    assert settings.effective_client_id(0) == "ingest-a"
    assert settings.effective_client_id(1) == "ingest-a-1"


def test_placeholder_secrets_are_recognised_and_generated_ones_are_not() -> None:
    from core.settings import is_placeholder

    for value in (
        "change-me",
        "CHANGEME",
        "Change_Me!",
        "changeit",
        "password",
        "secret",
        "<token>",
        "xxxxxx",
        "example-api-token",
        "replace-me-please",
        "postgres",
    ):
        assert is_placeholder(value), value
    for value in ("", "   ", "9f3c1e7a2b4d", "q8ZyJx2w-LmN4", "hunter2", "s3cret-Proto-71"):
        assert not is_placeholder(value), value
