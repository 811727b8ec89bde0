"""Kafka ACLs derived from the one declaration of who produces and consumes what (``tweetshop_contracts.system``).

Each service is the principal ``User:<service>`` (its SCRAM user) and may do exactly what its code does:

- WRITE and DESCRIBE the topics it produces (the topics it ``owns``), and the ``<topic>.dlq`` topics of the
  topics it reads as a reliable consumer (it parks what fails its retries there);
- READ and DESCRIBE the topics it consumes (reliable consumers and live views alike);
- READ its consumer groups: every group the runtime names ``<namespace><service>.<name>`` (``ServiceRuntime.
  subscribe``, tracking's live view ``tracking.live.<uuid>``), one PREFIXED ACL on ``<namespace><service>.``;
- DESCRIBE the group ``<namespace>tweetshop.dlq-cursor``, whose committed offsets its lag gauges read;
- IDEMPOTENT_WRITE on the cluster when producers are idempotent (docker-compose.yml turns it on);
- CREATE on its topics only with ``--services-create-topics``: by default the init job creates every topic, and
  the services run with ``TWEETSHOP_KAFKA_CREATE_TOPICS=false``.

The operator principal ``User:operator`` (the ``tweetshop`` command) may READ and DESCRIBE every topic and
dead-letter topic, READ the dead-letter cursor group and DESCRIBE every group (``tweetshop lag --all``). It
writes nothing: ``tweetshop dlq replay`` republishes onto a service's topic, which only that service may write;
deploy/kafka/README.md says how to grant it for one replay.

The monitoring principal ``User:monitor`` (the broker-side lag exporter of the observability profile,
danielqsj/kafka-exporter) may only DESCRIBE: every topic and dead-letter topic (end offsets), the cluster (it
lists the groups), every service's consumer groups (PREFIXED ``<namespace><service>.``) and the dead-letter cursor
group (their committed offsets). It reads no message and writes nothing.

``python -m tweetshop_cli.acls`` prints the ``kafka-acls.sh`` command lines; ``--script`` the provisioning
script the compose init job sources (topics with their declared ``retention.ms`` and ``cleanup.policy``, SCRAM
users, ACLs); ``--write FILE`` / ``--check FILE`` keep
deploy/kafka/provision.generated.sh in step with the code (tests/deploy/test_broker_security.py checks it).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tweetshop_contracts.system import DEFAULT_PARTITIONS, SYSTEM, System, TopicSpec
from tweetshop_contracts.topics import dlq_topic
from tweetshop_platform.lag import DLQ_CURSOR_GROUP

OPERATOR = "operator"
MONITOR = "monitor"
CLUSTER = "kafka-cluster"
GENERATED_SCRIPT = Path("deploy/kafka/provision.generated.sh")

# kafka-acls.sh spells operations in CamelCase (--operation IdempotentWrite).
_OPERATION_FLAGS = {
    "READ": "Read",
    "WRITE": "Write",
    "DESCRIBE": "Describe",
    "CREATE": "Create",
    "IDEMPOTENT_WRITE": "IdempotentWrite",
}


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: ``principal`` may ``operation`` on ``resource_type`` ``name`` (LITERAL or PREFIXED)."""

    principal: str
    resource_type: str  # TOPIC, GROUP or CLUSTER
    pattern: str  # LITERAL or PREFIXED
    name: str
    operation: str  # READ, WRITE, DESCRIBE, CREATE, IDEMPOTENT_WRITE

    def covers(self, resource_type: str, name: str) -> bool:
        """Whether this rule's resource matches ``name`` (the broker's matching, without wildcards' subtleties)."""
        if resource_type != self.resource_type:
            return False
        if self.name == "*":
            return True
        return name.startswith(self.name) if self.pattern == "PREFIXED" else name == self.name


def principal(user: str) -> str:
    """The Kafka principal of a SCRAM user."""
    return f"User:{user}"


def services(system: System = SYSTEM) -> tuple[str, ...]:
    """Every service that produces or consumes a topic, in a stable order."""
    specs = system.topic_specs()
    found = {spec.producer for spec in specs} | {c.service for spec in specs for c in spec.consumers}
    return tuple(sorted(found))


def produced_by(service: str, system: System = SYSTEM) -> list[TopicSpec]:
    """The topics ``service`` produces."""
    return [spec for spec in system.topic_specs() if spec.producer == service]


