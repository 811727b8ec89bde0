"""Kafka: the broker every service uses, topic naming and topic creation with enough partitions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faststream.kafka import KafkaBroker
from tweetshop_contracts.topics import dlq_topic

from .kafka_security import broker_security, client_security
from .settings import ServiceSettings

log = structlog.get_logger(__name__)


class TopicNames:
    """Maps contract topic names to the physical ones (a namespace prefix in tests, none in production)."""

    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace

    def physical(self, logical: str) -> str:
        """The name on the broker."""
        return self.namespace + logical

    def logical(self, physical: str) -> str:
        """The contract name of a physical topic."""
        if self.namespace and physical.startswith(self.namespace):
            return physical[len(self.namespace) :]
        return physical

    def dlq(self, logical: str) -> str:
        """The physical dead-letter topic of a contract topic."""
        return self.physical(dlq_topic(logical))


def create_broker(settings: ServiceSettings) -> KafkaBroker:
    """A FastStream Kafka broker configured from settings (acks, idempotence, client id, TLS and SASL)."""
    acks: int | str = "all" if settings.kafka_acks == "all" else int(settings.kafka_acks)
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.service_name,
        acks=acks,
        enable_idempotence=settings.kafka_enable_idempotence,
        request_timeout_ms=15_000,
        logger=None,
        security=broker_security(settings),
        # No dependency injection: the only handlers are ReliableSubscriber's, which take FastStream's message as is
        # (consumer._the_message); injection cost a worker-thread hop per batch.
        apply_types=False,
    )


class CachedKeyPartitioner:
    """aiokafka's default partitioning (Kafka's murmur2 of the key), with each key's hash remembered.

    aiokafka computes murmur2 in pure Python, 4–5 % of tracking's CPU at 5,000 points/s: the relay sends
    many events per aggregate (a courier's points, an order's events), so most keys repeat. The partition
    is exactly the default's (``murmur2(key) & 0x7FFFFFFF % len(all_partitions)``), so keyed order and
    the partition other producers pick for a key do not change. At most ``max_keys`` hashes are kept;
    the memo starts afresh when full.
    """

    def __init__(self, max_keys: int = 65_536) -> None:
        self._max_keys = max_keys
        self._hashes: dict[bytes, int] = {}
        self._keyless = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._keyless(key, all_partitions, available))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def create_producer(settings: ServiceSettings, *, client_suffix: str) -> AIOKafkaProducer:
    """A plain aiokafka producer with the broker's settings (acks, idempotence), for the outbox relay: per
    message it costs about half of what a FastStream publish does (measured: 15 µs against 24–40 µs)."""
    acks: int | str = "all" if settings.kafka_acks == "all" else int(settings.kafka_acks)
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.service_name}-{client_suffix}",
        acks=acks,
        enable_idempotence=settings.kafka_enable_idempotence,
        request_timeout_ms=15_000,
        # aiokafka's default batch (16 KiB, ~25 events) made a relay round of a few thousand rows wait for a
        # broker round trip every few dozen sends; larger batches carry a round in a few requests per partition.
        max_batch_size=256 * 1024,
        linger_ms=settings.kafka_linger_ms,
        partitioner=CachedKeyPartitioner(),
        **client_security(settings),
    )


# CreateTopics error codes: the topic exists (another replica created it first), and the ones that mean the broker
# will not take the topic's configs (it then gets the broker's defaults: see ensure_topics).
_TOPIC_ALREADY_EXISTS = 36
_CONFIG_REFUSED = frozenset({35, 40, 42, 44})  # UNSUPPORTED_VERSION, INVALID_CONFIG, INVALID_REQUEST, POLICY_VIOLATION


async def _cluster_size(admin: AIOKafkaAdminClient) -> int:
    """How many brokers the cluster has (at least 1)."""
    try:
        cluster = await admin.describe_cluster()
    except (KafkaError, KeyError, AttributeError):  # a broker that cannot describe itself: assume one
        return 1
    return max(1, len(cluster.get("brokers") or ()))


def _asked(replication_factor: int | Mapping[str, int], topic: str) -> int:
    return replication_factor if isinstance(replication_factor, int) else replication_factor.get(topic, 1)


def _topic_errors(response: Any) -> dict[str, tuple[int, str]]:
    """Per-topic errors of a CreateTopics response (every version): {topic: (code, message)}."""
    errors = {}
    for entry in getattr(response, "topic_errors", ()) or ():
        topic, code = entry[0], entry[1]
        if code:
            errors[topic] = (int(code), str(entry[2]) if len(entry) > 2 and entry[2] else "")
    return errors


async def ensure_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    partitions: int,
    timeout: float = 60,
    *,
    security: Mapping[str, Any] | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    replication_factor: int | Mapping[str, int] = 1,
) -> None:
    """Create the topics (and leave existing ones as they are), retrying while the broker starts.

    ``security``: ``client_security(settings)`` (TLS and SASL arguments); the principal needs CREATE on them.
    ``configs``: topic configs by (physical) name, e.g. ``{"retention.ms": "-1", "cleanup.policy": "delete"}``
    (``tweetshop_contracts.system``). A broker that refuses them (an error code of ``_CONFIG_REFUSED``) gets the
    topic without them, with its own defaults, and a warning says so. ``replication_factor``: one for every topic,
    or by name (missing names: 1); never more than the brokers in the cluster.
    """
    wanted = sorted(set(names))
    configs = configs or {}
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.2
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000, **(security or {}))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            if missing:
                brokers = await _cluster_size(admin)
                replicas = {t: max(1, min(brokers, _asked(replication_factor, t))) for t in missing}
                creating = [
                    NewTopic(t, num_partitions=partitions, replication_factor=replicas[t], topic_configs=configs.get(t))
                    for t in missing
                ]
                with contextlib.suppress(TopicAlreadyExistsError):  # another replica created it first
                    errors = _topic_errors(await admin.create_topics(creating))
                    refused = sorted(t for t, (code, _) in errors.items() if code in _CONFIG_REFUSED and configs.get(t))
                    if refused:
                        log.warning(
                            "the broker refused the topic configs: topics created with its defaults",
                            topics=refused,
                            errors={t: errors.pop(t) for t in refused},
                        )
                        retried = [
                            NewTopic(t, num_partitions=partitions, replication_factor=replicas[t]) for t in refused
                        ]
                        errors.update(_topic_errors(await admin.create_topics(retried)))
                    failed = {t: error for t, error in errors.items() if error[0] != _TOPIC_ALREADY_EXISTS}
                    if failed:
                        log.warning("topics not created", errors=failed)
                log.info(
                    "topics created",
                    topics=missing,
                    partitions=partitions,
                    replication_factor=replicas,
                    configs={t: dict(configs[t]) for t in missing if t in configs},
                )
            return
        except (KafkaError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("broker not reachable yet", error=repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3)
        finally:
            await admin.close()
