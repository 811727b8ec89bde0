"""TLS and SASL settings become the same client arguments for every Kafka client a service or the CLI builds."""

from __future__ import annotations

import asyncio
import functools
import secrets
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import SecretStr
from tweetshop_platform.kafka import create_broker, create_producer
from tweetshop_platform.kafka_security import KafkaSecurityError, broker_security, client_security, describe
from tweetshop_platform.lag import ConsumerLagMonitor, group_consumer
from tweetshop_platform.settings import ServiceSettings

PASSWORD = secrets.token_urlsafe(32)
SECURITY_FIELDS = [
    name for name in ServiceSettings.model_fields if name.startswith(("kafka_security", "kafka_sasl", "kafka_ssl"))
]


pytestmark = pytest.mark.usefixtures("no_tweetshop_environment")


def settings(**values: Any) -> ServiceSettings:
    return ServiceSettings(service_name="catalog", **values)


def sasl(protocol: str = "SASL_PLAINTEXT", mechanism: str = "SCRAM-SHA-512", **values: Any) -> ServiceSettings:
    return settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="catalog",
        kafka_sasl_password=SecretStr(PASSWORD),
        **values,
    )


def system_ca_file() -> Path:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.fail("no CA bundle on this machine (ca-certificates): the TLS settings cannot be checked")


def test_the_block_has_every_setting_a_kafka_client_takes() -> None:
    assert set(SECURITY_FIELDS) == {
        "kafka_security_protocol",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "kafka_ssl_key_password",
        "kafka_ssl_check_hostname",
    }


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    s = settings()
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert client_security(s) == {}
    assert broker_security(s) is None
    assert describe(s) == "PLAINTEXT"


@pytest.mark.parametrize(
    ("mechanism", "kind"),
    [("SCRAM-SHA-256", SASLScram256), ("SCRAM-SHA-512", SASLScram512), ("PLAIN", SASLPlaintext)],
)
def test_sasl_gives_mechanism_user_and_password_to_aiokafka_and_faststream(mechanism: str, kind: type) -> None:
    s = sasl(mechanism=mechanism)
    options = client_security(s)
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "catalog",
        "sasl_plain_password": PASSWORD,
    }
    security = broker_security(s)
    assert isinstance(security, kind)
    # FastStream turns its security object back into aiokafka arguments: the very same ones.
    assert parse_security(security) == {**options, "ssl_context": None}
    assert PASSWORD not in describe(s) and "catalog" in describe(s)


def test_sasl_ssl_encrypts_and_checks_the_broker_certificate() -> None:
    s = sasl("SASL_SSL", kafka_ssl_cafile=system_ca_file())
    options = client_security(s)
    context = options["ssl_context"]
    assert options["security_protocol"] == "SASL_SSL"
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    security = broker_security(s)
    assert isinstance(security, SASLScram512) and security.use_ssl and security.ssl_context is not None
    assert parse_security(security)["security_protocol"] == "SASL_SSL"


def test_ssl_without_sasl_and_without_a_hostname_check_still_verifies_the_chain() -> None:
    s = settings(kafka_security_protocol="SSL", kafka_ssl_cafile=system_ca_file(), kafka_ssl_check_hostname=False)
    options = client_security(s)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert not options["ssl_context"].check_hostname
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    security = broker_security(s)
    assert type(security) is BaseSecurity and security.use_ssl
    assert parse_security(security)["security_protocol"] == "SSL"


def test_a_client_certificate_is_loaded_for_mutual_tls(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make a test certificate")
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=catalog",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    s = settings(kafka_security_protocol="SSL", kafka_ssl_cafile=cert, kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    assert isinstance(client_security(s)["ssl_context"], ssl.SSLContext)
    with pytest.raises(KafkaSecurityError, match="TWEETSHOP_KAFKA_SSL_CERTFILE"):
        client_security(settings(kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "missing.pem"))
    with pytest.raises(KafkaSecurityError, match="TWEETSHOP_KAFKA_SSL_CAFILE"):
        client_security(settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing-ca.pem"))
    with pytest.raises(KafkaSecurityError, match="without TWEETSHOP_KAFKA_SSL_CERTFILE"):
        client_security(settings(kafka_security_protocol="SSL", kafka_ssl_keyfile=key))


@pytest.mark.parametrize("missing", ["kafka_sasl_username", "kafka_sasl_password"])
def test_sasl_without_user_or_password_is_refused_naming_the_variables(missing: str) -> None:
    values: dict[str, Any] = {"kafka_sasl_username": "catalog", "kafka_sasl_password": SecretStr(PASSWORD)}
    values.pop(missing)
    s = settings(kafka_security_protocol="SASL_PLAINTEXT", **values)
    with pytest.raises(KafkaSecurityError, match="TWEETSHOP_KAFKA_SASL_USERNAME and TWEETSHOP_KAFKA_SASL_PASSWORD"):
        client_security(s)
    with pytest.raises(KafkaSecurityError):
        create_broker(s)  # the service does not start half-configured


def test_the_password_is_read_from_a_file_and_never_shown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "kafka_password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    monkeypatch.setenv("TWEETSHOP_SERVICE_NAME", "catalog")
    monkeypatch.setenv("TWEETSHOP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TWEETSHOP_KAFKA_SASL_USERNAME", "catalog")
    monkeypatch.setenv("TWEETSHOP_KAFKA_SASL_PASSWORD_FILE", str(secret))
    s = ServiceSettings()
    assert client_security(s)["sasl_plain_password"] == PASSWORD
    assert PASSWORD not in repr(s) and PASSWORD not in str(s.model_dump())


def test_every_client_the_platform_builds_carries_the_security() -> None:
    s = sasl()
    expected = client_security(s)
    broker = create_broker(s)
    builder = broker.config.broker_config.builder  # what FastStream builds its subscribers' consumers with
    assert isinstance(builder, functools.partial)
    consumer_options = builder.keywords
    assert {key: consumer_options[key] for key in expected} == expected

    async def built() -> None:
        producer = create_producer(s, client_suffix="outbox")
        lag = group_consumer("localhost:1", "catalog.orders", security=expected)
        try:
            for client in (producer.client, lag._client):
                assert client._security_protocol == "SASL_PLAINTEXT"
                assert client._sasl_mechanism == "SCRAM-SHA-512"
                assert client._sasl_plain_username == "catalog"
                assert client._sasl_plain_password == PASSWORD
        finally:
            await producer.stop()
            await lag.stop()

    asyncio.run(built())
    monitor = ConsumerLagMonitor("localhost:1", names=_names(), subscriptions=[("g", "t")], security=expected)
    assert monitor._security == expected


def _names() -> Any:
    from tweetshop_platform.kafka import TopicNames

    return TopicNames("")