def consumed_by(service: str, *, reliable_only: bool = False, system: System = SYSTEM) -> list[TopicSpec]:
    """The topics ``service`` consumes (``reliable_only``: not as a live view, so it parks to their .dlq)."""
    return [
        spec
        for spec in system.topic_specs()
        if any(c.service == service and not (reliable_only and c.fan_out) for c in spec.consumers)
    ]


def parks_to(service: str, system: System = SYSTEM) -> list[str]:
    """The dead-letter topics ``service`` writes: one per topic it reads as a reliable consumer."""
    return [dlq_topic(spec.name) for spec in consumed_by(service, reliable_only=True, system=system)]


def group_prefix(service: str, namespace: str = "") -> str:
    """Every consumer group of ``service`` starts with this (``ServiceRuntime.subscribe``: <namespace><service>.)."""
    return f"{namespace}{service}."


def all_topics(system: System = SYSTEM) -> list[str]:
    """Every v1 topic and every dead-letter topic a reliable consumer may park to."""
    return [*system.topic_names(), *system.dead_letter_topics()]


def service_acls(
    service: str,
    *,
    namespace: str = "",
    idempotence: bool = True,
    creates_topics: bool = False,
    system: System = SYSTEM,
) -> list[Acl]:
    """What ``service`` may do, and nothing more."""
    who = principal(service)
    acls: list[Acl] = []

    def topic(name: str, *operations: str) -> None:
        acls.extend(Acl(who, "TOPIC", "LITERAL", namespace + name, op) for op in operations)

    produced = produced_by(service, system)
    dead_letters = parks_to(service, system)
    for spec in produced:
        topic(spec.name, "WRITE", "DESCRIBE")
    for dlq in dead_letters:
        topic(dlq, "WRITE", "DESCRIBE")
    for spec in consumed_by(service, system=system):
        topic(spec.name, "READ", "DESCRIBE")
    reliable = consumed_by(service, reliable_only=True, system=system)
    if consumed_by(service, system=system):
        acls.append(Acl(who, "GROUP", "PREFIXED", group_prefix(service, namespace), "READ"))
    if reliable:
        acls.append(Acl(who, "GROUP", "LITERAL", namespace + DLQ_CURSOR_GROUP, "DESCRIBE"))
    if idempotence and produced + reliable:
        acls.append(Acl(who, "CLUSTER", "LITERAL", CLUSTER, "IDEMPOTENT_WRITE"))
    if creates_topics:
        # What ServiceRuntime.start creates: what it produces, what it consumes, and their dead-letter topics.
        wanted = {s.name for s in produced} | {s.name for s in reliable} | set(dead_letters)
        for name in sorted(wanted):
            topic(name, "CREATE")
    return sorted(set(acls))


def operator_acls(*, namespace: str = "", system: System = SYSTEM) -> list[Acl]:
    """The `tweetshop` command's principal: reads everything, writes nothing."""
    who = principal(OPERATOR)
    acls = [
        Acl(who, "TOPIC", "LITERAL", namespace + name, op) for name in all_topics(system) for op in ("READ", "DESCRIBE")
    ]
    acls.append(Acl(who, "GROUP", "LITERAL", namespace + DLQ_CURSOR_GROUP, "READ"))
    acls.append(Acl(who, "GROUP", "LITERAL", "*", "DESCRIBE"))  # `tweetshop lag`: any group's committed offsets
    acls.append(Acl(who, "CLUSTER", "LITERAL", CLUSTER, "DESCRIBE"))  # `tweetshop lag --all` lists the groups
    return sorted(set(acls))


def monitor_acls(*, namespace: str = "", system: System = SYSTEM) -> list[Acl]:
    """The lag exporter's principal: describes topics, groups and the cluster (offsets and lag), reads no message."""
    who = principal(MONITOR)
    acls = [Acl(who, "TOPIC", "LITERAL", namespace + name, "DESCRIBE") for name in all_topics(system)]
    acls += [
        Acl(who, "GROUP", "PREFIXED", group_prefix(service, namespace), "DESCRIBE") for service in services(system)
    ]
    acls.append(Acl(who, "GROUP", "LITERAL", namespace + DLQ_CURSOR_GROUP, "DESCRIBE"))
    acls.append(Acl(who, "CLUSTER", "LITERAL", CLUSTER, "DESCRIBE"))  # ListGroups
    return sorted(set(acls))


