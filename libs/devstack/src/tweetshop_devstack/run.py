"""`make run`: the whole shop on this machine, without Docker, supervised until Ctrl-C.

Starts Postgres (data kept in ``.run/pgdata``), Tansu (Kafka on 9092, memory
only), localstripe (8420, state in ``.run/localstripe.pickle``), provisions each
service's role and schema, starts the services, seeds demo data and restarts
any service that dies. Ctrl-C or SIGTERM stops everything, services first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import psutil

from . import seed as demo_seed
from .infra import (
    LOCALHOST,
    EmbeddedPostgres,
    LocalStripe,
    ManagedProcess,
    PortInUseError,
    StartupError,
    Tansu,
    listens_on,
    port_is_free,
    register_stripe_webhook,
)
from .services import (
    DEV_STRIPE_WEBHOOK_SECRET,
    SERVICES,
    STRIPE_WEBHOOK_ID,
    ServiceDef,
    dev_password,
    service_dsn,
    service_env,
)
from .supervisor import ChildSpec, Supervisor

DATABASE = "tweetshop"
# Settings `make run` gives every service unless the environment says otherwise. One partition per topic, not
# production's 6: each service runs once here, and Tansu's memory store (the embedded broker) spends CPU per
# partition on every fetch and, for a partition with new data, reads the list of every batch it ever stored. Since
# the outbox relay sends a round's events together (stop 32), each round stores one batch per partition it touches:
# with 3 partitions a fetch under load reads three lists as long as one partition's list would be (bench/README.md,
# stop 33: the broker's CPU per order 3.96 / 3.71 -> 2.02 / 2.31 ms at 84/s after a 120/s step, 11.6 -> 7.4 ms
# after three 30/s steps). Stop 27 had chosen 3 when every round was about one event.
MAKE_RUN_DEFAULTS = {"TWEETSHOP_KAFKA_TOPIC_PARTITIONS": "1"}
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Ports:
    """Infrastructure ports, each overridable by its environment variable."""

    postgres: int
    kafka: int
    stripe: int


PORT_ENV = {
    "postgres": "TWEETSHOP_DEV_PG_PORT",
    "kafka": "TWEETSHOP_DEV_KAFKA_PORT",
    "stripe": "TWEETSHOP_DEV_STRIPE_PORT",
}
PORT_DEFAULTS = {"postgres": 5432, "kafka": 9092, "stripe": 8420}


class DevStackError(RuntimeError):
    """`make run` cannot go on; the message says why and what to do."""


def say(message: str) -> None:
    """Print a devstack message."""
    print(f"devstack  | {message}", flush=True)


def ports_from_env(environ: dict[str, str] | None = None) -> Ports:
    """Ports from TWEETSHOP_DEV_*_PORT, defaulting to Postgres 5432, Kafka 9092, localstripe 8420."""
    env = os.environ if environ is None else environ
    values: dict[str, int] = {}
    for key, variable in PORT_ENV.items():
        raw = env.get(variable, "").strip()
        try:
            values[key] = int(raw) if raw else PORT_DEFAULTS[key]
        except ValueError:
            raise DevStackError(f"{variable}={raw!r} is not a port number") from None
    return Ports(**values)


class LogEcho(threading.Thread):
    """Copies new lines of the services' log files to stdout, each prefixed with the service's name."""

    def __init__(self, logs: dict[str, Path]) -> None:
        super().__init__(name="log-echo", daemon=True)
        self._logs = logs
        self._stop_event = threading.Event()
        # Start at the current end: earlier runs' lines are in the file, not news.
        self._offsets = {name: path.stat().st_size if path.exists() else 0 for name, path in logs.items()}

    def run(self) -> None:
        width = max(len(n) for n in self._logs) if self._logs else 0
        while not self._stop_event.wait(0.2):
            for name, path in self._logs.items():
                self._offsets[name] = self._echo_new(name.ljust(width), path, self._offsets[name])

    @staticmethod
    def _echo_new(label: str, path: Path, offset: int) -> int:
        try:
            with path.open("rb") as f:
                if f.seek(0, os.SEEK_END) < offset:
                    offset = 0  # truncated
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        complete = data.rfind(b"\n") + 1
        for line in data[:complete].decode("utf-8", errors="replace").splitlines():
            print(f"{label} | {line}", flush=True)
        return offset + complete

    def stop(self) -> None:
        """Stop echoing."""
        self._stop_event.set()


class DevStack:
    """Everything `make run` starts, in order, and stops in reverse order."""

    def __init__(
        self,
        root: Path,
        ports: Ports,
        *,
        echo_logs: bool = True,
        seed: bool = True,
        services: Sequence[ServiceDef] = SERVICES,
    ) -> None:
        self.run_dir = root / ".run"
        self.logs_dir = self.run_dir / "logs"
        self.ports = ports
        self.echo_logs = echo_logs
        self.seed_enabled = seed
        self.services: list[ServiceDef] = [s for s in services if not s.optional or s.is_installed()]
        self.postgres = EmbeddedPostgres(self.run_dir / "pgdata", ports.postgres, self.logs_dir)
        self.tansu = Tansu(ports.kafka, self.logs_dir)
        self.stripe = LocalStripe(ports.stripe, self.logs_dir, state_file=self.run_dir / "localstripe.pickle")
        self.supervisor: Supervisor | None = None
        self._echo: LogEcho | None = None
        self._lock_file: IO[str] | None = None
        self._recorded_pids: dict[str, int | None] = {}

    # --- start -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start infrastructure, provision, start services, wait until ready, seed."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_run_lock()
        self._stop_leftovers()
        self.postgres.clear_leftovers()
        self._check_ports()
        say(f"starting Postgres on {LOCALHOST}:{self.ports.postgres} (data: {self.postgres.data_dir})")
        self.postgres.start()
        self._record_pids()
        say(f"starting Kafka (Tansu) on {self.tansu.bootstrap_servers}")
        self.tansu.start()
        self._record_pids()
        say(f"starting localstripe on {self.stripe.base_url}")
        self.stripe.start()
        self._record_pids()
        asyncio.run(self._prepare_database())
        for service in self.services:
            if service.uses_stripe:
                # localstripe keeps webhooks in memory only: register on every start.
                register_stripe_webhook(
                    self.stripe.base_url,
                    STRIPE_WEBHOOK_ID,
                    f"http://{LOCALHOST}:{service.port}/webhooks/stripe",
                    DEV_STRIPE_WEBHOOK_SECRET,
                )
        self._start_services()
        self._wait_services_ready()
        if self.seed_enabled and {"catalog", "feed"} <= {s.name for s in self.services}:
            self._seed()

    def _acquire_run_lock(self) -> None:
        # Two `make run` in one checkout would share .run/pgdata: the second must not touch the first's server.
        lock = (self.run_dir / "run.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise DevStackError(f"another `make run` (pid {holder}) is using {self.run_dir}; stop it first") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock_file = lock

    def _pids_file(self) -> Path:
        return self.run_dir / "pids.json"

    def _stop_leftovers(self) -> None:
        """Stop children of an earlier run that was killed before it could stop them (they have their own sessions)."""
        try:
            recorded = json.loads(self._pids_file().read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return
        for name, entry in recorded.items():
            try:
                process = psutil.Process(int(entry["pid"]))
                # The same pid and start time: the very process we started, not a newcomer that reused the pid.
                if abs(process.create_time() - float(entry["create_time"])) > 0.05:
                    continue
                say(f"stopping {name} (pid {process.pid}) left over from an earlier run")
                process.send_signal(int(entry.get("signal", signal.SIGTERM)))
                try:
                    process.wait(15)
                except psutil.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError, ValueError):
                continue
        self._pids_file().unlink(missing_ok=True)

    def _all_processes(self) -> dict[str, ManagedProcess]:
        processes = {"postgres": self.postgres.process, "tansu": self.tansu.process, "localstripe": self.stripe.process}
        if self.supervisor is not None:
            processes |= {name: self.supervisor.process(name) for name in self.supervisor.names}
        return processes

    def _record_pids(self) -> None:
        """Write the children's pids (and start times) to .run/pids.json when they changed."""
        current = {name: p.pid if p.is_running() else None for name, p in self._all_processes().items()}
        if current == self._recorded_pids:
            return
        entries: dict[str, dict[str, float | int]] = {}
        for name, process in self._all_processes().items():
            pid = current[name]
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                entries[name] = {
                    "pid": pid,
                    "create_time": psutil.Process(pid).create_time(),
                    "signal": int(process.stop_signal),
                }
        tmp = self._pids_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=2))
        tmp.replace(self._pids_file())
        self._recorded_pids = current

    def _check_ports(self) -> None:
        problems: list[str] = []
        infra = {"postgres": self.ports.postgres, "kafka": self.ports.kafka, "stripe": self.ports.stripe}
        for key, port in infra.items():
            if not port_is_free(port):
                problems.append(
                    f"port {port} ({key}) is already in use: stop what listens there "
                    f"or choose another port with {PORT_ENV[key]}=<port>"
                )
        for service in self.services:
            if not port_is_free(service.port):
                problems.append(
                    f"port {service.port} ({service.name}, fixed by the contract) is already in use: "
                    f"stop what listens there (`ss -ltnp 'sport = :{service.port}'` shows it)"
                )
        if problems:
            raise DevStackError("cannot start:\n  " + "\n  ".join(problems))

    async def _prepare_database(self) -> None:
        import asyncpg
        from tweetshop_platform.db import provision_service

        conn = await asyncpg.connect(self.postgres.admin_dsn)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
                say(f"created database {DATABASE}")
        finally:
            await conn.close()
        app_admin_dsn = self.postgres.dsn(DATABASE)
        for service in self.services:
            if service.uses_database:
                await provision_service(app_admin_dsn, service.name, dev_password(service.name))
        say("provisioned roles and schemas: " + ", ".join(s.name for s in self.services if s.uses_database))

    def _public_urls(self) -> dict[str, str]:
        return {s.name: f"http://localhost:{s.port}" for s in self.services}

    def _service_urls(self) -> dict[str, str]:
        return {**self._public_urls(), "stripe": f"http://localhost:{self.ports.stripe}"}

    def _start_services(self) -> None:
        app_admin_dsn = self.postgres.dsn(DATABASE)
        specs: list[ChildSpec] = []
        for service in self.services:
            env = service_env(
                service,
                http_port=service.port,
                database_url=service_dsn(app_admin_dsn, service.name, dev_password(service.name)),
                kafka_bootstrap=self.tansu.bootstrap_servers,
                kafka_idempotence=False,
                stripe_base_url=self.stripe.base_url,
                public_urls=self._public_urls(),
                service_urls=self._service_urls() if service.gateway else None,
            )
            specs.append(
                ChildSpec(
                    name=service.name,
                    argv=[sys.executable, "-m", service.module],
                    log_path=self.logs_dir / f"{service.name}.log",
                    env={**MAKE_RUN_DEFAULTS, **os.environ, **env},
                )
            )
        for service in self.services:
            # Helpers beside a service (the demo's courier drives each paid order's parcel to its address, so the
            # map page moves): `python -m <module> --<service>-url <its URL>`.
            for module in service.dev_companions:
                name = module.rsplit(".", 1)[-1].replace("_", "-")
                specs.append(
                    ChildSpec(
                        name=name,
                        argv=[
                            sys.executable,
                            "-m",
                            module,
                            f"--{service.name}-url",
                            f"http://{LOCALHOST}:{service.port}",
                        ],
                        log_path=self.logs_dir / f"{name}.log",
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
                )
        self.supervisor = Supervisor(specs, report=say)
        if self.echo_logs:
            self._echo = LogEcho({s.name: s.log_path for s in specs})
            self._echo.start()
        say("starting " + ", ".join(f"{s.name} (:{s.port})" for s in self.services))
        self.supervisor.start()
        self._record_pids()

    def _wait_services_ready(self) -> None:
        assert self.supervisor is not None
        pending = {s.name: f"http://{LOCALHOST}:{s.port}/readyz" for s in self.services}
        ports = {s.name: s.port for s in self.services}
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while pending:
                # Keep supervising meanwhile: a service that crashes while starting is restarted, as later on.
                self.supervisor.check()
                self._record_pids()
                for name, url in list(pending.items()):
                    # Our own child must hold the port: on a shared machine another process may answer there.
                    if not listens_on(self.supervisor.pid(name), ports[name]):
                        continue
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(url).status_code == 200:
                            del pending[name]
                            say(f"{name} is ready")
                if not pending:
                    return
                if time.monotonic() > deadline:
                    details = "\n".join(
                        f"--- {name}: last lines of {self.supervisor.process(name).log_path}\n"
                        f"{self.supervisor.process(name).tail(30)}"
                        for name in pending
                    )
                    raise DevStackError(
                        f"not ready after {READY_TIMEOUT_S:.0f} s (GET /readyz): {', '.join(pending)}\n{details}"
                    )
                time.sleep(0.5)

    def _seed(self) -> None:
        seed_file = self.run_dir / "seed.json"
        try:
            ports = {s.name: s.port for s in self.services}
            catalog, feed = (f"http://127.0.0.1:{ports[name]}" for name in ("catalog", "feed"))
            result = demo_seed.seed(catalog, feed, seed_file, say=say)
        except (demo_seed.SeedError, httpx.HTTPError) as exc:
            # The stack is still useful without demo data: say what failed, keep running.
            say(f"seeding demo data failed: {exc}")
            return
        result = result or demo_seed.load_seed(seed_file)
        if result is not None and result.buyable_tweets:
            say("buy the first product (then GET /orders/<id> with 'Authorization: Bearer <access_token>'):")
            print(demo_seed.buy_curl(result), flush=True)

    # --- run and stop ----------------------------------------------------------------------------------------
    def print_urls(self) -> None:
        """Print where everything answers."""
        lines = [f"{s.name:<12} http://localhost:{s.port}" for s in self.services if not s.gateway]
        # The buyer web app: the gateway to the APIs above.
        lines += [f"{'web app':<12} http://localhost:{s.port}" for s in self.services if s.gateway]
        lines += [
            f"{'localstripe':<12} http://localhost:{self.ports.stripe}",
            f"{'Kafka':<12} localhost:{self.ports.kafka}",
            f"{'Postgres':<12} {self.postgres.dsn(DATABASE).replace(LOCALHOST, 'localhost')}",
            f"{'logs':<12} {self.logs_dir}/",
        ]
        say("tweetshop is running; Ctrl-C stops everything\n    " + "\n    ".join(lines))

    def supervise(self) -> None:
        """Restart services that die, until interrupted."""
        assert self.supervisor is not None
        while True:
            self.supervisor.check()
            self._record_pids()
            time.sleep(0.5)

    def stop(self) -> None:
        """Services first, then localstripe, the broker and Postgres; each by its pid."""
        if self.supervisor is not None:
            self.supervisor.stop()
        for name, stop in (
            ("localstripe", self.stripe.stop),
            ("Kafka", self.tansu.stop),
            ("Postgres", self.postgres.stop),
        ):
            try:
                stop()
            except OSError as exc:
                say(f"stopping {name} failed: {exc}")
        if self._echo is not None:
            self._echo.stop()
        if self._lock_file is not None:
            self._pids_file().unlink(missing_ok=True)
            self._lock_file.close()


def main(argv: Sequence[str] | None = None, services: Sequence[ServiceDef] = SERVICES) -> int:
    """Entry point of `make run` (and `tweetshop-dev`); returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet", action="store_true", help="do not echo service logs (they stay in .run/logs)")
    parser.add_argument("--no-seed", action="store_true", help="do not create the demo data")
    args = parser.parse_args(argv)

    # SIGTERM ends like Ctrl-C, so one `finally` stops what was started, whatever phase we are in.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    code = 0
    stack: DevStack | None = None
    try:
        stack = DevStack(
            Path.cwd(), ports_from_env(), echo_logs=not args.quiet, seed=not args.no_seed, services=services
        )
        stack.start()
        stack.print_urls()
        stack.supervise()
    except KeyboardInterrupt:
        say("stopping everything")
    except PortInUseError as exc:
        variable = {"Postgres": PORT_ENV["postgres"], "Kafka (Tansu)": PORT_ENV["kafka"]}.get(
            exc.what, PORT_ENV["stripe"]
        )
        say(f"error: {exc}; choose another port with {variable}=<port>")
        code = 1
    except (DevStackError, StartupError) as exc:
        say(f"error: {exc}")
        code = 1
    finally:
        # Stopping takes a few seconds at most; a second Ctrl-C must not leave orphans behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            stack.stop()
            say("stopped")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
