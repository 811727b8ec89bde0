"""The ACLs derived from the topology: each service writes only its own topics, reads only what it subscribes to.

Also: the `tweetshop` command reads the same Kafka security variables as the services.
"""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from tweetshop_cli import acls
from tweetshop_cli.acls import Acl, allowed, derive, principal
from tweetshop_cli.groups import SUBSCRIPTIONS, Subscription
from tweetshop_cli.settings import CliSettings
from tweetshop_contracts import topics
from tweetshop_contracts.topics import ALL_TOPICS, dlq_topic
from tweetshop_contracts.topology import TOPICS
from tweetshop_platform.kafka_security import client_security
from tweetshop_platform.lag import DLQ_CURSOR_GROUP
from tweetshop_platform.settings import ServiceSettings

SERVICES = ("catalog", "checkout", "feed", "tracking")
OWNERS = {spec.name: spec.producer for spec in TOPICS}
EVERY_PRINCIPAL = [*(principal(s) for s in SERVICES), principal(acls.OPERATOR), "User:somebody-else"]


@pytest.fixture(scope="module")
def granted() -> list[Acl]:
    return derive()


def subscribers(topic: str, *, reliable_only: bool = False) -> set[str]:
    spec = next(s for s in TOPICS if s.name == topic)
    return {c.service for c in spec.consumers if not (reliable_only and c.fan_out)}


def test_every_service_of_the_topology_is_a_principal() -> None:
    assert acls.services() == SERVICES


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_nobody_but_the_producer_writes_a_topic(granted: list[Acl], topic: str) -> None:
    writers = {who for who in EVERY_PRINCIPAL if allowed(granted, who, "WRITE", "TOPIC", topic)}
    assert writers == {principal(OWNERS[topic])}


def test_the_forgeries_of_the_report_are_refused(granted: list[Acl]) -> None:
    # A forged MerchantApiKeyRotated or ProductUpdated, a forged OrderPaid: only their producer may write them.
    for topic, owner in ((topics.CATALOG_MERCHANTS, "catalog"), (topics.CATALOG_PRODUCTS, "catalog")):
        for service in SERVICES:
            assert allowed(granted, principal(service), "WRITE", "TOPIC", topic) is (service == owner)
    for service in SERVICES:
        assert allowed(granted, principal(service), "WRITE", "TOPIC", topics.CHECKOUT_ORDERS) is (service == "checkout")
    assert not allowed(granted, principal(acls.OPERATOR), "WRITE", "TOPIC", topics.CHECKOUT_ORDERS)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_writes_exactly_its_topics_and_the_dead_letters_it_parks(granted: list[Acl], service: str) -> None:
    own = {t for t, owner in OWNERS.items() if owner == service}
    parks = {dlq_topic(t) for t in ALL_TOPICS if service in subscribers(t, reliable_only=True)}
    universe = set(ALL_TOPICS) | {dlq_topic(t) for t in ALL_TOPICS}
    writes = {t for t in universe if allowed(granted, principal(service), "WRITE", "TOPIC", t)}
    assert writes == own | parks


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_reads_exactly_what_it_subscribes_to(granted: list[Acl], service: str) -> None:
    universe = set(ALL_TOPICS) | {dlq_topic(t) for t in ALL_TOPICS}
    reads = {t for t in universe if allowed(granted, principal(service), "READ", "TOPIC", t)}
    assert reads == {t for t in ALL_TOPICS if service in subscribers(t)}
    assert not any(t.endswith(".dlq") for t in reads), "nobody reads dead letters but the operator"


def test_dead_letters_are_written_only_by_the_reliable_consumers_of_their_topic(granted: list[Acl]) -> None:
    for spec in TOPICS:
        dlq = spec.dlq()
        if dlq is None:
            continue
        writers = {s for s in SERVICES if allowed(granted, principal(s), "WRITE", "TOPIC", dlq)}
        assert writers == subscribers(spec.name, reliable_only=True)


@pytest.mark.parametrize("subscription", SUBSCRIPTIONS, ids=lambda s: s.group)
@pytest.mark.parametrize("namespace", ["", "test-1a2b."])
def test_each_consumer_group_is_readable_by_its_service_alone(subscription: Subscription, namespace: str) -> None:
    granted = derive(namespace=namespace)
    group = namespace + subscription.group
    readers = {who for who in EVERY_PRINCIPAL if allowed(granted, who, "READ", "GROUP", group)}
    assert readers == {principal(subscription.service)}
    # and the topic it reads, under the same namespace
    assert allowed(granted, principal(subscription.service), "READ", "TOPIC", namespace + subscription.topic)


def test_trackings_live_view_groups_are_its_own() -> None:
    from tracking.config import TrackingSettings

    prefix = TrackingSettings.model_fields["live_group_prefix"].default
    granted = derive()
    group = f"{prefix}.{secrets.token_hex(8)}"  # as tracking's main.py names each process's group
    assert {who for who in EVERY_PRINCIPAL if allowed(granted, who, "READ", "GROUP", group)} == {"User:tracking"}


def test_services_read_the_dead_letter_cursor_only_the_operator_moves_it(granted: list[Acl]) -> None:
    for service in SERVICES:
        assert allowed(granted, principal(service), "DESCRIBE", "GROUP", DLQ_CURSOR_GROUP)
        assert not allowed(granted, principal(service), "READ", "GROUP", DLQ_CURSOR_GROUP)
    assert allowed(granted, principal(acls.OPERATOR), "READ", "GROUP", DLQ_CURSOR_GROUP)


