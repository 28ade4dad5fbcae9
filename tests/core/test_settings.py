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
            "BASEWATCH_ALERT_MIN_PRECISION": "0.35",
            "BASEWATCH_ALERT_DIGEST_DAY": "Friday",
        }
    )
    assert settings.alert_min_precision == 0.35
    assert settings.alert_digest_day == "friday"
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
        ("BASEWATCH_ALERT_MIN_PRECISION", "half", "must be a number"),
        ("BASEWATCH_ALERT_MIN_PRECISION", "1.5", "between 0 and 1"),
        ("BASEWATCH_ALERT_DIGEST_DAY", "someday", "must be one of monday,"),
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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bw:pw@db:5432/basewatch", "postgresql://bw:***@db:5432/basewatch"),
        (
            "postgresql://bw@db/basewatch?password=s3cret&sslmode=require",
            "postgresql://bw@db/basewatch?password=***&sslmode=require",
        ),
        ("postgresql://db?user=bw&password=s3cret", "postgresql://db?user=bw&password=***"),
        ("postgresql://db?user=bw&Password=s3cret", "(not a valid connection string; not shown)"),
        (
            "postgresql://bw:pw@db/basewatch?password=s3cret",
            "postgresql://bw:***@db/basewatch?password=***",
        ),
        ("postgresql://bw@db/basewatch", "postgresql://bw@db/basewatch"),
    ],
)
def test_config_masks_a_uri_password_wherever_it_is(url: str, shown: str) -> None:
    assert (
        Settings.from_env({"BASEWATCH_DATABASE_URL": url}).public()["BASEWATCH_DATABASE_URL"]
        == shown
    )


def test_config_masks_a_conninfo_password() -> None:
    for url in (
        "host=db user=bw password=s3cret dbname=basewatch",
        "host=db password='s3 cret' dbname=basewatch",
    ):
        shown = Settings.from_env({"BASEWATCH_DATABASE_URL": url}).public()[
            "BASEWATCH_DATABASE_URL"
        ]
        assert "s3" not in shown
        assert "password=***" in shown
        assert "host=db" in shown


def test_client_ids_are_stable_and_distinct_per_process() -> None:
    settings = Settings.from_env({"BASEWATCH_MQTT_CLIENT_ID": "ingest-a"})
    assert settings.effective_client_id(0) == "ingest-a"
    assert settings.effective_client_id(1) == "ingest-a-1"


def test_default_client_id_is_stable_and_not_guessable_without_the_password() -> None:
    one = Settings(mqtt_username="basewatch-ingest-1", mqtt_password="s3cret")
    assert one.effective_client_id() == one.replace().effective_client_id()  # stable
    other_password = one.replace(mqtt_password="another")
    other_user = one.replace(mqtt_username="basewatch-ingest-2")
    ids = {one.effective_client_id(), other_password.effective_client_id()}
    ids.add(other_user.effective_client_id())
    assert len(ids) == 3
    assert one.effective_client_id().startswith("basewatch-ingest-")
    assert one.effective_client_id(2) == f"{one.effective_client_id()}-2"
    # set explicitly, it is used as given
    assert one.replace(mqtt_client_id="ingest-a").effective_client_id() == "ingest-a"


def test_each_ingester_process_has_its_own_username() -> None:
    settings = Settings(mqtt_username="basewatch-ingest-1", mqtt_password="x")
    assert settings.effective_username(0) == "basewatch-ingest-1"
    assert settings.effective_username(1) == "basewatch-ingest-1-1"
    assert Settings().effective_username(3) == ""


def test_api_limits() -> None:
    settings = Settings.from_env({})
    assert (settings.api_db_pool_max, settings.api_db_pool_timeout_s) == (8, 5)
    assert (settings.api_threads, settings.api_max_connections) == (16, 64)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BASEWATCH_API_THREADS": "32", "BASEWATCH_API_MAX_CONNECTIONS": "16"})
    assert caught.value.name == "BASEWATCH_API_MAX_CONNECTIONS"
    with pytest.raises(ConfigError, match="between 1 and 1000"):
        Settings.from_env({"BASEWATCH_API_DB_POOL_MAX": "0"})


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
