"""Start, reach and stop local services: the MLflow server of `make ui`, and PostgreSQL.

Each service runs in its own process group (session) so that stopping it also
stops the worker processes it forks (uvicorn workers, postgres backends).
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from pipeline.errors import EnvironmentSetupError

_logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
UI_SCRIPT = REPO / "docker" / "mlflow-ui.sh"
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    """A service started in its own session, with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM the whole process group, then SIGKILL what is left after `timeout_s`."""
        pgid = self.popen.pid  # start_new_session=True: the leader's pid is the group id
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            if _wait_group_exit(self.popen, pgid, wait_s):
                break
        return self.popen.poll()


def _wait_group_exit(popen: subprocess.Popen[bytes], pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        popen.poll()  # reap the leader, or its zombie keeps the group "alive"
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def start_process(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServiceProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    _logger.info("started %s (pid %d), log %s", name, popen.pid, log_path)
    return ServiceProcess(name=name, popen=popen, log_path=log_path)


def wait_for_http(url: str, *, timeout_s: float, process: ServiceProcess | None = None) -> None:
    """Poll `url` until it answers 200; fail early, with its log, if `process` dies."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise EnvironmentSetupError(
                f"{process.name} exited with code {process.popen.returncode} before {url} "
                f"answered; its log ({process.log_path}) ends with:\n{process.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.5)
    tail = f"; its log ends with:\n{process.log_tail()}" if process is not None else ""
    raise EnvironmentSetupError(
        f"{url} did not answer within {timeout_s:.0f}s ({last_error}); the machine may be "
        f"overloaded: raise the timeout, or check the service's log{tail}"
    )


class StopsOnExit:
    """`with service:` stops it on the way out, whatever happened inside."""

    def stop(self) -> object:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------- MLflow server


@dataclass(frozen=True, kw_only=True)
class MlflowUiSettings:
    """What `docker/mlflow-ui.sh` (`make ui`) reads from its environment."""

    backend_store_uri: str
    artifacts_destination: str
    host: str = LOOPBACK
    port: int = 5000
    app: str | None = None
    workers: int = 1

    def env(self) -> dict[str, str]:
        env = {
            "UI_HOST": self.host,
            "UI_PORT": str(self.port),
            "UI_BACKEND_STORE_URI": self.backend_store_uri,
            "UI_ARTIFACTS_DESTINATION": self.artifacts_destination,
            "UI_WORKERS": str(self.workers),
        }
        if self.app:
            env["UI_APP"] = self.app
        return env


@dataclass
class MlflowUi(StopsOnExit):
    """A running MLflow server started through `docker/mlflow-ui.sh`."""

    settings: MlflowUiSettings
    process: ServiceProcess

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def stop(self) -> int | None:
        return self.process.stop()

    def __enter__(self) -> MlflowUi:
        return self


def start_mlflow_ui(
    settings: MlflowUiSettings,
    *,
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 180.0,
    script: Path = UI_SCRIPT,
) -> MlflowUi:
    """Start the server exactly as `make ui` does and wait until /health answers."""
    if not script.is_file():
        raise EnvironmentSetupError(
            f"{script} not found: the MLflow UI launcher ships with a source checkout of "
            "sparktrain; run from the repository (git clone) rather than an installed wheel"
        )
    env = {**os.environ, **settings.env(), **(extra_env or {})}
    process = start_process("mlflow server", ["bash", str(script)], log_path=log_path, env=env)
    server = MlflowUi(settings=settings, process=process)
    try:
        wait_for_http(f"{server.url}/health", timeout_s=timeout_s, process=process)
    except BaseException:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------- PostgreSQL


def find_postgres_bin() -> Path | None:
    """The bin directory of the newest PostgreSQL server installed from Debian's packages."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


POSTGRES_MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin "
    "or on PATH: install them with `apt-get install postgresql` (CI's .ci/run does this "
    "when it runs as root)"
)


@dataclass
class PostgresServer(StopsOnExit):
    """A throwaway PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only.

    PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
    user that Debian's package creates. The password is random and only ever passed
    through PGPASSWORD, never in a URI.
    """

    bin_dir: Path
    port: int = field(default_factory=free_port)
    user: str = "sparktrain"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sparktrain-pg-")))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def _run_as(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        runuser = shutil.which("runuser")
        if runuser is None:
            raise EnvironmentSetupError(
                "running as root, PostgreSQL must run as another user, but `runuser` "
                "(util-linux) is missing: apt-get install util-linux, or run as a non-root user"
            )
        return [runuser, "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        cmd = [*self._run_as(), *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        if proc.returncode != 0:
            raise EnvironmentSetupError(
                f"{Path(argv[0]).name} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )

    def start(self) -> PostgresServer:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres", group="postgres")
            shutil.chown(pwfile, user="postgres", group="postgres")
        try:
            self._run(
                str(self.bin_dir / "initdb"),
                "-D", str(self.data_dir),
                f"--username={self.user}",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-instructions",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        # TCP on loopback only; the Unix socket in our own directory, not /var/run/postgresql.
        options = f"-p {self.port} -c listen_addresses={LOOPBACK} -k {self.root}"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D", str(self.data_dir),
            "-l", str(self.log_path),
            "-o", options,
            "-w", "-t", "120",
            "start",
        )  # fmt: skip
        _logger.info("postgres up on %s:%d (data %s)", LOOPBACK, self.port, self.data_dir)
        return self

    def env(self) -> dict[str, str]:
        """Environment for clients: libpq (psycopg2, MLflow's SQLAlchemy store) reads PGPASSWORD."""
        return {"PGPASSWORD": self.password}

    def uri(self, database: str) -> str:
        """SQLAlchemy URI without the password (it travels in PGPASSWORD)."""
        return f"postgresql://{self.user}@{LOOPBACK}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host=LOOPBACK, port=self.port, user=self.user, password=self.password, dbname="postgres"
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                )
            except EnvironmentSetupError as exc:
                _logger.warning("could not stop postgres cleanly: %s", exc)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()
