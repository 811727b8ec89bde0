"""The one declaration of the system: every service, the topics it owns, the groups it consumes with, its resources.

Everything else is read from ``SYSTEM`` instead of being written again:

- the runtime's subscriptions (``ServiceRuntime.subscribe_declared``: a service's main.py maps each declared group
  to its handler, nothing more) and the topics it creates, with the settings below (``ensure_topics``);
- the contract documents (``topology.TOPICS`` → docs/topics.md, docs/asyncapi.json, docs/asyncapi/<service>.json);
- the `tweetshop` command's consumer groups and read models (``tweetshop_cli.groups``) and the broker's ACLs and
  provisioning script (``tweetshop_cli.acls``);
- the devstack (``tweetshop_devstack.services``: ports, what each process needs), the benchmarks' stack, the
  reconciliation checker, the container health probe's ports and the tests of docker-compose.yml and of the
  Postgres init script.

Public names (topic names, group ids ``<service>.<group>``, event types) are contract v1: extend, never rename.
The event types of a topic are not repeated here: each event class in ``events.py`` names its ``TOPIC``.
docs/adding-a-service.md says what is left to do by hand for a new service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from . import topics
from .envelope import Envelope
from .events import EVENT_TYPES

DEFAULT_PARTITIONS = 6
PARTITIONS_SETTING = "TWEETSHOP_KAFKA_TOPIC_PARTITIONS"
# Replicas a topic asks for; a service creating it caps the number at the brokers in the cluster (one in
# `make run` and docker-compose), and TWEETSHOP_KAFKA_TOPIC_REPLICATION_FACTOR overrides it.
DEFAULT_REPLICATION_FACTOR = 3
REPLICATION_FACTOR_SETTING = "TWEETSHOP_KAFKA_TOPIC_REPLICATION_FACTOR"

FOREVER = -1
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TOPIC = re.compile(r"^[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*\.v[1-9][0-9]*$")


@dataclass(frozen=True)
class TopicConfig:
    """The broker settings a topic is created with (``kafka-topics.sh --config``, CreateTopics ``configs``)."""

    retention_ms: int  # FOREVER (-1): nothing ages out
    cleanup_policy: Literal["delete", "compact"] = "delete"

    def kafka_configs(self) -> dict[str, str]:
        """The topic configs as the broker spells them."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


# Every <topic>.dlq: long enough for someone to look at a parked message and replay it.
DLQ_CONFIG = TopicConfig(retention_ms=30 * DAY_MS)


@dataclass(frozen=True)
class Topic:
    """A topic a service owns (the only one that writes it)."""

    name: str  # <owner>.<name>.v<N>, a public name: never renamed
    summary: str
    retention: str  # why the topic keeps what it keeps (shown in the documents next to ``config``)
    config: TopicConfig
    partitions: int | None = None  # None: the service's PARTITIONS_SETTING (DEFAULT_PARTITIONS)
    replication_factor: int = DEFAULT_REPLICATION_FACTOR


@dataclass(frozen=True)
class Reads:
    """One topic a consumer group reads, and what the service does with it."""

    topic: str
    purpose: str
    # The topic's event types the group acts on; empty: all of them. Its handler says the same with ``@handles``
    # (the runtime refuses to start when they differ); the others are skipped unread, without an inbox row.
    handles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rebuild:
    """Tables a group keeps only from its topic, so `tweetshop replay <service>.<group>` can drop and rebuild them."""

    tables: tuple[str, ...]
    handler: str  # "module:function": the handler the service maps to the group (the runtime checks it)
    description: str