def users(system: System = SYSTEM) -> tuple[str, ...]:
    """Every SCRAM user the init job creates: one per service, the operator and the monitor."""
    return (*services(system), OPERATOR, MONITOR)


def derive(
    *,
    namespace: str = "",
    idempotence: bool = True,
    services_create_topics: bool = False,
    operator: bool = True,
    system: System = SYSTEM,
) -> list[Acl]:
    """The whole ACL set: every service's, the operator's and the monitor's."""
    acls = [
        acl
        for service in services(system)
        for acl in service_acls(
            service,
            namespace=namespace,
            idempotence=idempotence,
            creates_topics=services_create_topics,
            system=system,
        )
    ]
    if operator:  # the principals of tools rather than services: the operator's command and the lag exporter
        acls.extend(operator_acls(namespace=namespace, system=system))
        acls.extend(monitor_acls(namespace=namespace, system=system))
    return acls


def allowed(acls: Iterable[Acl], who: str, operation: str, resource_type: str, name: str) -> bool:
    """Whether ``acls`` let ``who`` do ``operation`` on a resource (READ and WRITE imply DESCRIBE, as in Kafka)."""
    implied = {"DESCRIBE": {"DESCRIBE", "READ", "WRITE"}}.get(operation, {operation})
    return any(acl.principal == who and acl.operation in implied and acl.covers(resource_type, name) for acl in acls)


# --- kafka-acls.sh command lines -----------------------------------------------------------------------------


def acl_commands(acls: Iterable[Acl], *, kafka_acls: str, bootstrap: str, command_config: str) -> list[str]:
    """``kafka-acls.sh --add`` command lines, one per principal, resource type, pattern and set of operations.

    ``kafka_acls``, ``bootstrap`` and ``command_config`` are inserted as written (shell words such as
    ``"$BOOTSTRAP"`` stay unexpanded until the script runs).
    """
    resources: dict[tuple[str, str, str, str], set[str]] = {}
    for acl in acls:
        resources.setdefault((acl.principal, acl.resource_type, acl.pattern, acl.name), set()).add(acl.operation)
    grouped: dict[tuple[str, str, str, tuple[str, ...]], list[str]] = {}
    for (who, resource_type, pattern, name), ops in sorted(resources.items()):
        grouped.setdefault((who, resource_type, pattern, tuple(sorted(ops))), []).append(name)
    lines = []
    for (who, resource_type, pattern, operations), names in grouped.items():
        words = [kafka_acls, "--bootstrap-server", bootstrap, "--command-config", command_config, "--add"]
        words += ["--allow-principal", shlex.quote(who)]
        for operation in operations:
            words += ["--operation", _OPERATION_FLAGS[operation]]
        if resource_type == "CLUSTER":
            words.append("--cluster")
        else:
            flag = "--topic" if resource_type == "TOPIC" else "--group"
            for name in names:
                words += [flag, shlex.quote(name)]
        words += ["--resource-pattern-type", pattern.lower(), "--force"]
        lines.append(" ".join(words))
    return lines


def topic_commands(
    *, namespace: str, kafka_topics: str, bootstrap: str, command_config: str, system: System = SYSTEM
) -> list[str]:
    """``kafka-topics.sh --create --if-not-exists`` for every topic and dead-letter topic (partitions: $PARTITIONS),
    with its declared configs (``retention.ms``, ``cleanup.policy``); an existing topic is left as it is."""
    lines = []
    for name in all_topics(system):
        configs = " ".join(
            f"--config {shlex.quote(f'{key}={value}')}" for key, value in system.config(name).kafka_configs().items()
        )
        lines.append(
            f"{kafka_topics} --bootstrap-server {bootstrap} --command-config {command_config} --create --if-not-exists "
            f'--topic {shlex.quote(namespace + name)} --partitions "$PARTITIONS" '
            f'--replication-factor "$REPLICATION_FACTOR" {configs}'
        )
    return lines


