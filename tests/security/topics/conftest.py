"""Hostile input for the Kafka topics a service consumes: generated with hypothesis, published in bulk, judged.

Each test builds a batch per consumed topic (``TWEETSHOP_FUZZ_EXAMPLES`` sets its size, 24 by default):

- schema-valid events drawn from the topic's checked-in JSON Schemas (hypothesis-jsonschema ``from_schema``),
  some with odd but schema-valid values (huge integers, NUL and lone surrogates in strings, 150 KB strings);
- schema-breaking messages: byte garbage, truncated JSON, JSON that is not an object, wrong field types,
  150 KB+ strings in bounded fields (one 1.8 MB once escaped), NaN/Infinity literals, missing envelope fields,
  bad event_type values, 5000-digit numbers, 100 000-deep nesting, a tombstone, an empty value, invalid
  UTF-8, garbage under a JSON or text content-type header;
- valid events under hostile headers (non-UTF-8 bytes, lying content types, a 150 KB header, ``reply_to``);
- events of types the topic does not define (skipped by design, never parked);
- duplicates (the same event_id twice).

What each message must become is decided here, from the public contract only (``expected_fate``):
``park`` (on ``<topic>.dlq`` after exactly one attempt: it can never be decoded), ``skip`` (an unknown
event type) or ``handle`` (a valid event: applied and recorded in the inbox, or, when its handler fails on
its odd values, parked after the full bounded retries). A group that acts on some of its topic's types only
(``Reads.handles`` in the system declaration, ``@handles`` on its handler) *ignores* the others: a valid event
of such a type, or any message whose ``event_type`` header names one, is neither applied (no inbox row) nor
parked. ``TopicFuzz.judge`` checks every message.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.configuration

# hypothesis keeps caches in ./.hypothesis even with database=None (some at import): keep them out of the repository.
hypothesis.configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "tweetshop-topic-fuzz-hypothesis")

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import jsonschema  # noqa: E402
import pytest  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tweetshop_contracts import Envelope, decode_event  # noqa: E402
from tweetshop_contracts.events import ENVELOPE_FIELDS, EVENT_TYPES, event_types_of  # noqa: E402
from tweetshop_contracts.system import SYSTEM  # noqa: E402
from tweetshop_devstack.testing import Record, eventually_async, fetch, read_topic  # noqa: E402
from tweetshop_platform.consumer import PERMANENT_ERRORS  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
SCHEMAS = REPO / "libs" / "contracts" / "schemas" / "v1"
EXAMPLES = REPO / "libs" / "contracts" / "examples"

FUZZ_EXAMPLES = max(1, int(os.environ.get("TWEETSHOP_FUZZ_EXAMPLES", "24")))
MAX_RETRIES = 2


def _with_subclasses(cls: type[BaseException]) -> list[type[BaseException]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _with_subclasses(direct))]


# What a message parked at once, without the bounded retries, may have failed with (dlq_error_type).
PERMANENT_ERROR_TYPES = {c.__name__ for base in PERMANENT_ERRORS for c in _with_subclasses(base)}

# Bounded retries kept short so a batch full of failing events still drains in seconds.
# The tests play a checkout that asks catalog for every reservation: no units allocated to checkout (with them, a
# small stock is all allocated at listing, and catalog has none to give an order that did not come from them).
CONSUMER_ENV = {
    "TWEETSHOP_CONSUMER_MAX_RETRIES": str(MAX_RETRIES),
    "TWEETSHOP_CONSUMER_RETRY_BACKOFF_S": "0.02",
    "TWEETSHOP_ALLOCATION_UNITS": "0",
}
DRAIN_TIMEOUT_S = 90.0
HUGE = 150_000  # characters: well past every maxLength (an escaped emoji string of it is 1.8 MB)

_COLLECT = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
_UUID_FORMAT = {"uuid": st.uuids().map(str)}  # hypothesis-jsonschema knows no "uuid" format by itself
_JSON_LEAF = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


# --- what a message must become ----------------------------------------------------------------------------


def expected_fate(topic: str, value: bytes | None) -> str:
    """``park``, ``skip`` or ``handle``: what the reliable subscriber must do with ``value`` on ``topic``.

    Anything the v1 contract cannot decode is parked (without retries: it will never decode), except a
    well-formed JSON object whose non-empty string ``event_type`` the topic does not define: a newer
    producer's type, skipped (adding types is a compatible change). Everything else is handled.
    """
    try:
        raw = json.loads(value or b"")
    except (ValueError, RecursionError):
        return "park"
    if not isinstance(raw, dict):
        return "park"
    event_type = raw.get("event_type")
    if isinstance(event_type, str) and event_type and event_type not in event_types_of(topic):
        return "skip"
    try:
        decode_event(topic, value or b"")
    except (ValueError, RecursionError):
        return "park"
    return "handle"


@dataclass
class Hostile:
    """One message to publish, and what became of it on the broker."""

    topic: str  # the contract name (without the test's namespace)
    label: str  # the kind of hostility, for failure messages
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    must_apply: bool = False  # the sentinels and the ordered scenarios: never parked, always applied
    partition: int = -1
    offset: int = -1

    @property
    def fate(self) -> str:
        return expected_fate(self.topic, self.value)

    @property
    def event_id(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(str(json.loads(self.value or b"")["event_id"]))
        except (ValueError, RecursionError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        preview = (self.value or b"<tombstone>")[:120]
        return f"{self.label} @ {self.topic}[{self.partition}]:{self.offset} {preview!r}"


def event_message(event: Envelope, label: str, *, must_apply: bool = True) -> Hostile:
    """A contract event exactly as its producer would publish it."""
    headers = [(k, v.encode()) for k, v in event.headers().items()]
    return Hostile(event.topic(), label, event.to_bytes(), event.key().encode(), headers, must_apply)


def with_examples(topic: str) -> list[str]:
    """The topic's event types that have a checked-in example (a type added in code may not have one yet)."""
    return sorted(
        t
        for t in event_types_of(topic)
        if (EXAMPLES / f"{t}.json").exists() and (SCHEMAS / topic / f"{t}.json").exists()
    )


