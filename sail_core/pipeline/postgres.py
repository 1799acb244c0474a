"""PostgreSQL for the shared stores: the URLs that choose Airflow's and MLflow's databases, and a throw-away
local server.

Which store, one mechanism (each engine's own environment variable; unset keeps the embedded SQLite default
under ``SAIL_HOME``):

- Airflow's metadata database: ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``. :func:`airflow_database` checks it
  and derives ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC`` (Airflow would otherwise ask for asyncpg, which is
  not installed: psycopg 3 serves both).
- MLflow's tracking store: ``MLFLOW_TRACKING_URI``, a tracking server (``http://HOST:PORT``, the multi-worker
  setup: it holds the artifacts too) or a database. :func:`check_tracking_uri` checks it.

A URL this project cannot run raises :class:`StoreURLError` (a ``ValueError``: the CLI prints it on one
screen) naming the variable, what is wrong and the form to use, before anything starts.

:class:`LocalPostgres` runs Debian's ``postgresql`` server programs in a folder of its own, on 127.0.0.1
with a password and no Unix socket, as the ``postgres`` system user when this process is root (PostgreSQL
refuses to run as root). It is for tests and for trying the multi-worker setup on one machine
(docs/multiworker.md): durability is off (``fsync``, ``synchronous_commit``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from sail_core.paths import free_ports

AIRFLOW_VARIABLE = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
AIRFLOW_ASYNC_VARIABLE = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"
MLFLOW_VARIABLE = "MLFLOW_TRACKING_URI"
POSTGRES_FORM = "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
SQLITE_FORM = "sqlite:////absolute/path/file.db"
DOC = "docs/multiworker.md"


class StoreURLError(ValueError):
    """A store URL (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, ``MLFLOW_TRACKING_URI``) this project cannot run."""


def _masked(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _check_database(url: str, variable: str) -> str:
    """Check a SQLAlchemy database URL (SQLite file or PostgreSQL over psycopg 3); returns its scheme."""
    def refuse(why: str) -> StoreURLError:
        return StoreURLError(f"{variable}={_masked(url)!r}: {why}. Use {POSTGRES_FORM} (PostgreSQL, shared by "
                             f"workers) or {SQLITE_FORM} (one machine), or unset it for the embedded SQLite "
                             f"default under SAIL_HOME; see {DOC}")

    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:////"):
            raise refuse("a SQLite URL needs an absolute path (four slashes): tasks run in other folders")
        return scheme
    if scheme in ("postgres", "postgresql+psycopg2", "postgresql+asyncpg", "postgresql+pg8000"):
        raise refuse(f"scheme {scheme!r} is not served here: the PostgreSQL driver installed is psycopg 3 "
                     "(postgresql+psycopg://, or postgresql://, which SQLAlchemy 2.1 maps to it)")
    if scheme not in ("postgresql", "postgresql+psycopg"):
        raise refuse(f"scheme {scheme or '(none)'!r} is not a database this project runs")
    parts = urlsplit(url)
    if not parts.hostname:
        raise refuse("the URL names no host")
    if parts.path.strip("/") == "":
        raise refuse("the URL names no database (the path after the host)")
    return scheme


def airflow_database(url: str) -> dict[str, str]:
    """The Airflow settings for metadata database ``url``: the URL itself and the async URL that follows
    from it (always derived, so the two never name different databases): psycopg 3 for PostgreSQL (Airflow's
    own default would be asyncpg), aiosqlite for SQLite. Raises :class:`StoreURLError`."""
    scheme = _check_database(url, AIRFLOW_VARIABLE)
    driver = "sqlite+aiosqlite" if scheme == "sqlite" else "postgresql+psycopg"
    return {AIRFLOW_VARIABLE: url, AIRFLOW_ASYNC_VARIABLE: f"{driver}:{url.split(':', 1)[1]}"}


def check_tracking_uri(uri: str) -> str:
    """``uri`` when MLflow can track there: a tracking server (``http(s)://HOST:PORT``) or a database
    (SQLite file, PostgreSQL over psycopg 3). Raises :class:`StoreURLError`."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme in ("http", "https"):
        if not urlsplit(uri).hostname:
            raise StoreURLError(f"{MLFLOW_VARIABLE}={_masked(uri)!r}: the URL names no host; use "
                                f"http://HOST:PORT (an `mlflow server`; see {DOC})")
        return uri
    try:
        _check_database(uri, MLFLOW_VARIABLE)
    except StoreURLError as e:
        raise StoreURLError(f"{e}. A tracking server, http://HOST:PORT, is what several workers share") from None
    return uri


def is_server(uri: str) -> bool:
    """Whether tracking URI ``uri`` is an MLflow tracking server (which decides where artifacts go)."""
    return uri.split(":", 1)[0].lower() in ("http", "https")


def libpq_url(url: str) -> str:
    """The libpq form (``postgresql://``) of a SQLAlchemy PostgreSQL URL, for ``psycopg.connect``."""
    return "postgresql:" + url.split(":", 1)[1]


# ---------------------------------------------------------------------- a throw-away local server
def server_programs() -> Path:
    """The folder of PostgreSQL's server programs (``initdb``, ``postgres``): on PATH, else Debian's newest
    ``/usr/lib/postgresql/<version>/bin``."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                       key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if installed:
        return installed[-1].parent
    raise FileNotFoundError("PostgreSQL's server programs (initdb, postgres) are neither on PATH nor in "
                            "/usr/lib/postgresql/*/bin; install Debian's package: apt-get install postgresql")


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that runs a program as the ``postgres`` user when this process is root (PostgreSQL
    refuses root), and that user; no prefix otherwise (the server runs as the current user)."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("PostgreSQL refuses to run as root, and there is no `postgres` system user to run it "
                           "as; install Debian's postgresql package (it creates the user: apt-get install "
                           "postgresql) or create it: useradd --system --home-dir /var/lib/postgresql postgres") from None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is needed to run PostgreSQL as the postgres user; "
                                "apt-get install util-linux")
    return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"], user


class LocalPostgres:
    """A PostgreSQL server in folder ``root`` (empty or missing; it must be reachable by the ``postgres``
    user when this process is root: e.g. a folder made in /tmp, not under a 0700 parent): database cluster
    ``root/data``, log ``root/postgres.log``, superuser ``postgres`` with a random password, 127.0.0.1 only.
    """

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root).resolve()
        self.port = port or free_ports(1)[0]
        self.password = secrets.token_urlsafe(16)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen | None = None

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3)."""
        return f"postgresql+psycopg://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def _tail(self, path: Path) -> str:
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no output)"

    def start(self, timeout_s: float = 60.0) -> None:
        """``initdb`` the cluster and start the server (own session), returning once it takes connections."""
        prefix, user = _run_as()
        bindir = server_programs()
        self.root.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        pwfile.chmod(0o600)
        init_log = self.root / "initdb.log"
        try:
            with open(init_log, "wb") as out:
                done = subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                                       "-E", "UTF8", "--locale=C", "--auth-local=peer", "--auth-host=scram-sha-256",
                                       f"--pwfile={pwfile}"], cwd=self.root, stdout=out, stderr=subprocess.STDOUT)
        finally:
            pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {done.returncode}) in {self.data}:\n{self._tail(init_log)}")
        settings = {"listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": "",
                    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        args = [a for key, value in settings.items() for a in ("-c", f"{key}={value}")]
        self.proc = subprocess.Popen([*prefix, str(bindir / "postgres"), "-D", str(self.data), *args],
                                     cwd=self.root, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}) while starting; its log "
                                   f"{self.log}:\n{self._tail(self.log)}")
            try:
                psycopg.connect(libpq_url(self.url()), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"PostgreSQL took no connection on 127.0.0.1:{self.port} within "
                                       f"{timeout_s:g} s; its log {self.log}:\n{self._tail(self.log)}") from None
                time.sleep(0.2)

    def create_database(self, name: str) -> str:
        """Create database ``name`` (a plain identifier); returns its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(libpq_url(self.url()), autocommit=True) as con:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Fast shutdown (SIGINT: clients are disconnected, a clean checkpoint is written); the postmaster
        exits after all its processes. SIGKILL to its session if it has not within ``timeout_s``, then raise
        ``TimeoutError``. Returns its exit code (None when it was not started)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                raise TimeoutError(f"PostgreSQL did not stop within {timeout_s:g} s of SIGINT (killed); its log "
                                   f"{self.log}") from None
        return proc.returncode