def script(
    *, namespace: str = "", idempotence: bool = True, services_create_topics: bool = False, system: System = SYSTEM
) -> str:
    """The provisioning script the compose init job sources (deploy/kafka/init.sh defines the variables)."""
    bootstrap, config = '"$BOOTSTRAP"', '"$ADMIN_CONFIG"'
    every_user = " ".join(users(system))
    acls = derive(
        namespace=namespace, idempotence=idempotence, services_create_topics=services_create_topics, system=system
    )
    options = []
    if namespace:
        options.append(f"--namespace {shlex.quote(namespace)}")
    if not idempotence:
        options.append("--no-idempotence")
    if services_create_topics:
        options.append("--services-create-topics")
    regenerate = " ".join(["python -m tweetshop_cli.acls --script", *options, f"--write {GENERATED_SCRIPT}"])
    parts = [
        "# shellcheck shell=bash",
        f"# GENERATED by `{regenerate}`",
        "# from libs/contracts/src/tweetshop_contracts/system.py: edit the declaration, not this file.",
        "# Sourced by deploy/kafka/init.sh, which sets KAFKA_BIN, BOOTSTRAP and ADMIN_CONFIG.",
        "# Every command is idempotent: running it again changes nothing.",
        "",
        "# The SCRAM users: one per service, the operator (`tweetshop`) and the monitor (the lag exporter).",
        f'TWEETSHOP_KAFKA_USERS="{every_user}"',
        "# Partitions of each topic (the services' TWEETSHOP_KAFKA_TOPIC_PARTITIONS default); one broker: one replica.",
        f'PARTITIONS="${{PARTITIONS:-{DEFAULT_PARTITIONS}}}"',
        'REPLICATION_FACTOR="${REPLICATION_FACTOR:-1}"',
        "",
        "tweetshop_create_topics() {",
        *(
            f"  {line}"
            for line in topic_commands(
                namespace=namespace,
                kafka_topics='"$KAFKA_BIN/kafka-topics.sh"',
                bootstrap=bootstrap,
                command_config=config,
                system=system,
            )
        ),
        "}",
        "",
        "tweetshop_apply_acls() {",
        *(
            f"  {line}"
            for line in acl_commands(
                acls, kafka_acls='"$KAFKA_BIN/kafka-acls.sh"', bootstrap=bootstrap, command_config=config
            )
        ),
        "}",
        "",
    ]
    return "\n".join(parts)


def table(acls: Sequence[Acl]) -> str:
    """A readable listing: principal, operation, resource."""
    rows = [f"{a.principal:<18} {a.operation:<17} {a.resource_type:<8} {a.pattern:<9} {a.name}" for a in acls]
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tweetshop_cli.acls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default="", help="topic and group prefix (empty in production)")
    parser.add_argument("--no-idempotence", action="store_true", help="producers are not idempotent")
    parser.add_argument(
        "--services-create-topics",
        action="store_true",
        help="grant CREATE on their topics (services running with TWEETSHOP_KAFKA_CREATE_TOPICS=true)",
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--script", action="store_true", help="the provisioning script of the compose init job")
    shape.add_argument("--table", action="store_true", help="a readable table instead of commands")
    parser.add_argument("--bootstrap-server", default='"$BOOTSTRAP"', help="as written into the commands")
    parser.add_argument("--command-config", default='"$ADMIN_CONFIG"', help="as written into the commands")
    parser.add_argument("--kafka-acls", default="kafka-acls.sh", help="the kafka-acls.sh to call")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--write", type=Path, metavar="FILE", help="write the output to FILE")
    target.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if FILE differs from the output")
    args = parser.parse_args(argv)
    idempotence = not args.no_idempotence
    if args.script:
        text = script(
            namespace=args.namespace, idempotence=idempotence, services_create_topics=args.services_create_topics
        )
    else:
        acls = derive(
            namespace=args.namespace, idempotence=idempotence, services_create_topics=args.services_create_topics
        )
        if args.table:
            text = table(acls)
        else:
            lines = acl_commands(
                acls, kafka_acls=args.kafka_acls, bootstrap=args.bootstrap_server, command_config=args.command_config
            )
            text = "\n".join(lines) + "\n"
    if args.check is not None:
        current = args.check.read_text(encoding="utf-8") if args.check.is_file() else ""
        if current != text:
            print(f"{args.check} is not what the system derives: run with --write {args.check}", file=sys.stderr)
            return 1
        return 0
    if args.write is not None:
        args.write.write_text(text, encoding="utf-8")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