def test_the_operator_reads_everything_and_writes_nothing(granted: list[Acl]) -> None:
    operator = principal(acls.OPERATOR)
    for topic in acls.all_topics():
        assert allowed(granted, operator, "READ", "TOPIC", topic)
    assert not [
        a for a in granted if a.principal == operator and a.operation in ("WRITE", "CREATE", "IDEMPOTENT_WRITE")
    ]


def test_idempotent_producers_get_idempotent_write_and_nobody_creates_topics_by_default() -> None:
    granted = derive()
    for service in SERVICES:
        assert allowed(granted, principal(service), "IDEMPOTENT_WRITE", "CLUSTER", acls.CLUSTER)
    assert not [a for a in granted if a.operation == "CREATE"], "kafka-init creates the topics"
    assert not [a for a in derive(idempotence=False) if a.operation == "IDEMPOTENT_WRITE"]


def test_services_that_create_their_topics_may_create_only_those() -> None:
    granted = derive(services_create_topics=True)
    for service in SERVICES:
        creates = {a.name for a in granted if a.principal == principal(service) and a.operation == "CREATE"}
        reads_or_writes = {
            a.name for a in granted if a.principal == principal(service) and a.operation in ("READ", "WRITE")
        }
        assert creates and creates <= reads_or_writes


def test_there_are_only_allow_rules_on_named_resources(granted: list[Acl]) -> None:
    wildcard = [a for a in granted if a.name == "*"]
    assert wildcard == [Acl(principal(acls.OPERATOR), "GROUP", "LITERAL", "*", "DESCRIBE")]
    assert {a.pattern for a in granted if a.resource_type == "TOPIC"} == {"LITERAL"}


def parse_commands(lines: list[str]) -> set[Acl]:
    """The ACLs a list of `kafka-acls.sh --add` lines grants (the reverse of acl_commands)."""
    found: set[Acl] = set()
    for line in lines:
        words = shlex.split(line)
        assert "--add" in words and "--allow-principal" in words
        who = words[words.index("--allow-principal") + 1]
        pattern = words[words.index("--resource-pattern-type") + 1].upper()
        operations = [words[i + 1] for i, w in enumerate(words) if w == "--operation"]
        names = {"TOPIC": [words[i + 1] for i, w in enumerate(words) if w == "--topic"]}
        names["GROUP"] = [words[i + 1] for i, w in enumerate(words) if w == "--group"]
        if "--cluster" in words:
            names["CLUSTER"] = [acls.CLUSTER]
        flags = {flag: op for op, flag in acls._OPERATION_FLAGS.items()}
        for resource_type, resource_names in names.items():
            for name in resource_names:
                found |= {Acl(who, resource_type, pattern, name, flags[op]) for op in operations}
    return found


@pytest.mark.parametrize("namespace", ["", "ns."])
def test_the_kafka_acls_commands_grant_exactly_the_derived_set(namespace: str) -> None:
    granted = derive(namespace=namespace)
    lines = acls.acl_commands(granted, kafka_acls="kafka-acls.sh", bootstrap="kafka:29094", command_config="a.conf")
    assert parse_commands(lines) == set(granted)
    assert len(lines) < len(granted), "one command per principal, resource type and operations, not per rule"


def test_the_module_prints_commands_and_checks_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert acls.main([]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert parse_commands(printed) == set(derive())
    target = tmp_path / "provision.sh"
    assert acls.main(["--script", "--check", str(target)]) == 1
    assert acls.main(["--script", "--write", str(target)]) == 0
    assert acls.main(["--script", "--check", str(target)]) == 0
    text = target.read_text(encoding="utf-8")
    assert 'TWEETSHOP_KAFKA_USERS="catalog checkout feed tracking operator monitor"' in text
    for topic in acls.all_topics():
        assert f"--topic {topic} " in text


# --- the `tweetshop` command's client security ------------------------------------------------------------------


@pytest.fixture
def no_tweetshop_variables(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for key in list(os.environ):
        if key.upper().startswith("TWEETSHOP_"):
            monkeypatch.delenv(key)
    yield monkeypatch


def test_the_cli_reads_the_same_kafka_security_settings_as_the_services() -> None:
    fields = [n for n in ServiceSettings.model_fields if n.startswith(("kafka_security", "kafka_sasl", "kafka_ssl"))]
    assert len(fields) == 9
    for name in fields:
        service_field, cli_field = ServiceSettings.model_fields[name], CliSettings.model_fields.get(name)
        assert cli_field is not None, f"CliSettings lacks {name}: the `tweetshop` command would ignore it"
        assert cli_field.annotation == service_field.annotation, name
        assert cli_field.default == service_field.default, name


def test_the_cli_logs_in_as_the_operator_with_a_password_file(
    no_tweetshop_variables: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(32)
    (tmp_path / "operator").write_text(password + "\n", encoding="utf-8")
    no_tweetshop_variables.setenv("TWEETSHOP_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    no_tweetshop_variables.setenv("TWEETSHOP_KAFKA_SASL_USERNAME", acls.OPERATOR)
    no_tweetshop_variables.setenv("TWEETSHOP_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "operator"))
    options = client_security(CliSettings())
    assert options["sasl_plain_username"] == acls.OPERATOR
    assert options["sasl_plain_password"] == password
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