def _some_type(topic: str) -> type[Envelope]:
    return next(c for c in EVENT_TYPES if c.TOPIC == topic and c.__name__ in with_examples(topic))


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def example(event_type: str) -> dict[str, Any]:
    """The checked-in example of ``event_type``, with a fresh event_id."""
    raw: dict[str, Any] = json.loads((EXAMPLES / f"{event_type}.json").read_text())
    raw["event_id"] = str(uuid.uuid4())
    return raw


# --- generating the batch ----------------------------------------------------------------------------------


def _collect(strategy: st.SearchStrategy[Any], max_examples: int = FUZZ_EXAMPLES) -> list[Any]:
    """Run hypothesis over ``strategy`` and keep what it drew (the publishing happens later, in bulk)."""
    drawn: list[Any] = []

    @settings(_COLLECT, max_examples=max_examples)
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


def _schema_strategy(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``from_schema`` for every leaf; objects are composed here (hypothesis-jsonschema 0.23.1's object
    strategy calls ``many.more()``, which hypothesis 6.170 no longer has)."""
    if "$ref" in schema:
        return _schema_strategy(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if schema.get("type") == "object" or "properties" in schema:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        known = st.fixed_dictionaries(
            {k: _schema_strategy(v, defs) for k, v in properties.items() if k in required},
            optional={k: _schema_strategy(v, defs) for k, v in properties.items() if k not in required},
        )
        extra = st.dictionaries(st.text(max_size=10).filter(lambda k: k not in properties), ANY_JSON, max_size=2)
        return st.builds(lambda k, e: {**e, **k}, known, extra)
    from hypothesis_jsonschema import from_schema  # imported late: it reads hypothesis' caches at import

    return from_schema({**schema, "$defs": defs}, custom_formats=_UUID_FORMAT)


def _schemas(topic: str) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((SCHEMAS / topic).glob("*.json"))}


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _key_field(event_type: str) -> str:
    return next(cls.KEY_FIELD for cls in EVENT_TYPES if cls.model_fields["event_type"].default == event_type)


def _message(topic: str, label: str, raw: dict[str, Any], *, nan: bool = False) -> Hostile:
    """A dict as a message: keyed by its aggregate id when it has one, with the usual headers."""
    event_type = raw.get("event_type")
    key_field = _key_field(event_type) if event_type in event_types_of(topic) else ""
    key = str(raw[key_field]).encode() if isinstance(raw.get(key_field), str) else None
    headers = [
        (h, raw[h].encode("utf-8", "surrogatepass"))
        for h in ("event_type", "correlation_id")
        if isinstance(raw.get(h), str)
    ]
    value = json.dumps(raw, allow_nan=nan).encode()
    return Hostile(topic, label, value, key, headers)


_ODD_VALUES: dict[str, list[Any]] = {
    # Values the schema allows where it sets no bound, and that a database column may not take.
    "integer": [2**31, 2**63, 10**30],
    "string": ["\u0000", "\ud800", "x" * HUGE, "🦄" * 50, "'; DROP TABLE inbox; --"],
}


def _fixed_id(*parts: object) -> str:
    """A reproducible, unique event_id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "tweetshop-fuzz:" + repr(parts)))