@dataclass(frozen=True)
class Group:
    """A consumer group a service runs; its id is ``<namespace><service>.<name>``.

    Reliable (``fan_out=False``): one group shared by the service's replicas, reading one topic from the earliest
    message, committing after its transaction, inbox dedupe, dead letters on ``<topic>.dlq``; the runtime runs it
    with the handler main.py maps to ``name``. A live view (``fan_out=True``): each process reads from the newest
    message in a group of its own (``<service>.<name>.<uuid>``), commits and parks nothing; the service runs it
    itself (tracking's live map).
    """

    name: str
    reads: tuple[Reads, ...]
    fan_out: bool = False
    # The handler only keeps a copy of another service's data, off a purchase's path: its consumer waits longer
    # per fetch (TWEETSHOP_KAFKA_READ_MODEL_FETCH_MAX_WAIT_MS), which costs the broker less.
    read_model: bool = False
    rebuild: Rebuild | None = None
    # Between a buyer's POST and the order's payment (catalog reserving stock, checkout hearing it): its consumer
    # always fetches with the short wait. Every other consumer waits longer per fetch once it has found nothing
    # for a while (TWEETSHOP_KAFKA_QUIET_FETCH_MAX_WAIT_MS), so a stack at rest asks the broker less often.
    purchase_path: bool = False
    # What the handler does, no buyer waits on within the purchase (tracking creating a paid order's shipment): its
    # consumer fetches as a read model's does, with the longer wait, answered at the first record. On Tansu every
    # fetch of a partition with new data lists each batch the partition ever stored, so a busy topic's readers
    # cost the broker by how often they fetch (bench/README.md, stop 33).
    patient: bool = False

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the group reads."""
        return tuple(r.topic for r in self.reads)


@dataclass(frozen=True)
class Service:
    """One process: ``python -m <package>`` listening on ``port``."""

    name: str  # also its Postgres schema and role, its Kafka user, the prefix of its groups and topics
    port: int  # contract v1: the same in `make run` and docker-compose
    package: str  # the Python package under services/<name>/src, run as `python -m <package>`
    settings: str  # "module:Class" of its settings (pydantic-settings, TWEETSHOP_*)
    owns: tuple[Topic, ...] = ()
    groups: tuple[Group, ...] = ()
    database: bool = True  # its own schema and login role, both named after it
    kafka: bool = True
    stripe: bool = False
    # Serves pages whose links carry its own public address (TWEETSHOP_PUBLIC_URL).
    public_pages: bool = False
    # Services whose public address it puts in its answers (TWEETSHOP_<NAME>_PUBLIC_URL).
    links_to: tuple[str, ...] = ()
    # Calls every other service's API (TWEETSHOP_<NAME>_URL for each, and Stripe's): the buyer web app.
    gateway: bool = False
    # `make run` starts it only when its package is installed.
    optional: bool = False
    # Helpers `make run` starts beside it: `python -m <module> --<service>-url <its URL>` (the demo's courier).
    dev_companions: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """What ``python -m`` runs."""
        return self.package

    @property
    def reliable_groups(self) -> tuple[Group, ...]:
        """The groups the runtime runs with a handler each."""
        return tuple(g for g in self.groups if not g.fan_out)

    @property
    def live_views(self) -> tuple[Group, ...]:
        """The fan-out groups the service runs itself."""
        return tuple(g for g in self.groups if g.fan_out)

    def group(self, name: str) -> Group:
        """The group called ``name``."""
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"{self.name} declares no consumer group {name!r}")

    def group_id(self, group: str, namespace: str = "") -> str:
        """The consumer group id (the prefix of a live view's per-process ids)."""
        return f"{namespace}{self.name}.{group}"

    def consumes(self, *, reliable_only: bool = False) -> tuple[str, ...]:
        """The topics its groups read (``reliable_only``: not as a live view), in declaration order."""
        found: dict[str, None] = {}
        for group in self.groups:
            if not (reliable_only and group.fan_out):
                found.update(dict.fromkeys(group.topics))
        return tuple(found)

    def parks_to(self) -> tuple[str, ...]:
        """The dead-letter topics it writes: one per topic a reliable group of it reads."""
        return tuple(topics.dlq_topic(t) for t in self.consumes(reliable_only=True))


@dataclass(frozen=True)
class Consumer:
    """A service that reads a topic, and why (derived from its groups)."""

    service: str
    purpose: str
    # A live view: one throwaway consumer group per process reading from the newest message, committing
    # nothing and parking nothing (every replica sees every message). Otherwise a reliable consumer: one
    # group shared by the service's replicas, from the earliest message, inbox dedupe, dead letters.
    fan_out: bool = False
    group: str = ""  # the group's name within the service


@dataclass(frozen=True)
class TopicSpec:
    """One topic as readers see it: its producer, its consumers, its settings and what readers may expect of it."""

    name: str
    producer: str
    summary: str
    retention: str
    consumers: tuple[Consumer, ...]
    config: TopicConfig = TopicConfig(retention_ms=7 * DAY_MS)
    partitions: int | None = None
    replication_factor: int = DEFAULT_REPLICATION_FACTOR

    def dlq(self) -> str | None:
        """The dead-letter topic, when a reliable consumer reads this topic (live views park nothing)."""
        return topics.dlq_topic(self.name) if any(not c.fan_out for c in self.consumers) else None


class DeclarationError(ValueError):
    """The declaration contradicts itself."""


@dataclass(frozen=True)
class System:
    """Every service and every event type; ``check()`` (run on construction) refuses a contradiction."""

    services: tuple[Service, ...]
    event_types: tuple[type[Envelope], ...] = field(default=EVENT_TYPES)

    def __post_init__(self) -> None:
        problems = list(self.problems())
        if problems:
            raise DeclarationError("the system declaration is inconsistent:\n  - " + "\n  - ".join(problems))

    # --- lookups ------------------------------------------------------------------------------------------------

    def service(self, name: str) -> Service:
        """The service called ``name``."""
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r} is declared")

    def find(self, name: str) -> Service | None:
        """The service called ``name``, or None."""
        return next((s for s in self.services if s.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        """Every service, in declaration order."""
        return tuple(s.name for s in self.services)

    def with_database(self) -> tuple[Service, ...]:
        """The services with a schema and a role of their own."""
        return tuple(s for s in self.services if s.database)

    def with_kafka(self) -> tuple[Service, ...]:
        """The services that produce or consume."""
        return tuple(s for s in self.services if s.kafka)

    def ports(self) -> dict[str, int]:
        """Each service's contract port."""
        return {s.name: s.port for s in self.services}

    def topics(self) -> tuple[Topic, ...]:
        """Every topic, in declaration order (its owner's order, then the owner's)."""
        return tuple(t for s in self.services for t in s.owns)

    def topic(self, name: str) -> Topic:
        """The topic called ``name``."""
        for topic in self.topics():
            if topic.name == name:
                return topic
        raise KeyError(f"no topic {name!r} is declared")

    def owner(self, topic: str) -> Service:
        """The service that owns (writes) ``topic``."""
        for service in self.services:
            if any(t.name == topic for t in service.owns):
                return service
        raise KeyError(f"no service owns {topic!r}")

    def config(self, topic: str) -> TopicConfig:
        """What ``topic`` (or a dead-letter topic) is created with."""
        if topic.endswith(topics.DLQ_SUFFIX) and topic.removesuffix(topics.DLQ_SUFFIX) in self.topic_names():
            return DLQ_CONFIG
        return self.topic(topic).config

    def topic_names(self) -> tuple[str, ...]:
        """Every topic's name."""
        return tuple(t.name for t in self.topics())

    def events_of(self, topic: str) -> tuple[type[Envelope], ...]:
        """The event types published on ``topic``, in the order they are declared."""
        return tuple(event for event in self.event_types if event.TOPIC == topic)

    def key_field(self, topic: str) -> str:
        """The field whose value is the message key of every event on ``topic``."""
        fields = {event.KEY_FIELD for event in self.events_of(topic)}
        if len(fields) != 1:
            raise ValueError(f"events on {topic} must share one key field, found {sorted(fields)}")
        return fields.pop()

    def consumers_of(self, topic: str) -> Iterator[tuple[Service, Group, Reads]]:
        """Who reads ``topic``: each (service, group, what it reads), in declaration order."""
        for service in self.services:
            for group in service.groups:
                for reads in group.reads:
                    if reads.topic == topic:
                        yield service, group, reads

    def topic_specs(self) -> tuple[TopicSpec, ...]:
        """Every topic as its readers see it (``topology.TOPICS``)."""
        return tuple(
            TopicSpec(
                name=topic.name,
                producer=self.owner(topic.name).name,
                summary=topic.summary,
                retention=topic.retention,
                consumers=tuple(
                    Consumer(service.name, reads.purpose, fan_out=group.fan_out, group=group.name)
                    for service, group, reads in self.consumers_of(topic.name)
                ),
                config=topic.config,
                partitions=topic.partitions,
                replication_factor=topic.replication_factor,
            )
            for topic in self.topics()
        )

    def dead_letter_topics(self) -> tuple[str, ...]:
        """Every ``<topic>.dlq`` a reliable consumer may park to, in topic order."""
        return tuple(dlq for spec in self.topic_specs() if (dlq := spec.dlq()) is not None)

    # --- consistency --------------------------------------------------------------------------------------------

    def problems(self) -> Iterator[str]:
        """Every contradiction in the declaration (none: it is consistent)."""
        seen_names: set[str] = set()
        seen_ports: dict[int, str] = {}
        for service in self.services:
            if not _NAME.match(service.name):
                yield f"service name {service.name!r}: lower case letters, digits and _ only"
            if service.name in seen_names:
                yield f"service {service.name} is declared twice"
            seen_names.add(service.name)
            if service.port in seen_ports:
                yield f"{service.name} and {seen_ports[service.port]} share port {service.port}"
            seen_ports[service.port] = service.name
            if not service.kafka and (service.owns or service.groups):
                yield f"{service.name} does not use Kafka but owns topics or consumes"
            if service.reliable_groups and not service.database:
                yield f"{service.name} has reliable consumer groups but no database (their inbox and offsets)"
            group_names = [g.name for g in service.groups]
            for name in sorted({n for n in group_names if group_names.count(n) > 1}):
                yield f"{service.name} declares the group {name!r} twice"
        topic_owners: dict[str, str] = {}
        for service in self.services:
            for topic in service.owns:
                if topic.name in topic_owners:
                    yield f"{topic.name} is owned by {topic_owners[topic.name]} and {service.name}"
                topic_owners[topic.name] = service.name
                if not _TOPIC.match(topic.name) or not topic.name.startswith(f"{service.name.replace('_', '-')}."):
                    yield f"topic {topic.name}: name it <owner>.<name>.v<N>, the owner being {service.name}"
                events = self.events_of(topic.name)
                if not events:
                    yield f"{topic.name} has no event type (an event class with TOPIC = {topic.name!r})"
                elif len({e.KEY_FIELD for e in events}) != 1:
                    yield f"the events of {topic.name} do not share one key field"
                if topic.config.retention_ms < FOREVER or topic.config.retention_ms == 0:
                    yield f"{topic.name}: retention_ms is a positive number of milliseconds or FOREVER (-1)"
                if topic.partitions is not None and topic.partitions < 1:
                    yield f"{topic.name}: partitions must be at least 1"
                if topic.replication_factor < 1:
                    yield f"{topic.name}: replication_factor must be at least 1"
        for event in self.event_types:
            if event.TOPIC not in topic_owners:
                yield f"event {event.__name__} goes to {event.TOPIC}, which no service owns"
        for service in self.services:
            for group in service.groups:
                where = f"group {service.name}.{group.name}"
                if not _NAME.match(group.name):
                    yield f"{where}: lower case letters, digits and _ only"
                if not group.reads:
                    yield f"{where} reads nothing"
                for reads in group.reads:
                    if reads.topic not in topic_owners:
                        yield f"{where} reads {reads.topic}, which no service owns"
                    defined = {e.model_fields["event_type"].default for e in self.events_of(reads.topic)}
                    for event_type in sorted(set(reads.handles) - defined):
                        yield f"{where} handles {event_type}, which is no event type of {reads.topic}"
                if not group.fan_out and len(group.reads) != 1:
                    yield f"{where}: a reliable group reads exactly one topic (its lag, dead letters, replay)"
                if group.fan_out and (group.rebuild is not None or group.read_model):
                    yield f"{where}: a live view keeps no read model"
                if group.purchase_path and (group.fan_out or group.read_model):
                    yield f"{where}: a live view or a read model is not on a purchase's path"
                if group.patient and (group.fan_out or group.read_model or group.purchase_path):
                    yield f"{where}: only a reliable group off a purchase's path that is no read model is patient"
                module = group.rebuild.handler.partition(":")[0] if group.rebuild is not None else service.package
                if not (module == service.package or module.startswith(f"{service.package}.")):
                    yield f"{where}: its rebuild handler must be the service's own ({service.package}.…:function)"


# --- the system ---------------------------------------------------------------------------------------------------

_SEVEN_DAYS = TopicConfig(retention_ms=7 * DAY_MS)
# Forever, and not compacted: see each topic's retention for why compaction would lose what a reader needs.
_FOREVER = TopicConfig(retention_ms=FOREVER)

CATALOG = Service(
    "catalog",
    port=8001,
    package="catalog",
    settings="catalog.config:CatalogSettings",
    owns=(
        Topic(
            topics.CATALOG_MERCHANTS,
            summary=(
                "Merchants who joined, and their API key changes (an extension of contract v1): feed shows their "
                "handle and name on tweets; feed and checkout check a merchant's key against the hash carried here."
            ),
            # Not compacted: a merchant's MerchantApiKeyRotated (the latest message of its key) would remove its
            # MerchantRegistered, the only event with its handle and name.
            retention="Forever (`retention.ms=-1`): a new consumer rebuilds its merchant directory from the start.",
            config=_FOREVER,
        ),
        Topic(
            topics.CATALOG_PRODUCTS,
            summary="Every product's full state after each change (price, title, stock, status).",
            # Not compacted, although each event carries the product's full state: compaction keeps the LAST
            # message of a key, and an at-least-once re-publish can put an older version after a newer one
            # (docs/topics.md, "At least once"); compaction would then keep the stale state and drop the newest.
            retention="Forever (`retention.ms=-1`): a new consumer rebuilds its product view from the start.",
            config=_FOREVER,
        ),
        Topic(
            topics.CATALOG_RESERVATIONS,
            summary="The outcome of each stock reservation asked for by an order.",
            retention="At least 7 days (the Kafka default): enough to catch up after an outage.",
            config=_SEVEN_DAYS,
        ),
        Topic(
            topics.CATALOG_ALLOCATIONS,
            summary=(
                "Units of a product set aside for checkout, which reserves from them in the order's own transaction "
                "(contract 1.4.0): checkout's business, other teams may ignore it."
            ),
            retention="At least 7 days (the Kafka default): enough to catch up after an outage.",
            config=_SEVEN_DAYS,
        ),
    ),
    groups=(
        Group(
            "orders",
            (
                Reads(
                    topics.CHECKOUT_ORDERS,
                    "reserves stock for a placed order, releases it when it ends unpaid or is refunded",
                    handles=("OrderPlaced", "OrderPaid", "OrderPaymentFailed", "OrderCancelled", "OrderRefunded"),
                ),
            ),
            purchase_path=True,
        ),
        Group(
            "allocations",
            (Reads(topics.CHECKOUT_ALLOCATIONS, "takes back the allocated units checkout will never reserve"),),
        ),
    ),
)

FEED = Service(
    "feed",
    port=8002,
    package="feed",
    settings="feed.config:FeedSettings",
    owns=(
        Topic(
            topics.FEED_BUYABLE_TWEETS,
            summary="Tweets that carry a product and can be bought from.",
            retention="Forever (`retention.ms=-1`): a new consumer learns every buyable tweet from the start.",
            config=_FOREVER,
        ),
    ),
    groups=(
        Group(
            "merchants",
            (
                Reads(
                    topics.CATALOG_MERCHANTS,
                    "keeps the merchant handle and name it shows on tweets, and the key it posts with",
                ),
            ),
            read_model=True,
            rebuild=Rebuild(
                ("merchants",), "feed.handlers:on_merchant_event", "merchant handles and names shown on tweets"
            ),
        ),
        Group(
            "products",
            (
                Reads(
                    topics.CATALOG_PRODUCTS,
                    "keeps the live product card (price, in stock or sold out) on buyable tweets",
                ),
            ),
            read_model=True,
            rebuild=Rebuild(
                ("products",),
                "feed.handlers:on_product_event",
                "the live product cards on the timeline (price, stock, sold out)",
            ),
        ),
        Group(
            "buyers",
            (
                Reads(
                    topics.CHECKOUT_BUYERS,
                    "checks a buyer's credential on follows and the followed timeline; erases a deleted buyer's "
                    "follows",
                ),
            ),
            read_model=True,
            rebuild=Rebuild(
                ("buyer_credentials", "deleted_buyers"),
                "feed.handlers:on_buyer_event",
                "the buyers' credential verifiers (hashes) and deleted buyers",
            ),
        ),
    ),
)

CHECKOUT = Service(
    "checkout",
    port=8003,
    package="checkout",
    settings="checkout.config:CheckoutSettings",
    stripe=True,
    links_to=("tracking",),
    owns=(
        Topic(
            topics.CHECKOUT_ORDERS,
            summary="The life of every order: placed, paid, payment failed, cancelled, refunded, its buyer erased.",
            retention="At least 7 days (the Kafka default); the order history itself lives in checkout's database.",
            config=_SEVEN_DAYS,
        ),
        Topic(
            topics.CHECKOUT_BUYERS,
            summary=(
                "Buyer accounts as other services may know them (an extension of contract v1): an opaque buyer id "
                "and the SHA-256 of each credential issued or revoked, and the account's deletion. feed checks a "
                "buyer's credential against the hashes carried here. No e-mail, name, address or card."
            ),
            # Forever: a credential lives until it is revoked (a cookie lasts 400 days, and a linked device longer),
            # and a new consumer must learn every live one from the start. Not compacted: compaction keeps the LAST
            # message of a key (the buyer), so a second device's BuyerCredentialIssued would remove the first's.
            retention=(
                "Forever (`retention.ms=-1`): a credential works until it is revoked, so a new consumer rebuilds every "
                "verifier from the start; only opaque ids and hashes are kept."
            ),
            config=_FOREVER,
        ),
        Topic(
            topics.CHECKOUT_ALLOCATIONS,
            summary=(
                "Allocated units checkout gives back to catalog, never to reserve them (contract 1.4.0): catalog's "
                "business, other teams may ignore it."
            ),
            retention="At least 7 days (the Kafka default): enough to catch up after an outage.",
            config=_SEVEN_DAYS,
        ),
    ),
    groups=(
        Group(
            "merchants",
            (Reads(topics.CATALOG_MERCHANTS, "checks the API key of a merchant refunding one of its orders"),),
            read_model=True,
            rebuild=Rebuild(
                ("merchants",),
                "checkout.handlers:on_merchant_event",
                "whose API key refunds a merchant's orders (the key's hash)",
            ),
        ),
        Group(
            "products",
            (Reads(topics.CATALOG_PRODUCTS, "knows the current price and currency of what a buyer orders"),),
            read_model=True,
            rebuild=Rebuild(
                ("products",), "checkout.handlers:on_product_event", "prices and stock checkout charges from"
            ),
        ),
        Group(
            "tweets",
            (Reads(topics.FEED_BUYABLE_TWEETS, "accepts orders only for a buyable tweet and its product"),),
            read_model=True,
            rebuild=Rebuild(
                ("buyable_tweets",), "checkout.handlers:on_buyable_tweet", "which product each buyable tweet sells"
            ),
        ),
        Group(
            "reservations",
            (
                Reads(
                    topics.CATALOG_RESERVATIONS,
                    "moves the order on: pay once stock is reserved, cancel when it is rejected",
                    handles=("StockReserved", "StockRejected"),  # StockReleased confirms what checkout asked for
                ),
            ),
            purchase_path=True,
        ),
        Group(
            "allocations",
            (
                Reads(
                    topics.CATALOG_ALLOCATIONS,
                    "keeps the units allocated to it, to reserve from in the order's own transaction",
                ),
            ),
            # Not on a purchase's path: a grant only lets later orders skip catalog. At rest it is paced like a
            # read model (a first grant may wait up to the quiet fetch wait); while grants flow, it fetches fast.
        ),
        Group(
            "shipments",
            (Reads(topics.TRACKING_SHIPMENTS, "shows the buyer's `tracking_url` once the order has a shipment"),),
            read_model=True,
        ),
    ),
)

TRACKING = Service(
    "tracking",
    port=8004,
    package="tracking",
    settings="tracking.config:TrackingSettings",
    public_pages=True,
    dev_companions=("tweetshop_devstack.courier_sim",),
    owns=(
        Topic(
            topics.TRACKING_SHIPMENTS,
            summary="Shipments of paid orders and every change of their status.",
            retention="At least 7 days (the Kafka default).",
            config=_SEVEN_DAYS,
        ),
        Topic(
            topics.TRACKING_LOCATIONS,
            summary="Courier GPS points of each shipment, high volume.",
            retention="Short (24 hours is enough): only the live map reads it; the track itself is kept by tracking.",
            config=TopicConfig(retention_ms=DAY_MS),
        ),
    ),
    groups=(
        Group(
            "orders",
            (
                Reads(
                    topics.CHECKOUT_ORDERS,
                    "creates the shipment of a paid order; erases a deleted buyer's delivery point and track",
                    handles=("OrderPaid", "OrderRefunded", "OrderCancelled", "OrderBuyerErased"),
                ),
            ),
            patient=True,
        ),
        # tracking.live.<uuid>: one group per process (TrackingSettings.live_group_prefix), run by tracking's live.py.
        Group(
            "live",
            (
                Reads(topics.TRACKING_LOCATIONS, "pushes each point to the live map of every replica"),
                Reads(topics.TRACKING_SHIPMENTS, "pushes status changes to the live map of every replica"),
            ),
            fan_out=True,
        ),
    ),
)

WEBAPP = Service(
    "webapp",
    port=8000,
    package="webapp",
    settings="webapp.config:WebappSettings",
    database=False,
    kafka=False,
    gateway=True,
    optional=True,
)

SYSTEM = System((CATALOG, FEED, CHECKOUT, TRACKING, WEBAPP))
