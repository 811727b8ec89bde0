"""Connections to the broker and the database that fail fast, with a message naming what could not be reached."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from tweetshop_platform.kafka_security import client_security, describe

from .settings import CliSettings

EXIT_FAILED = 1
EXIT_UNREACHABLE = 2


class CommandError(Exception):
    """The command cannot do what was asked (exit code 1); the message says why."""


class Unreachable(Exception):
    """The broker or the database does not answer (exit code 2); the message names the address."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def broker_unreachable(settings: CliSettings, exc: BaseException) -> Unreachable:
    """The error for a broker that does not answer."""
    return Unreachable(
        f"cannot reach the Kafka broker at {settings.kafka_bootstrap_servers} "
        f"(TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers; {describe(settings)}, "
        f"TWEETSHOP_KAFKA_SECURITY_PROTOCOL and TWEETSHOP_KAFKA_SASL_*): {_reason(exc)}"
    )


def kafka_security(settings: CliSettings) -> dict[str, Any]:
    """TLS and SASL arguments of every client the command builds (a bad setting is a CommandError)."""
    try:
        return client_security(settings)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def describe_dsn(dsn: str) -> str:
    """host:port/database of a DSN, without its password."""
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{user}{parts.hostname or 'localhost'}{port}{parts.path or '/'}"


@contextlib.asynccontextmanager
async def kafka_consumer(settings: CliSettings, *, group_id: str | None = None) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer (no subscription: commands assign partitions themselves)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="tweetshop-cli",
        **kafka_security(settings),
    )
    try:
        await asyncio.wait_for(consumer.start(), settings.connect_timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise broker_unreachable(settings, exc) from exc
    try:
        yield consumer
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def kafka_producer(settings: CliSettings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer that waits for every replica (``acks=all``)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        client_id="tweetshop-cli",
        **kafka_security(settings),
    )
    try:
        await asyncio.wait_for(producer.start(), settings.connect_timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise broker_unreachable(settings, exc) from exc
    try:
        yield producer
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def kafka_admin(settings: CliSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, client_id="tweetshop-cli", **kafka_security(settings)
    )
    try:
        await asyncio.wait_for(admin.start(), settings.connect_timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await admin.close()
        raise broker_unreachable(settings, exc) from exc
    try:
        yield admin
    finally:
        await admin.close()


async def _json_codecs(conn: asyncpg.Connection) -> None:
    # The same codecs as the services' pools: their handlers pass Python objects for json/jsonb columns.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


@contextlib.asynccontextmanager
async def database(settings: CliSettings, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection whose search_path is ``schema`` (the service's own schema)."""
    dsn = settings.database_url.get_secret_value()
    try:
        conn = await asyncpg.connect(
            dsn,
            timeout=settings.connect_timeout_s,
            server_settings={"search_path": schema, "application_name": "tweetshop-cli"},
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise Unreachable(
            f"cannot connect to the database at {describe_dsn(dsn)} (TWEETSHOP_DATABASE_URL or --database-url): "
            f"{_reason(exc)}"
        ) from exc
    try:
        await _json_codecs(conn)
        yield conn
    finally:
        await conn.close()


async def confirm_operator(settings: CliSettings, action: str) -> None:
    """Go on only if a running service confirms the operator key (``GET /ops/operator``, served by every one).

    The command itself talks to the broker and the database directly; the key ties what it changes
    for every merchant and buyer to the one operator credential the services enforce.
    """
    key = settings.operator_key.get_secret_value() if settings.operator_key is not None else ""
    if not key:
        raise CommandError(f"{action} acts for every merchant and buyer: set TWEETSHOP_OPERATOR_KEY (the operator key)")
    url = settings.operator_check_url.rstrip("/") + "/ops/operator"
    try:
        async with httpx.AsyncClient(timeout=settings.connect_timeout_s) as client:
            answer = await client.get(url, headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        raise Unreachable(
            f"cannot confirm the operator key: {url} does not answer ({_reason(exc)}); "
            "set TWEETSHOP_OPERATOR_CHECK_URL to any running tweetshop service"
        ) from None
    if answer.status_code in (401, 403):
        raise CommandError(f"{url} refused the operator key: it is not this deployment's TWEETSHOP_OPERATOR_KEY")
    if answer.status_code != 204:
        raise Unreachable(f"cannot confirm the operator key: {url} answered {answer.status_code}")