def schema_valid_events(topic: str) -> list[Hostile]:
    """From each event type's JSON Schema: arbitrary valid events, then odd values in unbounded fields."""
    schemas = _schemas(topic)
    per_type = max(1, FUZZ_EXAMPLES // len(schemas))
    out: list[Hostile] = []
    for event_type, schema in schemas.items():
        validator = _validator(schema)
        strategy = _schema_strategy(schema, schema.get("$defs", {}))
        drawn = _collect(strategy, per_type)
        for i, raw in enumerate(drawn):
            # hypothesis draws the same few uuids again and again: unique ids, or most would be "duplicates"
            raw["event_id"] = _fixed_id(topic, event_type, i)
            assert validator.is_valid(raw), (event_type, list(validator.iter_errors(raw))[:1])
            out.append(_message(topic, f"from_schema {event_type} #{i}", raw))
        properties = schema["properties"]
        unbounded = [
            (name, kind)
            for name, prop in properties.items()
            for kind in ("integer", "string")
            if prop.get("type") == kind
            and not {"maximum", "pattern", "format", "const", "enum"} & set(prop)
            and name in schema["required"]
        ]
        if not unbounded:
            continue
        odd = st.sampled_from(unbounded).flatmap(
            lambda nk: st.tuples(st.just(nk[0]), st.sampled_from(_ODD_VALUES[nk[1]]))
        )
        for i, (drawn_raw, (name, odd_value)) in enumerate(_collect(st.tuples(strategy, odd), max(2, per_type // 2))):
            raw = {**drawn_raw, "event_id": _fixed_id(topic, event_type, "odd", i), name: odd_value}
            if validator.is_valid(raw):
                out.append(_message(topic, f"odd {event_type}.{name}={str(odd_value)[:20]!r}", raw))
    return out


def _bounded_fields(schema: dict[str, Any]) -> list[str]:
    """Fields where a 100 KB+ string breaks the schema (not event_type: another type name is skipped)."""
    return sorted(
        name
        for name, prop in schema["properties"].items()
        if prop.get("type") == "string"
        and {"maxLength", "pattern", "format", "const"} & set(prop)
        and name != "event_type"
    )


def schema_breaking_messages(topic: str) -> list[Hostile]:
    """Messages no v1 consumer can decode: each must end on ``<topic>.dlq`` after one attempt."""
    bases = {t: example(t) for t in with_examples(topic)}
    schemas = _schemas(topic)
    base = st.sampled_from(sorted(bases)).map(lambda t: dict(bases[t]))
    per_kind = max(1, FUZZ_EXAMPLES // 8)
    out: list[Hostile] = []

    def add(label: str, values: Iterable[bytes | None], *, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        for i, value in enumerate(values):
            out.append(Hostile(topic, f"{label} #{i}", value, f"bad-{label}-{i}".encode(), list(headers)))

    add("byte garbage", _collect(st.binary(min_size=1, max_size=300), per_kind))
    add(
        "truncated json",
        _collect(
            base.flatmap(lambda b: st.integers(1, len(json.dumps(b)) - 1).map(lambda n: json.dumps(b)[:n].encode())),
            per_kind,
        ),
    )
    add(
        "json not an object",
        _collect(
            (st.lists(ANY_JSON, max_size=4) | _JSON_LEAF | st.floats()).map(lambda v: json.dumps(v).encode()), per_kind
        ),
    )
    wrong = st.sampled_from([[], {"$": []}, [None], [[1]], {"event_id": {}}])
    add(
        "wrong type",
        _collect(
            base.flatmap(lambda b: st.tuples(st.just(b), st.sampled_from(sorted(b)), wrong)).map(
                lambda t: json.dumps({**t[0], t[1]: t[2]}).encode()
            ),
            per_kind,
        ),
    )
    huge_targets = st.sampled_from(sorted(bases)).flatmap(
        lambda t: st.tuples(st.just(t), st.sampled_from(_bounded_fields(schemas[t])), st.sampled_from("xé🦄"))
    )
    add(
        "huge string",
        _collect(huge_targets.map(lambda t: json.dumps({**bases[t[0]], t[1]: t[2] * HUGE}).encode()), per_kind),
    )
    non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])
    add(
        "nan literal",
        _collect(
            base.flatmap(lambda b: st.tuples(st.just(b), st.sampled_from(sorted(b)), non_finite)).map(
                lambda t: json.dumps({**t[0], t[1]: t[2]}, allow_nan=True).encode()
            ),
            per_kind,
        ),
    )
    add(
        "missing envelope field",
        _collect(
            base.flatmap(lambda b: st.tuples(st.just(b), st.sets(st.sampled_from(ENVELOPE_FIELDS), min_size=1))).map(
                lambda t: json.dumps({k: v for k, v in t[0].items() if k not in t[1]}).encode()
            ),
            per_kind,
        ),
    )
    add(
        "bad event_type",
        _collect(
            base.flatmap(
                lambda b: st.sampled_from(["", None, 7, ["OrderPlaced"]]).map(lambda e: {**b, "event_type": e})
            ).map(lambda d: json.dumps(d).encode()),
            per_kind,
        ),
    )
    some = dict(next(iter(bases.values())))
    digits = json.dumps(some).replace(f'"schema_version": {some["schema_version"]}', '"schema_version": ' + "1" * 5000)
    add("5000-digit number", [digits.encode()])
    add(
        "deep nesting",
        [b"[" * 100_000, json.dumps({**some, "extra": "@"}).replace('"@"', "[" * 60_000 + "]" * 60_000).encode()],
    )
    # 1.8 MB once JSON escapes it: the broker takes it, a DLQ copy of it cannot be published whole.
    add("huge escaped string past 1 MB", [json.dumps({**some, "correlation_id": "🦄" * HUGE}).encode()])
    add("tombstone", [None])
    add("empty", [b""])
    add("invalid utf-8", [json.dumps(some).encode().replace(b'"producer": "', b'"producer": "\xff\xfe')])
    add("garbage under a json content-type", [b"\x00not json{"], headers=[("content-type", b"application/json")])
    add("garbage under a text content-type", [b"\xff\xfe\xfd"], headers=[("content-type", b"text/plain")])
    for message in out:
        assert message.fate == "park", f"the generator meant to break the schema but did not: {message.describe()}"
    return out


def unknown_type_messages(topic: str) -> list[Hostile]:
    """Well-formed objects of event types this topic does not define: skipped by design."""
    some = example(with_examples(topic)[0])
    other = next(t for t in sorted(p.stem for p in EXAMPLES.glob("*.json")) if t not in event_types_of(topic))
    out = [
        Hostile(topic, "future event type", json.dumps({**some, "event_type": "SomethingNewV1"}).encode()),
        Hostile(topic, "another topic's event type", json.dumps({**example(other), "event_type": other}).encode()),
    ]
    for message in out:
        assert message.fate == "skip", message.describe()
    return out


def valid_event_with_lying_headers(topic: str) -> list[Hostile]:
    """Valid events whose headers are not UTF-8, lie about the content type, or are huge: handled as usual."""
    out: list[Hostile] = []
    for i, headers in enumerate(
        (
            [("correlation_id", b"\xff\xfe not utf-8"), ("event_type", b"\xc3\x28")],
            [("content-type", b"text/plain")],
            [("content-type", b"application/x-garbage"), ("reply_to", b"\x00")],
            [("correlation_id", b"c" * HUGE)],
        )
    ):
        raw = example(with_examples(topic)[i % len(with_examples(topic))])
        message = _message(topic, f"valid event under hostile headers #{i}", raw)
        message.headers = headers  # applied, or refused by its handler (an unknown aggregate): never dropped
        out.append(message)
    return out


def duplicates(messages: Sequence[Hostile], count: int = 3) -> list[Hostile]:
    """Copies of some valid events (same event_id, same bytes): the inbox makes them no-ops."""
    valid = [m for m in messages if m.fate == "handle"]
    return [
        Hostile(m.topic, f"duplicate of {m.label}", m.value, m.key, list(m.headers))
        for m in valid[: min(count, len(valid))]
    ]


def hostile_batch(topic: str) -> list[Hostile]:
    """Everything hostile for one topic (before the scenarios and the sentinel)."""
    valid = schema_valid_events(topic)
    return (
        valid
        + duplicates(valid)
        + schema_breaking_messages(topic)
        + unknown_type_messages(topic)
        + valid_event_with_lying_headers(topic)
    )


def interleave(fuzz: Sequence[Hostile], ordered: Sequence[Hostile], seed: int = 0) -> list[Hostile]:
    """``fuzz`` shuffled, with ``ordered`` spread through it in its own order."""
    rng = random.Random(seed)
    shuffled = list(fuzz)
    rng.shuffle(shuffled)
    total = len(shuffled) + len(ordered)
    slots = set(rng.sample(range(total), len(ordered)))
    queue, rest = list(ordered), iter(shuffled)
    return [queue.pop(0) if i in slots else next(rest) for i in range(total)]


# --- talking to the broker and the database ----------------------------------------------------------------


async def publish(bootstrap: str, namespace: str, messages: Sequence[Hostile]) -> None:
    """Publish in order (pipelined), recording where each one landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4_000_000, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(namespace + m.topic, m.value, key=m.key, headers=list(m.headers)) for m in messages
        ]
        for message, metadata in zip(messages, await asyncio.gather(*futures), strict=True):
            message.partition, message.offset = metadata.partition, metadata.offset
    finally:
        await producer.stop()


async def committed_offsets(bootstrap: str, namespace: str, group: str, topic: str) -> dict[int, int]:
    """The committed offset of every partition of ``topic`` for consumer group ``group`` (0 if none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(namespace + topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(namespace + topic) or set()
        tps = [TopicPartition(namespace + topic, p) for p in sorted(partitions)]
        return {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


@dataclass
class TopicFuzz:
    """The judge: publish a batch to a running service's consumed topics and check every rule."""

    service: Any  # RunningService
    namespace: str
    bootstrap: str
    admin_dsn: str
    groups: dict[str, str]  # consumed contract topic -> consumer group suffix ("catalog.orders")
    published: list[Hostile] = field(default_factory=list)
    ignored: dict[str, frozenset[str]] = field(default_factory=dict)  # topic -> types its handler does not act on

    def fate(self, m: Hostile) -> str:
        """``m.fate``, or ``ignore`` when the group's handler does not act on the message's type: named by its
        ``event_type`` header (then its value is not even read), or by a valid value."""
        ignored = self.ignored.get(m.topic, frozenset())
        header = dict(m.headers).get("event_type")
        if header is not None and header.decode(errors="replace") in ignored:
            return "ignore"
        if m.fate == "handle" and json.loads(m.value or b"")["event_type"] in ignored:
            return "ignore"
        return m.fate

    @staticmethod
    def event(cls: type[Envelope], **fields: Any) -> Envelope:
        """A valid event from the checked-in example of its type, with fresh ids where not given (so it
        shares no aggregate with the fuzz, which uses the examples' ids)."""
        raw = example(cls.__name__)
        fresh = {k: str(uuid.uuid4()) for k, v in raw.items() if k.endswith("_id") and _is_uuid(v)}
        return cls.model_validate({**raw, **fresh, "correlation_id": f"fuzz-{uuid.uuid4()}", **fields})

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Rows from the test database, as its superuser."""
        return await fetch(self.admin_dsn, query, *args)

    async def eventually(self, check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
        await eventually_async(check, timeout=timeout, interval=0.3, what=what)

    async def run(self, ordered: Sequence[Envelope], sentinels: Sequence[Envelope]) -> None:
        """The hostile batch of every consumed topic with ``ordered`` woven in (in its order), then the
        sentinels, then every rule checked."""
        batch = [m for topic in self.groups for m in hostile_batch(topic)]
        scenario = [event_message(e, f"scenario {e.event_type} #{i}") for i, e in enumerate(ordered)]
        assert {m.topic for m in scenario + [event_message(e, "") for e in sentinels]} <= set(self.groups)
        # A valid event asking, by its reply_to header, to be answered on the topic itself: nothing may be.
        for topic in self.groups:
            asking = event_message(self.event(_some_type(topic)), "valid event with a reply_to header")
            asking.headers.append(("reply_to", (self.namespace + topic).encode()))
            scenario.append(asking)
        await self.publish(interleave(batch, scenario))
        await self.publish([event_message(e, f"sentinel {e.event_type}") for e in sentinels])
        await self.judge()

    def group(self, topic: str) -> str:
        return self.namespace + self.groups[topic]

    async def publish(self, messages: Sequence[Hostile]) -> None:
        await publish(self.bootstrap, self.namespace, messages)
        self.published.extend(messages)

    def _ends(self, topic: str) -> dict[int, int]:
        """The end of each partition of ``topic``: one past the last offset the test published there."""
        ends: dict[int, int] = {}
        for m in self.published:
            if m.topic == topic:
                ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
        return ends

    async def drained(self) -> bool:
        """True once every consumer group has committed up to the end of every partition."""
        assert self.service.is_running(), f"{self.service.name} died:\n{self.service.tail()}"
        for topic in self.groups:
            committed = await committed_offsets(self.bootstrap, self.namespace, self.group(topic), topic)
            if any(committed.get(p, 0) < end for p, end in self._ends(topic).items()):
                return False
        return True

    async def inbox(self, topic: str) -> set[uuid.UUID]:
        rows = await fetch(
            self.admin_dsn,
            f"SELECT event_id FROM {self.service.name}.inbox WHERE consumer = $1",
            self.group(topic),
        )
        return {row["event_id"] for row in rows}

    async def judge(self) -> None:
        """Every rule, once the partitions are drained (DLQ copies are published before the commit)."""
        await eventually_async(
            self.drained,
            timeout=DRAIN_TIMEOUT_S,
            interval=0.3,
            what=f"{self.service.name} to commit every partition to its end (a stalled partition?)",
        )
        async with httpx.AsyncClient(base_url=self.service.base_url, timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
        assert self.service.is_running(), self.service.tail()
        for topic in self.groups:
            sent = [m for m in self.published if m.topic == topic]
            assert all(m.offset >= 0 for m in sent)
            by_position = {(m.partition, m.offset): m for m in sent}
            on_topic = {
                (r.partition, r.offset) for r in await read_topic(self.bootstrap, self.namespace + topic, quiet_ms=1000)
            }
            assert on_topic == set(by_position), f"{topic} holds messages the test never published (replies?)"
            committed = await committed_offsets(self.bootstrap, self.namespace, self.group(topic), topic)
            assert {p: o for p, o in committed.items() if o} == self._ends(topic), "committed past the end?"
            dlq = await read_topic(self.bootstrap, self.namespace + topic + ".dlq", quiet_ms=1000)
            parked = self._check_dlq(topic, dlq, by_position)
            applied = await self.inbox(topic)
            fates = Counter(m.fate for m in sent)
            assert fates["park"] and fates["handle"] and fates["skip"], fates
            copies = Counter(m.event_id for m in sent)
            problems = [
                p
                for m in sent
                if (p := self._problem(m, self.fate(m), parked.get((m.partition, m.offset)), applied, copies))
            ]
            assert not problems, f"{len(problems)} of {len(sent)} messages on {topic} went wrong:\n" + "\n".join(
                problems
            )

    @staticmethod
    def _problem(m: Hostile, fate: str, parked: Record | None, applied: set[uuid.UUID], copies: Counter[Any]) -> str:
        """What is wrong with what became of ``m``, whose fate is ``fate`` ("" when nothing is)."""
        if fate == "ignore":
            if parked is not None:
                return f"an event its handler does not act on was parked: {m.describe()}"
            if m.event_id in applied and copies[m.event_id] == 1:
                return f"an event its handler does not act on has an inbox row: {m.describe()}"
        elif fate == "park":
            if parked is None:
                return f"not parked: {m.describe()}"
            if parked.headers["dlq_attempts"] != "1":
                return f"retried although it can never decode: {m.describe()} {parked.headers}"
        elif fate == "skip":
            if parked is not None:
                return f"an unknown event type must be skipped, not parked: {m.describe()}"
        elif parked is not None:
            # Valid, but its odd values keep the handler failing: parked after the bounded retries, not applied.
            if m.must_apply:
                return f"a good event was parked: {m.describe()} {parked.headers.get('dlq_error')}"
            permanent = (
                parked.headers["dlq_error_type"] in PERMANENT_ERROR_TYPES and parked.headers["dlq_attempts"] == "1"
            )
            if parked.headers["dlq_attempts"] != str(MAX_RETRIES + 1) and not permanent:
                return f"parked without its bounded retries: {m.describe()} {parked.headers}"
            if m.event_id in applied and copies[m.event_id] == 1:  # another copy may succeed later, in new state
                return f"parked and applied: {m.describe()}"
        elif m.event_id not in applied:
            return f"neither applied nor parked (silently dropped): {m.describe()}"
        return ""

    def _check_dlq(
        self, topic: str, dlq: list[Record], by_position: dict[tuple[int, int], Hostile]
    ) -> dict[tuple[int, int], Record]:
        parked: dict[tuple[int, int], Record] = {}
        for record in dlq:
            where = (int(record.headers["dlq_original_partition"]), int(record.headers["dlq_original_offset"]))
            assert where in by_position, f"{topic}.dlq holds a message nobody published: {record}"
            assert where not in parked, f"parked twice: {by_position[where].describe()}"
            original = by_position[where]
            if "dlq_value_truncated_from" in record.headers:  # too large for the DLQ: a marked, cut copy
                assert int(record.headers["dlq_value_truncated_from"]) == len(original.value or b"")
                assert (original.value or b"").startswith(record.value), original.describe()
            else:
                assert record.value == (original.value or b""), original.describe()
            assert record.key == original.key, original.describe()
            assert record.headers["dlq_original_topic"] == topic
            assert record.headers["dlq_consumer_group"] == self.group(topic)
            assert record.headers["dlq_error"], original.describe()
            assert 1 <= int(record.headers["dlq_attempts"]) <= MAX_RETRIES + 1
            parked[where] = record
        return parked


@pytest.fixture
def topic_fuzz(service_process: Any, kafka_bootstrap: str) -> Callable[..., TopicFuzz]:
    """``topic_fuzz(service, groups)``: start ``service`` with short bounded retries and return its judge."""

    def start(service: str, groups: dict[str, str]) -> TopicFuzz:
        running = service_process.start(service, env=CONSUMER_ENV)
        # The types each group does not act on, as the system declares them (the runtime holds @handles to it).
        ignored = {
            topic: event_types_of(topic) - set(reads.handles)
            for topic, group in groups.items()
            for reads in SYSTEM.service(service).group(group.removeprefix(f"{service}.")).reads
            if reads.topic == topic and reads.handles
        }
        return TopicFuzz(
            running,
            service_process.topic_namespace,
            kafka_bootstrap,
            service_process.database.admin_dsn,
            groups,
            ignored=ignored,
        )

    return start
