"""Outside development a service refuses a missing, public or short operator key; secrets can come from files."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError
from tweetshop_platform.settings import (
    DEV_OPERATOR_KEY,
    MAKE_A_SECRET,
    MIN_SECRET_BYTES,
    InsecureSecretsError,
    ServiceSettings,
)

STRONG = secrets.token_urlsafe(48)


pytestmark = pytest.mark.usefixtures("no_tweetshop_environment")


def settings(**values: object) -> ServiceSettings:
    return ServiceSettings(service_name="catalog", **values)  # type: ignore[arg-type]


def refusal(s: ServiceSettings) -> str:
    with pytest.raises(InsecureSecretsError) as caught:
        s.check_secrets()
    return str(caught.value)


def test_the_environment_is_production_unless_development_is_said() -> None:
    assert settings().environment == "production"


def test_a_misspelt_environment_is_refused_rather_than_taken_for_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETSHOP_ENVIRONMENT", "dev")
    with pytest.raises(ValidationError, match="environment"):
        settings()


def test_production_refuses_the_public_default_operator_key() -> None:
    message = refusal(settings())
    assert "TWEETSHOP_OPERATOR_KEY is a public default" in message
    assert MAKE_A_SECRET in message, "the message says how to make a key"
    assert "catalog refuses to start" in message
    assert DEV_OPERATOR_KEY not in message, "a secret value is never printed"


def test_production_refuses_a_missing_operator_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY", "")
    assert "TWEETSHOP_OPERATOR_KEY is not set" in refusal(settings())


def test_production_refuses_a_short_operator_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY", "x" * (MIN_SECRET_BYTES - 1))
    message = refusal(settings())
    assert f"TWEETSHOP_OPERATOR_KEY is {MIN_SECRET_BYTES - 1} bytes, shorter than {MIN_SECRET_BYTES}" in message
    assert "x" * (MIN_SECRET_BYTES - 1) not in message


def test_production_accepts_a_strong_operator_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY", STRONG)
    s = settings()
    s.check_secrets()
    assert s.secret_problems() == []


def test_development_accepts_the_public_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETSHOP_ENVIRONMENT", "development")
    s = settings()
    assert s.environment == "development" and s.operator_key.get_secret_value() == DEV_OPERATOR_KEY
    s.check_secrets()
    assert s.secret_problems(), "the problems are still known, only not fatal"


def test_a_secret_is_read_from_the_file_its_FILE_variable_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "operator_key"
    key_file.write_text(STRONG + "\n", encoding="utf-8")  # `echo` or an editor leaves a newline
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY_FILE", str(key_file))
    s = settings()
    assert s.operator_key.get_secret_value() == STRONG
    s.check_secrets()


def test_an_empty_variable_does_not_hide_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "operator_key"
    key_file.write_text(STRONG, encoding="utf-8")
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY", "")
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY_FILE", str(key_file))
    assert settings().operator_key.get_secret_value() == STRONG


def test_a_secret_set_both_ways_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "operator_key"
    key_file.write_text(STRONG, encoding="utf-8")
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY", secrets.token_urlsafe(48))
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY_FILE", str(key_file))
    with pytest.raises(SettingsError, match="both TWEETSHOP_OPERATOR_KEY and TWEETSHOP_OPERATOR_KEY_FILE"):
        settings()


def test_a_missing_secret_file_is_an_error_naming_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match=r"TWEETSHOP_OPERATOR_KEY_FILE=.*absent: cannot read it"):
        settings()


def test_only_secret_fields_are_read_from_FILE_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    level_file = tmp_path / "level"
    level_file.write_text("DEBUG", encoding="utf-8")
    monkeypatch.setenv("TWEETSHOP_LOG_LEVEL_FILE", str(level_file))
    assert settings().log_level == "INFO"


def test_a_secret_is_read_from_the_secrets_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tweetshop_operator_key").write_text(STRONG + "\n", encoding="utf-8")
    monkeypatch.setenv("TWEETSHOP_SECRETS_DIR", str(tmp_path))
    s = settings()
    assert s.operator_key.get_secret_value() == STRONG
    s.check_secrets()
    monkeypatch.setenv("TWEETSHOP_OPERATOR_KEY", "from-the-environment-" + STRONG)
    assert settings().operator_key.get_secret_value().startswith("from-the-environment-"), "the variable wins"


class WithAnOptionalSecret(ServiceSettings):
    service_name: str = "catalog"
    some_password: SecretStr | None = None


def test_an_optional_secret_is_read_from_a_file_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("from-a-file\r\n", encoding="utf-8")
    monkeypatch.setenv("TWEETSHOP_SOME_PASSWORD_FILE", str(password_file))
    value = WithAnOptionalSecret().some_password
    assert value is not None and value.get_secret_value() == "from-a-file"


def test_a_sasl_password_must_be_strong_outside_development() -> None:
    strong = secrets.token_urlsafe(48)
    weak = ServiceSettings(
        service_name="catalog",
        operator_key=SecretStr(strong),
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="catalog",
        kafka_sasl_password=SecretStr("kafka"),
    )
    with pytest.raises(InsecureSecretsError, match="TWEETSHOP_KAFKA_SASL_PASSWORD"):
        weak.check_secrets()
    weak.model_copy(update={"kafka_sasl_password": SecretStr(secrets.token_urlsafe(48))}).check_secrets()
    # Without SASL there is no password to check.
    ServiceSettings(service_name="catalog", operator_key=SecretStr(strong)).check_secrets()
