"""docker-compose.yml runs Kafka authenticated and authorised: SASL/SCRAM per service, ACLs derived from the topology.

The file is parsed (no Docker here). deploy/kafka/init.sh and broker.sh are run for real by bash, with
stand-ins for the Kafka command-line tools that record what they are asked to do (there is no Kafka to
run them against): the init job must create exactly the derived topics, users and ACLs.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from tweetshop_cli import acls
from tweetshop_cli.acls import Acl, derive
from tweetshop_contracts.system import SYSTEM
from tweetshop_platform.kafka_security import client_security, uses_sasl

ROOT = Path(__file__).resolve().parents[2]
KAFKA_DIR = ROOT / "deploy" / "kafka"
GENERATED = ROOT / acls.GENERATED_SCRIPT
SERVICES = acls.services()
USERS = list(acls.users())  # the services, the operator and the monitor (the lag exporter)
MOUNT = "/opt/tweetshop-kafka"

ServiceEnvironment = Callable[..., dict[str, str]]
Services = dict[str, dict[str, Any]]
Listeners = Callable[[str], dict[str, tuple[str, int]]]


def protocol_map(env: Mapping[str, str]) -> dict[str, str]:
    return dict(item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))


def password_variable(user: str) -> str:
    return f"{user.upper().replace('-', '_')}_KAFKA_PASSWORD"


def published(service: Mapping[str, Any]) -> list[str]:
    return [str(entry) for entry in service.get("ports") or []]


def service_settings(service: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's own settings class, built from the container's TWEETSHOP_* variables only."""
    module = __import__(f"{service}.config", fromlist=["config"])
    cls = next(
        value
        for name, value in vars(module).items()
        if name.endswith("Settings") and isinstance(value, type) and value.__module__ == module.__name__
    )
    for key in list(os.environ):
        if key.upper().startswith("TWEETSHOP_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("TWEETSHOP_"):
            monkeypatch.setenv(key, value)
    return cls()


# --- the broker ---------------------------------------------------------------------------------------------------


def test_every_listener_a_client_can_reach_authenticates(
    service_environment: ServiceEnvironment, listeners: Listeners
) -> None:
    env = service_environment("kafka")
    bound, protocols = listeners(env["KAFKA_LISTENERS"]), protocol_map(env)
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    for name in bound:
        if name == controller:
            continue
        assert protocols[name].startswith("SASL_"), f"listener {name} is {protocols[name]}: anyone could connect"
    # The controller's PLAINTEXT listener is reachable from inside the container only.
    assert bound[controller][0] in ("localhost", "127.0.0.1")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].endswith(f"@localhost:{bound[controller][1]}")
    assert "PLAINTEXT" not in {protocols[name] for name in bound if name != controller}
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    for name in bound:
        if name not in (controller, env["KAFKA_INTER_BROKER_LISTENER_NAME"]):
            assert env[f"KAFKA_LISTENER_NAME_{name}_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512", name


def test_nothing_is_allowed_unless_an_acl_says_so(service_environment: ServiceEnvironment) -> None:
    env = service_environment("kafka")
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    # admin: the init job and the broker itself; ANONYMOUS: only the in-container controller listener has it.
    assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:admin", "User:ANONYMOUS"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_the_super_user_logs_in_on_the_broker_listener_only(service_environment: ServiceEnvironment) -> None:
    env = service_environment("kafka")
    broker_listener = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert protocol_map(env)[broker_listener] == "SASL_PLAINTEXT"
    assert env["KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL"] == "PLAIN"
    assert env[f"KAFKA_LISTENER_NAME_{broker_listener}_SASL_ENABLED_MECHANISMS"] == "PLAIN"


def test_the_image_gets_no_variable_it_would_drop(service_environment: ServiceEnvironment) -> None:
    # apache/kafka turns KAFKA_* variables into server.properties but silently drops a value containing "=":
    # a JAAS configuration must come from a file (broker.sh), never from the environment.
    env = service_environment("kafka")
    dropped = [key for key, value in env.items() if key.startswith("KAFKA_") and "=" in value]
    assert not dropped, f"the image would ignore {dropped}"
    assert "ADMIN_PASSWORD" in env and not any("PASSWORD" in key for key in env if key.startswith("KAFKA_"))


def test_kafka_is_not_published_unless_the_kafka_host_profile_asks(
    compose_services: Services, service_environment: ServiceEnvironment, listeners: Listeners
) -> None:
    assert not published(compose_services["kafka"]), "Kafka must not listen on the host by default"
    forwarder = compose_services["kafka-host"]
    assert forwarder.get("profiles") == ["kafka-host"]
    assert published(forwarder) == ["127.0.0.1:9092:9092"], "on this machine only"
    env = service_environment("kafka")
    host = next(name for name, address in listeners(env["KAFKA_ADVERTISED_LISTENERS"]).items() if address[1] == 9092)
    assert protocol_map(env)[host] == "SASL_PLAINTEXT"
    assert forwarder["command"][-1] == f"kafka:{listeners(env['KAFKA_LISTENERS'])[host][1]}"
    assert f"./deploy/kafka:{MOUNT}:ro" in forwarder["volumes"]
    assert (KAFKA_DIR / Path(forwarder["command"][1]).name).is_file()


@pytest.mark.parametrize("service", ["kafka", "kafka-init"])
def test_compose_stops_without_the_super_user_password(service_environment: ServiceEnvironment, service: str) -> None:
    with pytest.raises(ValueError, match="KAFKA_ADMIN_PASSWORD"):
        service_environment(service, {"KAFKA_ADMIN_PASSWORD": ""})


def test_the_broker_runs_broker_sh_from_the_mounted_directory(compose_services: Services) -> None:
    kafka = compose_services["kafka"]
    assert kafka["command"] == ["/bin/bash", f"{MOUNT}/broker.sh"]
    assert f"./deploy/kafka:{MOUNT}:ro" in kafka["volumes"]
    check = " ".join(kafka["healthcheck"]["test"][1:])
    assert "--command-config /tmp/tweetshop_admin_client.properties" in check, "the check must log in too"


# --- the services -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_logs_in_as_itself_with_the_password_kafka_init_gave_it(
    compose_services: Services,
    service_environment: ServiceEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    service: str,
) -> None:
    env = service_environment(service)
    assert env["TWEETSHOP_KAFKA_SECURITY_PROTOCOL"] in ("SASL_PLAINTEXT", "SASL_SSL")
    assert env["TWEETSHOP_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["TWEETSHOP_KAFKA_SASL_USERNAME"] == service, "one principal per service, named after it"
    variable = password_variable(service)
    assert env["TWEETSHOP_KAFKA_SASL_PASSWORD"] == service_environment("kafka-init")[variable]
    # Both sides follow the host's variable, and compose stops while it is unset.
    mine = secrets.token_urlsafe(48)
    assert service_environment(service, {variable: mine})["TWEETSHOP_KAFKA_SASL_PASSWORD"] == mine
    assert service_environment("kafka-init", {variable: mine})[variable] == mine
    with pytest.raises(ValueError, match=variable):
        service_environment(service, {variable: ""})
    settings = service_settings(service, env, monkeypatch)
    assert uses_sasl(settings)
    options = client_security(settings)
    assert (
        options["sasl_plain_username"] == service
        and options["sasl_plain_password"] == env["TWEETSHOP_KAFKA_SASL_PASSWORD"]
    )
    assert settings.kafka_create_topics is False, "kafka-init creates the topics; the services have no CREATE"
    assert compose_services[service]["depends_on"]["kafka-init"] == {"condition": "service_completed_successfully"}


def test_no_other_container_gets_kafka_credentials(compose_services: Services, written_environment: Any) -> None:
    holders = {
        name
        for name in compose_services
        for key, value in written_environment(name).items()
        if "KAFKA_PASSWORD" in str(value) or key.endswith("KAFKA_PASSWORD")
    }
    # kafka-exporter (profile observability) logs in as `monitor`, whose ACLs only DESCRIBE.
    assert holders == {*SERVICES, "kafka-init", "kafka-exporter"}
    for service in SERVICES:
        written = written_environment(service)["TWEETSHOP_KAFKA_SASL_PASSWORD"]
        assert re.fullmatch(rf"\$\{{{password_variable(service)}:\?[^}}]+\}}", written), written


# --- the init job ---------------------------------------------------------------------------------------------------


def test_the_init_job_provisions_as_the_super_user_on_the_broker_listener(
    compose_services: Services, service_environment: ServiceEnvironment, listeners: Listeners
) -> None:
    init = compose_services["kafka-init"]
    assert init["image"] == compose_services["kafka"]["image"]
    assert init.get("restart") == "no"
    assert init["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert init["command"] == ["/bin/bash", f"{MOUNT}/init.sh"]
    assert f"./deploy/kafka:{MOUNT}:ro" in init["volumes"]
    env, kafka = service_environment("kafka-init"), service_environment("kafka")
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    broker_listener = kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert env["BOOTSTRAP"] == "{}:{}".format(*advertised[broker_listener])
    assert env["KAFKA_ADMIN_PASSWORD"] == kafka["ADMIN_PASSWORD"]
    for user in USERS:
        assert env.get(password_variable(user)), f"kafka-init needs {password_variable(user)}"


def test_the_generated_provisioning_script_is_what_the_topology_derives() -> None:
    assert acls.main(["--script", "--check", str(GENERATED)]) == 0, (
        f"run: python -m tweetshop_cli.acls --script --write {acls.GENERATED_SCRIPT}"
    )
    text = GENERATED.read_text(encoding="utf-8")
    assert f'TWEETSHOP_KAFKA_USERS="{" ".join(USERS)}"' in text


TOOLS = ("kafka-topics.sh", "kafka-acls.sh", "kafka-configs.sh", "kafka-broker-api-versions.sh")


def fake_kafka_bin(directory: Path, record: Path) -> Path:
    """Stand-ins for Kafka's command-line tools: each appends its name and arguments (one JSON-ish line) to ``record``
    and, for --command-config, the file's content, so the test sees what the init job asked for and as whom."""
    directory.mkdir()
    for tool in TOOLS:
        script = directory / tool
        script.write_text(
            "#!/usr/bin/env bash\n"
            f'printf "%s" {shlex.quote(tool)} >> {shlex.quote(str(record))}\n'
            f'for a in "$@"; do printf \' %q\' "$a" >> {shlex.quote(str(record))}; done\n'
            f"echo >> {shlex.quote(str(record))}\n"
            'prev=""; for a in "$@"; do if [[ "$prev" == --command-config ]]; then '
            f'sed "s/^/  config: /" "$a" >> {shlex.quote(str(record))}; fi; prev="$a"; done\n',
            encoding="utf-8",
        )
        script.chmod(0o755)
    return directory


def run_init(tmp_path: Path, passwords: Mapping[str, str]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bash = shutil.which("bash")
    assert bash, "bash runs the init job"
    record = tmp_path / "calls.txt"
    record.touch()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA_BIN": str(fake_kafka_bin(tmp_path / "bin", record)),
        "BOOTSTRAP": "kafka:29094",
        "TMPDIR": str(tmp_path),
        **passwords,
    }
    result = subprocess.run(
        [bash, str(KAFKA_DIR / "init.sh")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return result, record.read_text(encoding="utf-8").splitlines()


def strong_passwords() -> dict[str, str]:
    values = {password_variable(user): secrets.token_urlsafe(48) for user in USERS}
    values["KAFKA_ADMIN_PASSWORD"] = secrets.token_urlsafe(48)
    return values


def calls(lines: list[str], tool: str) -> list[list[str]]:
    return [shlex.split(line)[1:] for line in lines if line.startswith(tool + " ")]


def granted_by(lines: list[str]) -> set[Acl]:
    flags = {flag: op for op, flag in acls._OPERATION_FLAGS.items()}
    found: set[Acl] = set()
    for words in calls(lines, "kafka-acls.sh"):
        if "--add" not in words:
            continue
        who = words[words.index("--allow-principal") + 1]
        pattern = words[words.index("--resource-pattern-type") + 1].upper()
        operations = [flags[words[i + 1]] for i, w in enumerate(words) if w == "--operation"]
        resources = [("TOPIC", words[i + 1]) for i, w in enumerate(words) if w == "--topic"]
        resources += [("GROUP", words[i + 1]) for i, w in enumerate(words) if w == "--group"]
        resources += [("CLUSTER", acls.CLUSTER)] if "--cluster" in words else []
        found |= {Acl(who, kind, pattern, name, op) for kind, name in resources for op in operations}
    return found


def test_the_init_job_creates_the_topics_users_and_exactly_the_derived_acls(tmp_path: Path) -> None:
    passwords = strong_passwords()
    result, lines = run_init(tmp_path, passwords)
    assert result.returncode == 0, result.stderr + result.stdout
    # Topics: every v1 topic and dead-letter topic, 6 partitions, and only if missing.
    created = [words[words.index("--topic") + 1] for words in calls(lines, "kafka-topics.sh")]
    assert sorted(created) == sorted(acls.all_topics())
    assert all("--if-not-exists" in words for words in calls(lines, "kafka-topics.sh"))
    assert {words[words.index("--partitions") + 1] for words in calls(lines, "kafka-topics.sh")} == {"6"}
    # Users: one SCRAM-SHA-512 credential each, with the password compose gave.
    users = {}
    for words in calls(lines, "kafka-configs.sh"):
        assert words[words.index("--entity-type") + 1] == "users"
        users[words[words.index("--entity-name") + 1]] = words[words.index("--add-config") + 1]
    assert set(users) == set(USERS)
    for user, config in users.items():
        assert config == f"SCRAM-SHA-512=[iterations=8192,password={passwords[password_variable(user)]}]"
    # ACLs: exactly the set derived from the topology, nothing more.
    assert granted_by(lines) == set(derive())
    assert calls(lines, "kafka-acls.sh")[-1][-1] == "--list"
    # Every call logged in as the super user, with a settings file deleted afterwards.
    admin = passwords["KAFKA_ADMIN_PASSWORD"]
    configs = [line for line in lines if line.startswith("  config: sasl.jaas.config=")]
    assert configs and all(f'username="admin" password="{admin}"' in line for line in configs)
    assert len(configs) == len([line for line in lines if not line.startswith("  config:")])
    assert not [p for p in tmp_path.iterdir() if p.is_file() and p.name.startswith("tmp")], "admin settings left"
    assert admin not in result.stdout + result.stderr


def test_the_init_job_creates_each_topic_with_its_declared_configs(tmp_path: Path) -> None:
    result, lines = run_init(tmp_path, strong_passwords())
    assert result.returncode == 0, result.stderr + result.stdout
    created = {}
    for words in calls(lines, "kafka-topics.sh"):
        configs = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--config")
        created[words[words.index("--topic") + 1]] = configs
    assert set(created) == set(acls.all_topics())
    for topic, configs in created.items():
        assert configs == SYSTEM.config(topic).kafka_configs(), topic
    assert created["catalog.products.v1"] == {"cleanup.policy": "delete", "retention.ms": "-1"}
    assert created["tracking.locations.v1"]["retention.ms"] == "86400000"
    assert created["checkout.orders.v1.dlq"]["retention.ms"] == str(30 * 24 * 3600 * 1000)


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("CATALOG_KAFKA_PASSWORD", "", "CATALOG_KAFKA_PASSWORD is required"),
        ("FEED_KAFKA_PASSWORD", "short-but-url-safe", "shorter than 32"),
        ("CHECKOUT_KAFKA_PASSWORD", "x" * 40 + ",password=evil]", "URL-safe"),
        ("OPERATOR_KAFKA_PASSWORD", "", "OPERATOR_KAFKA_PASSWORD is required"),
    ],
)
def test_the_init_job_refuses_a_missing_short_or_unsafe_password_before_any_acl(
    tmp_path: Path, variable: str, value: str, why: str
) -> None:
    passwords = strong_passwords() | {variable: value}
    result, lines = run_init(tmp_path, passwords)
    assert result.returncode != 0
    assert why in result.stderr
    assert not [words for words in calls(lines, "kafka-acls.sh") if "--add" in words]


def test_broker_sh_writes_the_jaas_file_and_starts_the_image_without_the_password_in_its_environment(
    tmp_path: Path,
) -> None:
    bash = shutil.which("bash")
    assert bash
    run = tmp_path / "run"
    run.write_text(
        '#!/usr/bin/env bash\necho "KAFKA_OPTS=$KAFKA_OPTS"\necho "ADMIN_PASSWORD=${ADMIN_PASSWORD-unset}"\n',
        encoding="utf-8",
    )
    run.chmod(0o755)
    password = secrets.token_urlsafe(48)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(tmp_path), "KAFKA_DOCKER_RUN": str(run)}
    result = subprocess.run(
        [bash, str(KAFKA_DIR / "broker.sh")],
        env={**env, "ADMIN_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    jaas = tmp_path / "tweetshop_kafka_server_jaas.conf"
    assert f"-Djava.security.auth.login.config={jaas}" in result.stdout
    assert "ADMIN_PASSWORD=unset" in result.stdout, "the image's start script must not see the password"
    text = jaas.read_text(encoding="utf-8")
    assert f'username="admin" password="{password}" user_admin="{password}";' in text
    assert "org.apache.kafka.common.security.scram.ScramLoginModule required;" in text
    assert oct(jaas.stat().st_mode & 0o777) == "0o600"
    client = (tmp_path / "tweetshop_admin_client.properties").read_text(encoding="utf-8")
    assert "security.protocol=SASL_PLAINTEXT" in client and password in client
    refused = subprocess.run(
        [bash, str(KAFKA_DIR / "broker.sh")],
        env={**env, "ADMIN_PASSWORD": 'x" user_mallory="x'},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode != 0 and "URL-safe" in refused.stderr
