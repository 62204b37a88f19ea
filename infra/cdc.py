"""The database half of the local stack: PostgreSQL and a Kafka Connect worker with Debezium.

* :class:`Postgres` runs the machine's PostgreSQL (Debian's ``postgresql`` package) on a
  private port and data directory (``RAGSTREAM_HOME/postgres``) with logical
  replication on. Debian's ``initdb`` refuses root, so as root the server runs as the
  ``postgres`` user (``setpriv``; the data directory is handed to that user). At each start
  the role ``ragstream`` (LOGIN REPLICATION) and its database ``ragstream`` are ensured:
  the connector connects as that role, and tables it captures must be owned by it.
  Every connection needs a password (``scram-sha-256`` in ``pg_hba.conf``, which each start
  writes): the superuser's and the role ``ragstream``'s are generated at the first start into
  ``<home>/secrets/postgres-superuser.properties`` and ``postgres.properties`` (0600,
  ``ragstream.keyfile``); clients get the role's through ``Settings.resolved_cdc_dsn``.
* :class:`KafkaConnect` runs ``ConnectDistributed`` from Maven Central jars
  (``infra/connect/pom.xml``: Kafka 4.3.1 like the broker) with the Debezium PostgreSQL
  plugin (3.7.0.Final, resolved once and unpacked into ``plugin.path``); its configuration
  is ``connect/worker.properties`` rendered with the settings. Its REST API (127.0.0.1)
  requires HTTP basic auth (``BasicAuthSecurityRestExtension``; the password is generated
  into ``<home>/secrets/connect-rest.properties``), and the connector gets the database
  password as a ``${file:…:password}`` placeholder (``FileConfigProvider``), so the config
  Connect stores and serves holds no password. :func:`connect_request` is the one REST client.

Both are :class:`infra.stack.Service` subclasses: pid file, log file, readiness, ``stack
status``, ``stack down`` as for Kafka and Milvus. ``ragstream connect ...``
(:mod:`ragstream.cli_connect`) drives the connector through the REST API.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from infra.jvm import LOG4J, find_java, jars
from infra.service import Service, ServiceStatus, StackError, pid_alive, port_open, settings_env
from infra.stack import SERVICES, _worker
from ragstream.settings import Settings

CONNECT_POM = Path(__file__).resolve().parent / "connect" / "pom.xml"
CONNECT_DIR = Path(__file__).resolve().parent.parent / "connect"
SAMPLE_DIR = CONNECT_DIR / "sample"
WORKER_TEMPLATE = CONNECT_DIR / "worker.properties"
POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
PG_ROLE = "ragstream"
PG_DATABASE = "ragstream"
BASIC_AUTH_EXTENSION = "org.apache.kafka.connect.rest.basic.auth.extension.BasicAuthSecurityRestExtension"
#: pg_hba.conf as every start writes it: a password (SCRAM) for every connection, TCP on
#: 127.0.0.1 and the Unix socket alike (the server opens no socket, see the command line;
#: the lines are there should one be configured). Anything else matches no line: refused.
PG_HBA = """# Written by ragstream (infra/cdc.py) at each start; edits are overwritten.
# Every connection needs a password (scram-sha-256); docs/security.md.
local   all           all                   scram-sha-256
local   replication   all                   scram-sha-256
host    all           all   127.0.0.1/32    scram-sha-256
host    replication   all   127.0.0.1/32    scram-sha-256
"""


def render(template: Path, values: dict[str, Any]) -> str:
    """Fill ``${name}`` placeholders; a placeholder without a value is an error, not a blank."""
    try:
        return string.Template(template.read_text(encoding="utf-8")).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise StackError(f"{template} uses ${{{exc.args[0]}}}, which has no value",
                         "Fix the template or the code that renders it (infra/cdc.py).") from None


def parse_properties(text: str) -> dict[str, str]:
    """Java-style ``key=value`` lines; ``#`` comments and blank lines skipped (no continuations)."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"line {n}: {line!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------

def postgres_bin() -> Path:
    """The newest installed server's bin folder (Debian puts them under /usr/lib/postgresql/<major>)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise StackError("PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/postgres).",
                         "Run ./dev setup, or apt-get install -y postgresql.")
    return found[-1].parent


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's stored form of ``password`` for ``scram-sha-256`` (RFC 5802/7677, as
    libpq's ``PQencryptPasswordConn`` makes it): what ``ALTER ROLE … PASSWORD`` is given, so
    the password itself never reaches the server (nor a statement log). The generated
    passwords are ASCII, which SASLprep leaves unchanged."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


#: Settings the server and its single-user runs share (a cluster with a logical replication
#: slot refuses to start, even single-user, with a lower wal_level).
PG_SERVER_SETTINGS = ("-c", "password_encryption=scram-sha-256", "-c", "wal_level=logical",
                      "-c", "max_replication_slots=8", "-c", "max_wal_senders=8", "-c", "log_min_messages=warning")


class Postgres(Service):
    """PostgreSQL with ``wal_level=logical`` on loopback; every connection needs a password."""

    name = "postgres"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.postgres_port,)

    @property
    def address(self) -> str:
        return f"postgresql://127.0.0.1:{self.settings.postgres_port}"

    @property
    def data_dir(self) -> Path:
        # A direct child of the home, owned by postgres when we run as root: the home then
        # stays 0711 (others pass through, list nothing; see ragstream.store.private_home).
        return self.home / "postgres"

    @property
    def superuser_password_file(self) -> Path:
        """The ``postgres`` superuser's password (only this class uses it: role and database
        bootstrap, readiness). Next to the role ``ragstream``'s, ``postgres_password_file``."""
        return self.home / "secrets" / "postgres-superuser.properties"

    @property
    def password_file(self) -> Path:
        assert self.settings.postgres_password_file is not None  # the settings default it into the home
        return self.settings.postgres_password_file

    def _as_server_user(self) -> list[str]:
        # initdb and postgres refuse to run as root; setpriv execs (no extra parent
        # process), so the pid we record is the postmaster's own.
        if os.geteuid() != 0:
            return []
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env", "--"]

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            self.data_dir.chmod(0o700)
            return
        import pwd
        import stat

        pw = pwd.getpwnam("postgres")
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        self.data_dir.chmod(0o700)
        home = self.home.stat()
        if home.st_uid == os.geteuid() and stat.S_IMODE(home.st_mode) & 0o077 != 0o011:
            self.home.chmod((stat.S_IMODE(home.st_mode) & 0o700) | 0o011)  # postgres may pass, not list
        reach = subprocess.run([*self._as_server_user(), "test", "-w", str(self.data_dir)], capture_output=True)
        if reach.returncode != 0:
            raise StackError(
                f"the postgres user cannot reach {self.data_dir} (PostgreSQL refuses to run as root, so it runs as "
                "'postgres', which needs to traverse every parent folder).",
                f"Allow it (chmod o+x on the parents of {self.home}) or set RAGSTREAM_HOME to a folder it can reach.",
            )

    def command(self, progress: Callable[[str], None]) -> list[str]:
        if os.geteuid() == 0 and shutil.which("setpriv") is None:
            raise StackError("setpriv (util-linux) is missing; it runs PostgreSQL as the postgres user.",
                             "apt-get install -y util-linux")
        from ragstream.keyfile import ensure_token_file

        bindir = postgres_bin()
        self._prepare_dirs()
        superuser_password = ensure_token_file(self.superuser_password_file, "password")
        ensure_token_file(self.password_file, "password")  # the role's, set by bootstrap()
        if not (self.data_dir / "PG_VERSION").exists():
            progress(f"initialising a PostgreSQL cluster in {self.data_dir} (first start)")
            # The hba initdb writes is replaced below before the server ever starts; the
            # superuser's password is set in single-user mode (no listener) first.
            init = subprocess.run(
                [*self._as_server_user(), str(bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"],
                capture_output=True, text=True, timeout=120)
            if init.returncode != 0:
                raise StackError(f"initdb failed:\n{init.stdout}{init.stderr}",
                                 f"Remove {self.data_dir} if it is left over from another setup, then retry.")
        # At every start, with no server listening (a second or so): a new cluster, a home an
        # older version initialised with trust, a lost password file or an earlier start that
        # failed half-way all end with the superuser's password being the file's.
        self._set_superuser_password_offline(bindir, superuser_password)
        self._write_hba()
        # Settings on the command line, not in postgresql.conf: a port change in the settings
        # needs no file edit. No Unix socket: loopback TCP only, like the other services.
        return [*self._as_server_user(), str(bindir / "postgres"), "-D", str(self.data_dir),
                "-c", f"port={self.settings.postgres_port}", "-c", "listen_addresses=127.0.0.1",
                "-c", "unix_socket_directories=", *PG_SERVER_SETTINGS,
                "-c", "shared_buffers=64MB", "-c", "logging_collector=off"]

    # -- authentication ------------------------------------------------------------------
    @property
    def hba_file(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    def _hba_is_ours(self) -> bool:
        try:
            return self.hba_file.read_text(encoding="utf-8") == PG_HBA
        except OSError:
            return False

    def _write_hba(self) -> None:
        """pg_hba.conf = :data:`PG_HBA`, owned by the server's user, 0600, replaced atomically."""
        tmp = self.data_dir / f".pg_hba.conf.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(PG_HBA)
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        os.replace(tmp, self.hba_file)

    def _set_superuser_password_offline(self, bindir: Path, password: str) -> None:
        """``ALTER ROLE postgres PASSWORD`` in single-user mode: no listener, nothing to race;
        the statement (a SCRAM verifier, not the password) goes through stdin, not argv."""
        try:
            run = subprocess.run(
                [*self._as_server_user(), str(bindir / "postgres"), "--single", "-D", str(self.data_dir),
                 *PG_SERVER_SETTINGS, "postgres"],
                input=f"ALTER ROLE postgres PASSWORD '{scram_verifier(password)}';\n", capture_output=True, text=True,
                timeout=900)  # crash recovery after an unclean stop happens here
        except subprocess.TimeoutExpired:
            raise StackError(f"PostgreSQL's single-user start on {self.data_dir} did not finish within 15 minutes "
                             "(crash recovery of a large cluster?).",
                             "Look at the cluster with `postgres --single -D <data>` by hand, then start again.") from None
        if run.returncode != 0 or "ERROR" in run.stdout + run.stderr:
            raise StackError(f"setting the PostgreSQL superuser's password failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}",
                             f"Is another server running on {self.data_dir}? Stop it (`ragstream stack down -s postgres`).")

    def superuser_password(self) -> str:
        from ragstream.keyfile import read_token_file

        password = read_token_file(self.superuser_password_file, "password")
        if password is None:
            raise StackError(f"no PostgreSQL superuser password in {self.superuser_password_file}",
                             "Start PostgreSQL with `ragstream stack up -s postgres` (it generates it).")
        return password

    def dsn(self, dbname: str = "postgres") -> str:
        """The superuser's libpq URI, password included (a secret: connect with it, never print it)."""
        from urllib.parse import quote

        return (f"postgresql://postgres:{quote(self.superuser_password(), safe='')}@127.0.0.1:"
                f"{self.settings.postgres_port}/{dbname}")

    def ready(self) -> bool:
        if not port_open(self.settings.postgres_port):
            return False
        import psycopg

        try:
            with psycopg.connect(self.dsn(), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, StackError, RuntimeError):  # not up, or no password to try yet
            return False
        return True

    def start(self, progress: Callable[[str], None] = lambda _m: None) -> bool:
        from ragstream.keyfile import ensure_token_file

        if self.pid() is not None:  # already running: make sure both passwords exist for bootstrap()
            if not self.superuser_password_file.exists() and self._hba_is_ours():
                raise StackError(f"PostgreSQL runs and requires a superuser password, but "
                                 f"{self.superuser_password_file} is gone, so it cannot be bootstrapped.",
                                 "Stop it (`ragstream stack down -s postgres`) and start it again: the start "
                                 "sets a new password while no server listens.")
            ensure_token_file(self.superuser_password_file, "password")
            ensure_token_file(self.password_file, "password")
        started = super().start(progress)
        self.bootstrap()
        if not self._hba_is_ours():
            # A server an older version started with trust authentication, still running:
            # bootstrap() got in without a password and set both; now require them.
            progress("postgres: requiring passwords on a server started with trust authentication (older version)")
            self._write_hba()
            pid = self.pid()
            if pid is not None:
                os.kill(pid, signal.SIGHUP)  # the postmaster rereads pg_hba.conf
        return started

    def bootstrap(self) -> None:
        """The connector's role (with its password) and database, idempotently. Passwords
        are sent as SCRAM verifiers: the server never sees them."""
        import psycopg
        from psycopg import sql

        from ragstream.keyfile import read_token_file

        password = read_token_file(self.password_file, "password")
        assert password is not None  # command() or start() created it
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PG_ROLE,)).fetchone() is None:
                conn.execute(f"CREATE ROLE {PG_ROLE} LOGIN REPLICATION")
            for role, secret in ((PG_ROLE, password), ("postgres", self.superuser_password())):
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(scram_verifier(secret))))
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {PG_DATABASE} OWNER {PG_ROLE}")

    def stop(self, timeout: float = 30.0) -> bool:
        # SIGINT to the postmaster is PostgreSQL's "fast" shutdown: sessions (Debezium's
        # walsender included) are ended and a checkpoint written. The base class would
        # signal the whole group, hitting every backend directly.
        pid = self.pid()
        if pid is not None and timeout > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        return super().stop(timeout=0 if pid is None or not pid_alive(pid) else timeout) or pid is not None


def drop_slot(dsn: str, slot: str, publication: str | None = None, timeout: float = 30.0) -> bool:
    """Drop a logical replication slot (and publication) once no walsender holds it.

    Deleting a connector leaves its slot: PostgreSQL then keeps WAL for it forever.
    True if the slot existed.
    """
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        if publication:
            conn.execute(f'DROP PUBLICATION IF EXISTS "{publication}"')
        while True:
            row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            if row is None:
                return False
            if row[0] is None:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return True
            if time.monotonic() > deadline:
                # The connector is gone but its walsender lingers: end it.
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            time.sleep(0.5)


# --------------------------------------------------------------------------------------
# Kafka Connect
# --------------------------------------------------------------------------------------

def debezium_plugin(settings: Settings, progress: Callable[[str], None] = lambda _m: None) -> Path:
    """The folder for ``plugin.path``: the Debezium archive resolved once and unpacked."""
    archive_dir = jars(settings, "debezium", progress, pom=CONNECT_POM)
    plugins = archive_dir / "plugins"
    if (plugins / ".unpacked").exists():
        return plugins
    archives = list(archive_dir.glob("debezium-connector-postgres-*-plugin.tar.gz"))
    if not archives:
        raise StackError(f"no Debezium plugin archive in {archive_dir}",
                         f"Remove {archive_dir} and run `ragstream stack up -s connect` again.")
    shutil.rmtree(plugins, ignore_errors=True)
    plugins.mkdir()
    with tarfile.open(archives[0]) as tar:
        tar.extractall(plugins, filter="data")
    (plugins / ".unpacked").write_text(archives[0].name)
    return plugins


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Connect never redirects; urllib would follow one with the Authorization header, to any host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # the 3xx comes back as an HTTPError: its status is returned, nothing is followed


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


def connect_request(settings: Settings, method: str, path: str, body: Any = None,
                    timeout: float = 30, *, base: str | None = None, credentials: bool = True) -> tuple[int, Any]:
    """One call to the Connect REST API: (status, decoded JSON or None).

    The project's one Connect REST client: it sends the credentials of
    ``Settings.connect_credentials`` (HTTP basic auth; the local worker's generated ones)
    unless ``credentials`` is False (a probe for a worker that needs none). ``base``: another
    URL than ``resolved_connect_url`` (the local worker's own, for its readiness)."""
    url = (base or settings.resolved_connect_url) + path
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    auth = settings.connect_credentials if credentials else None
    if auth is not None:
        user, password = auth
        token = base64.b64encode(f"{user}:{password.get_secret_value()}".encode("utf-8")).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _NO_REDIRECTS.open(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except ValueError:
            return exc.code, {"message": raw.decode(errors="replace")}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StackError(f"Kafka Connect does not answer at {base or settings.resolved_connect_url}: {reason}",
                         "Start it with `ragstream stack up -s kafka -s connect` (or set RAGSTREAM_CONNECT_URL); "
                         "see `ragstream stack status -s connect` and its log.") from None


class KafkaConnect(Service):
    """A Kafka Connect worker (distributed mode, one node) with the Debezium PostgreSQL plugin."""

    name = "connect"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.connect_port,)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.connect_port}"

    @property
    def jaas_file(self) -> Path:
        return self.home / "connect" / "jaas.conf"

    @property
    def credentials_file(self) -> Path:
        assert self.settings.connect_credentials_file is not None  # the settings default it into the home
        return self.settings.connect_credentials_file

    def properties(self, plugin_path: Path) -> str:
        s = self.settings
        from ragstream.kafka import CONNECT, java_client_properties, properties_text

        security = properties_text(java_client_properties(s.model_copy(update={"kafka_principal": CONNECT})),
                                   prefixes=("", "producer.", "consumer.", "admin."))
        assert s.postgres_password_file is not None
        local = (
            "\n# The local worker's REST API asks for HTTP basic auth (infra/cdc.py, docs/security.md): the\n"
            f"# JAAS login context KafkaConnect (-Djava.security.auth.login.config={self.jaas_file}) checks\n"
            f"# the user and password in {self.credentials_file}.\n"
            f"rest.extension.classes={BASIC_AUTH_EXTENSION}\n"
            "# Secrets reach connectors as ${file:<path>:<key>} placeholders, resolved by the worker when\n"
            "# it starts a task: the config Connect stores (connect.configs) and serves holds no password.\n"
            "# Only the database password's file may be read this way.\n"
            "config.providers=file\n"
            "config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider\n"
            f"config.providers.file.param.allowed.paths={s.postgres_password_file}\n")
        return render(WORKER_TEMPLATE, {"kafka_bootstrap": s.kafka_bootstrap, "replication_factor": s.replication_factor,
                                        "connect_port": s.connect_port, "plugin_path": plugin_path}) + local + security

    def _write_private(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o600)

    def command(self, progress: Callable[[str], None]) -> list[str]:
        first = self.settings.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        if not port_open(int(port), host or "127.0.0.1", timeout=2):
            raise StackError(f"Kafka Connect needs the broker, and {first} does not answer.",
                             "Start it first: `ragstream stack up -s kafka -s connect`.")
        java = find_java(self.settings)
        classpath = f"{jars(self.settings, 'worker', progress, pom=CONNECT_POM)}/*"
        plugins = debezium_plugin(self.settings, progress)
        from ragstream.keyfile import ensure_token_file

        # The REST API's user and password (generated at the first start), and the JAAS
        # configuration naming that file (the extension reads the login context KafkaConnect).
        ensure_token_file(self.credentials_file, self.settings.connect_username)
        # The file config provider's allowed path must exist when the worker starts (Kafka
        # refuses a missing one): a Connect started before PostgreSQL ever ran needs it too.
        assert self.settings.postgres_password_file is not None
        ensure_token_file(self.settings.postgres_password_file, "password")
        self._write_private(self.jaas_file, "KafkaConnect {\n"
                            "  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule required\n"
                            f"  file=\"{self.credentials_file}\";\n}};\n")
        conf = self.home / "connect" / "worker.properties"
        self._write_private(conf, self.properties(plugins))  # it may hold Connect's Kafka password
        jvm = [java, "-Xms128m", f"-Xmx{self.settings.connect_heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=50",
               "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J}",
               f"-Djava.security.auth.login.config={self.jaas_file}",
               f"-Dragstream.home={self.home}",  # lets `pid()` recognise our process by its cmdline
               "-cp", classpath, "org.apache.kafka.connect.cli.ConnectDistributed", str(conf)]
        # The JVM runs under a small Python parent that also restarts failed connector tasks
        # (TaskRecovery, below): it lives exactly as long as the worker it watches.
        return [sys.executable, "-m", "infra.cdc", "connect-worker", "--", *jvm]

    def environment(self) -> dict[str, str]:
        # The wrapper reads its settings (retry budget, backoff, Connect URL) from these;
        # its own log lines are JSON among Connect's in the service log.
        return {**settings_env(self.settings), "RAGSTREAM_LOG_FORMAT": "json"}

    def jvm_pid(self) -> int | None:
        """The worker JVM (the child of the recovery wrapper whose pid the pid file holds)."""
        pid = self.pid()
        if pid is None:
            return None
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def status(self) -> ServiceStatus:
        st = super().status()
        jvm = self.jvm_pid() if st.running else None
        if jvm is not None:  # the memory that matters is the JVM's, not the wrapper's
            st.child_pid = jvm
            with contextlib.suppress(OSError, ValueError, IndexError):
                st.rss = int(Path(f"/proc/{jvm}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return st

    def ready(self) -> bool:
        if not port_open(self.settings.connect_port):
            return False
        try:
            code, plugins = connect_request(self.settings, "GET", "/connector-plugins", timeout=3, base=self.address)
        except StackError:
            return False
        return code == 200 and isinstance(plugins, list) and any(p.get("class") == POSTGRES_CONNECTOR for p in plugins)

    def open_to_anyone(self) -> bool:
        """The REST API answers a request without credentials (a worker an older version started)."""
        try:
            code, _ = connect_request(self.settings, "GET", "/connectors", timeout=3, base=self.address,
                                      credentials=False)
        except StackError:
            return False
        return code < 300

    def start(self, progress: Callable[[str], None] = lambda _m: None) -> bool:
        if self.pid() is not None and port_open(self.settings.connect_port) and self.open_to_anyone():
            progress("connect: replacing a worker whose REST API needs no credentials (started by an older version)")
            self.stop()
        return super().start(progress)


NormalizeWorker = _worker("normalize")

CDC_SERVICES: dict[str, type[Service]] = {"postgres": Postgres, "connect": KafkaConnect,
                                          "worker-normalize": NormalizeWorker}
SERVICES.update(CDC_SERVICES)


# --------------------------------------------------------------------------------------
# The Debezium connector (driven by `ragstream connect ...`)
# --------------------------------------------------------------------------------------

CONNECTOR_TEMPLATE = CONNECT_DIR / "debezium-postgres.properties"
CONNECTOR_NAME = "ragstream-postgres"


def _regex(table: str) -> str:
    return table.replace(".", r"\.")  # Debezium's include lists are regular expressions


def connector_config(settings: Settings, mapping: Any) -> dict[str, str]:
    """connect/debezium-postgres.properties rendered for these settings and this mapping."""
    from psycopg.conninfo import conninfo_to_dict

    from schemas.topics import DAY_MS

    try:
        db = conninfo_to_dict(settings.resolved_cdc_dsn)
    except Exception as exc:  # noqa: BLE001 - psycopg raises ProgrammingError for a bad URI
        raise StackError(f"RAGSTREAM_CDC_DSN is not a PostgreSQL URI: {exc}",
                         "Write it as postgresql://user[:password]@host:port/dbname.") from None
    tables = mapping.captured()
    if settings.cdc_dsn is None:
        # The local database: Debezium reads the password from the file when its task
        # starts (FileConfigProvider); Connect stores and serves only this placeholder.
        assert settings.postgres_password_file is not None
        password = f"${{file:{settings.postgres_password_file}:password}}"
    else:  # a database you run: as its DSN says (a password there is in the config as given)
        password = db.get("password", "")
    values = {
        "db_host": db.get("host", "127.0.0.1"), "db_port": db.get("port", 5432), "db_user": db.get("user", PG_ROLE),
        "db_password": password, "db_name": db.get("dbname", PG_DATABASE),
        "tables": ",".join(_regex(t) for t in tables),
        "replica_identity": ",".join(f"{_regex(t)}:FULL" for t in tables),
        "partitions": settings.partitions, "replication_factor": settings.replication_factor,
        "raw_retention_ms": int(settings.raw_retention_days * DAY_MS),
    }
    config = parse_properties(render(CONNECTOR_TEMPLATE, values))
    if config.get("topic.prefix") != mapping.topic_prefix:
        raise StackError(f"the mapping's topic_prefix {mapping.topic_prefix!r} differs from the connector's "
                         f"topic.prefix {config.get('topic.prefix')!r}",
                         "Make them the same (the normalize stage reads <topic_prefix>.<schema>.<table>).")
    return {k: v for k, v in config.items() if v != ""}


def ensure_change_topics(settings: Settings, mapping: Any, config: dict[str, str]) -> None:
    """Create the cdc.* topics before the connector and the normalize worker use them, with
    the connector's topic.creation settings: a join table with no rows yet has no topic
    otherwise, and the normalize worker would subscribe to nothing there."""
    from ragstream.admin import ensure_topics
    from schemas.topics import TopicSpec

    specs = tuple(TopicSpec(t, int(config["topic.creation.default.partitions"]),
                            {"cleanup.policy": config["topic.creation.default.cleanup.policy"],
                             "retention.ms": config["topic.creation.default.retention.ms"]},
                            None, "Debezium change records (raw source rows)", key="primary key",
                            replication_factor=int(config["topic.creation.default.replication.factor"]))
                  for t in mapping.topics())
    ensure_topics(settings, specs)


def _check(status: int, body: Any, what: str) -> Any:
    if status >= 300:
        message = body.get("message") if isinstance(body, dict) else body
        raise StackError(f"Kafka Connect refused to {what} (HTTP {status}): {message}",
                         "Read the message above and the worker log (`ragstream stack status -s connect`).")
    return body


def apply_connector(settings: Settings, mapping: Any) -> str:
    """Create or update the connector so its config is exactly ours: 'created', 'updated' or 'unchanged'."""
    wanted = connector_config(settings, mapping)
    ensure_change_topics(settings, mapping, wanted)
    status, current = connect_request(settings, "GET", f"/connectors/{CONNECTOR_NAME}/config")
    if status == 200 and {k: v for k, v in current.items() if k != "name"} == wanted:
        return "unchanged"
    if status not in (200, 404):
        _check(status, current, "read the connector's config")
    _check(*connect_request(settings, "PUT", f"/connectors/{CONNECTOR_NAME}/config", wanted), "apply the config")
    return "updated" if status == 200 else "created"


def connector_status(settings: Settings) -> dict[str, Any] | None:
    status, body = connect_request(settings, "GET", f"/connectors/{CONNECTOR_NAME}/status")
    if status == 404:
        return None
    return _check(status, body, "report the connector's status")


def running(status: dict[str, Any] | None) -> bool:
    return bool(status) and status["connector"]["state"] == "RUNNING" and bool(status["tasks"]) and all(
        t["state"] == "RUNNING" for t in status["tasks"])


def wait_running(settings: Settings, timeout: float = 60, fail_fast: bool = True) -> dict[str, Any] | None:
    """Poll until the connector and every task run, or time is up; with ``fail_fast`` also
    stop at a FAILED task (not right after a restart: the old FAILED state lingers a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        st = connector_status(settings)
        failed = bool(st) and any(t["state"] == "FAILED" for t in st["tasks"])
        if running(st) or (fail_fast and failed) or time.monotonic() > deadline:
            return st
        time.sleep(0.5)


def restart_connector(settings: Settings) -> None:
    status, body = connect_request(settings, "POST", f"/connectors/{CONNECTOR_NAME}/restart?includeTasks=true")
    if status == 404:
        raise StackError(f"there is no connector {CONNECTOR_NAME} to restart", "Create it with `ragstream connect apply`.")
    _check(status, body, "restart the connector")


def delete_connector(settings: Settings, drop: bool = True) -> tuple[bool, bool]:
    """Delete the connector, then (``drop``) its replication slot and publication.

    Returns (connector existed, slot existed)."""
    status, body = connect_request(settings, "DELETE", f"/connectors/{CONNECTOR_NAME}")
    if status not in (204, 404):
        _check(status, body, "delete the connector")
    if not drop:
        return status == 204, False
    config = parse_properties(CONNECTOR_TEMPLATE.read_text(encoding="utf-8").replace("${", "{"))
    return status == 204, drop_slot(settings.resolved_cdc_dsn, config["slot.name"], config["publication.name"])


def slot_lag(settings: Settings) -> dict[str, Any] | None:
    """The connector's replication slot: active or not, and how much WAL it holds back."""
    import psycopg

    slot = parse_properties(CONNECTOR_TEMPLATE.read_text(encoding="utf-8").replace("${", "{"))["slot.name"]
    try:
        with psycopg.connect(settings.resolved_cdc_dsn, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                "FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    except psycopg.Error:
        return None
    return None if row is None else {"slot": slot, "active": row[0], "retained_wal_bytes": row[1]}


def load_sample(settings: Settings) -> str:
    """Create and fill the sample tables (connect/sample/schema.sql) as the connector's role,
    unless they exist: says which."""
    import psycopg

    with psycopg.connect(settings.resolved_cdc_dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('public.articles')").fetchone()[0] is not None:
            return "tables already there"
        conn.execute((SAMPLE_DIR / "schema.sql").read_text(encoding="utf-8"))
        n = conn.execute("SELECT (SELECT count(*) FROM articles) + (SELECT count(*) FROM tickets)").fetchone()[0]
    return f"loaded {n} rows (connect/sample/schema.sql)"


# --------------------------------------------------------------------------------------
# Automatic recovery: failed connector tasks restarted within a retry budget
# --------------------------------------------------------------------------------------

#: The watcher's metrics, in a registry of their own: infra.cdc is imported by every CLI
#: process, and only the watcher's process may export them. The local worker's watcher
#: writes them to <home>/metrics/connect.prom (node exporter textfile format) after each
#: change; `ragstream connect watch --metrics-port` also serves them.
WATCH_REGISTRY = CollectorRegistry(auto_describe=True)
TASK_RESTARTS = Counter(
    "ragstream_connect_task_restarts", "Failed Kafka Connect connector tasks restarted automatically.",
    ["connector"], registry=WATCH_REGISTRY)
RESTART_BUDGET_SPENT = Gauge(
    "ragstream_connect_restart_budget_exhausted",
    "1 while automatic restarts of a connector's failed tasks have stopped: the retry budget is spent.",
    ["connector"], registry=WATCH_REGISTRY)


def recovery_state_path(settings: Settings) -> Path:
    return settings.home / "run" / "connect-recovery.json"


def read_recovery_state(settings: Settings) -> dict[str, Any] | None:
    """What the watcher last wrote, with ``watching`` = its process still runs."""
    try:
        state = json.loads(recovery_state_path(settings).read_text())
    except (OSError, ValueError):
        return None
    state["watching"] = bool(state.get("pid")) and pid_alive(int(state["pid"]))
    return state


def failure_reason(trace: str | None) -> tuple[str, str | None]:
    """A failed task's trace → (its first line, its last ``Caused by:`` line)."""
    lines = (trace or "").strip().splitlines()
    first = lines[0][:400] if lines else "(no trace)"
    causes = [ln for ln in lines if ln.startswith("Caused by:")]
    return first, causes[-1][:400] if causes else None


class TaskRecovery:
    """Watches a connector through the Connect REST API and restarts what failed.

    Kafka Connect never restarts a FAILED task itself, and Debezium's own reconnects do not
    cover a task whose *start* failed (PostgreSQL still shutting down when it reconnected,
    docs/cdc.md). Every ``interval_s`` this reads the connector's status; when the connector
    or a task is FAILED it asks Connect to restart only what failed
    (``POST /connectors/<name>/restart?includeTasks=true&onlyFailed=true``), which resumes
    from the replication slot. The restarts are bounded by a
    :class:`~ragstream.failures.RetryBudget` (``RAGSTREAM_RETRY_BUDGET_S``, backoff from
    ``RAGSTREAM_RESTART_BACKOFF_S`` doubling to ``RAGSTREAM_RESTART_BACKOFF_MAX_S``); the
    budget is renewed once the connector has run for ``RAGSTREAM_RESTART_RESET_AFTER_S``.
    A spent budget stops the restarts and says so: an ERROR log line, the state file that
    ``ragstream connect status`` prints, the gauge ``ragstream_connect_restart_budget_exhausted``.
    After the operator's ``ragstream connect restart`` (or anything else that makes it run),
    automatic restarts resume with a fresh budget.

    Every failure gets the same treatment: a task's trace is Java text, not an error
    :func:`ragstream.failures.classify` can read, and a permanent cause (a revoked
    permission, a dropped publication) fails each restart within seconds, so the budget is
    what tells the two apart. Connect not answering is not a task failure: it spends no
    budget (the worker's own supervision is the service's business).
    """

    def __init__(self, settings: Settings, connector: str = CONNECTOR_NAME, *, interval_s: float = 5.0,
                 request: Callable[..., tuple[int, Any]] | None = None, clock: Callable[[], float] = time.monotonic,
                 state_path: Path | None = None, textfile: Path | None = None) -> None:
        from ragstream.logging import get_logger

        self.settings, self.connector, self.interval_s = settings, connector, interval_s
        self._request = request or (lambda method, path: connect_request(settings, method, path, timeout=10))
        self._clock = clock
        self.state_path = state_path if state_path is not None else recovery_state_path(settings)
        self.textfile = textfile
        self.log = get_logger("infra.cdc.recovery")
        self.budget = self._new_budget()
        self.restarts = 0
        self.exhausted = False
        self.last: dict[str, Any] | None = None
        self._running_since: float | None = None
        self._unreachable = self._answered = self._refused = False
        self.restarts_metric = TASK_RESTARTS.labels(connector)
        self.spent_metric = RESTART_BUDGET_SPENT.labels(connector)
        self.spent_metric.set(0)
        self._save()

    def _new_budget(self):  # -> RetryBudget
        from ragstream.failures import RetryBudget

        s = self.settings
        return RetryBudget(s.retry_budget_s, first_delay_s=s.restart_backoff_s, max_delay_s=s.restart_backoff_max_s,
                           clock=self._clock)

    # -- one look ------------------------------------------------------------------------
    def check(self) -> float:
        """Look at the connector once, restart what failed if the budget allows; returns how
        long to wait before looking again."""
        try:
            code, st = self._request("GET", f"/connectors/{self.connector}/status")
        except StackError as exc:
            if not self._unreachable and self._answered:  # not while the worker is still starting
                self.log.warning("Kafka Connect does not answer; watching on", connector=self.connector,
                                 error=exc.problem)
            self._unreachable = True
            return self.interval_s
        self._unreachable, self._answered = False, True
        if code in (401, 403):
            if not self._refused:  # once: wrong credentials do not fix themselves, nor fill the log
                self.log.error("Kafka Connect refuses the watcher's credentials; no task is restarted until "
                               "they are right (RAGSTREAM_CONNECT_USERNAME/_PASSWORD, or the local worker's "
                               "<home>/secrets/connect-rest.properties)", connector=self.connector, status=code)
            self._refused = True
            return self.interval_s
        self._refused = False
        if code == 404 or not isinstance(st, dict) or code >= 300:
            return self.interval_s  # not created (yet), or deleted
        failed = [t for t in st.get("tasks", []) if t.get("state") == "FAILED"]
        connector_failed = st.get("connector", {}).get("state") == "FAILED"
        if not failed and not connector_failed:
            if running(st):
                self._ran()
            else:
                self._running_since = None  # starting, restarting, paused, unassigned
            return self.interval_s
        self._running_since = None
        if self.exhausted:
            return self.interval_s  # said loudly once; the state file keeps saying it
        where = f"task {failed[0]['id']}" if failed else "connector"
        reason, cause = failure_reason((failed[0] if failed else st["connector"]).get("trace"))
        if not self.budget.spend():
            self._give_up(where, reason, cause)
            return self.interval_s
        delay = self.budget.next_delay()
        code, body = self._request("POST", f"/connectors/{self.connector}/restart?includeTasks=true&onlyFailed=true")
        ok = code < 300
        self.restarts += ok
        if ok:
            self.restarts_metric.inc()
        self.last = {"at": time.time(), "what": where, "reason": reason, "cause": cause, "accepted": ok,
                     **({} if ok else {"refused": f"HTTP {code}: {(body or {}).get('message') if isinstance(body, dict) else body}"})}
        (self.log.warning if ok else self.log.error)(
            "restarting a failed Kafka Connect task" if ok else "Kafka Connect refused to restart a failed task",
            connector=self.connector, what=where, reason=reason, cause=cause, attempt=self.budget.attempts,
            restarts=self.restarts, next_check_s=max(self.interval_s, delay),
            budget_left_s=round(max(self.budget.budget_s - self.budget.elapsed_s, 0), 1),
            **({} if ok else {"http_status": code}))
        self._save()
        return max(self.interval_s, delay)

    def _ran(self) -> None:
        now = self._clock()
        if self._running_since is None:
            self._running_since = now
        if self.exhausted:
            self.log.warning("connector running again: automatic restarts resume with a fresh budget",
                             connector=self.connector)
            self.exhausted = False
            self.spent_metric.set(0)
            self.budget = self._new_budget()
            self._save()
        elif self.budget.attempts and now - self._running_since >= self.settings.restart_reset_after_s:
            self.budget = self._new_budget()  # stable again: the next failure gets the whole budget
            self._save()

    def _give_up(self, where: str, reason: str, cause: str | None) -> None:
        self.exhausted = True
        self.spent_metric.set(1)
        self.last = {**(self.last or {}), "gave_up_at": time.time(), "what": where, "reason": reason, "cause": cause}
        self.log.error(
            "AUTOMATIC RESTARTS STOPPED: the connector keeps failing and the retry budget is spent",
            connector=self.connector, what=where, reason=reason, cause=cause, attempts=self.budget.attempts,
            elapsed_s=round(self.budget.elapsed_s, 1), budget_s=self.budget.budget_s,
            hint="fix the cause (see the reason and the Connect log), then `ragstream connect restart`")
        self._save()

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set. An unexpected error in one look is logged and the loop goes
        on (the thread must outlive anything one status document can do to it)."""
        self.log.info("watching the connector for failed tasks", connector=self.connector,
                      url=self.settings.resolved_connect_url, interval_s=self.interval_s,
                      budget_s=self.settings.retry_budget_s)
        while not stop.is_set():
            try:
                wait = self.check()
            except Exception as exc:  # noqa: BLE001 - see the docstring
                from ragstream.failures import reason

                self.log.error("connector watch failed; retrying", connector=self.connector, error=reason(exc))
                wait = self.interval_s
            stop.wait(wait)

    def state(self) -> dict[str, Any]:
        return {"connector": self.connector, "pid": os.getpid(), "restarts": self.restarts,
                "exhausted": self.exhausted, "last": self.last, "budget_s": self.budget.budget_s,
                "attempts": self.budget.attempts, "elapsed_s": round(self.budget.elapsed_s, 1),
                "updated_at": time.time()}

    def _save(self) -> None:
        path = self.state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state(), indent=1, sort_keys=True))
        os.replace(tmp, path)
        if self.textfile is not None:
            from prometheus_client import write_to_textfile

            self.textfile.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(self.textfile), WATCH_REGISTRY)


def describe_recovery(state: dict[str, Any] | None) -> list[str]:
    """Lines for `ragstream connect status`: what automatic recovery is doing."""
    if state is None or not state.get("watching"):
        return ["automatic restarts: OFF (no watcher runs: the local Connect worker runs one; for another "
                "Connect cluster run `ragstream connect watch`)"]
    last = state.get("last") or {}
    if state.get("exhausted"):
        return [f"AUTOMATIC RESTARTS STOPPED: {last.get('what', 'a task')} failed {state.get('attempts')} time(s) in "
                f"{state.get('elapsed_s', 0):.0f} s and the retry budget ({state.get('budget_s', 0):.0f} s, "
                "RAGSTREAM_RETRY_BUDGET_S) is spent",
                f"  last failure: {last.get('reason')}" + (f" / {last['cause']}" if last.get("cause") else ""),
                "  → fix the cause, then `ragstream connect restart` (automatic restarts then resume)"]
    lines = [f"automatic restarts: on (watcher pid {state.get('pid')}), {state.get('restarts', 0)} so far"]
    if last.get("at"):
        lines.append(f"  last: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last['at']))} "
                     f"{last.get('what')}: {last.get('reason')}")
    return lines


def run_connect_worker(command: list[str]) -> int:
    """The local Connect worker's parent process: run the JVM, watch its connector in a
    thread (:class:`TaskRecovery`), forward stop signals, exit with the JVM's status."""
    from infra.supervise import _die_with_parent
    from ragstream.logging import configure_logging
    from ragstream.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    child = subprocess.Popen(command, preexec_fn=_die_with_parent)  # noqa: PLW1509 - prctl only
    stop = threading.Event()

    def forward(signum: int, _frame: Any) -> None:
        stop.set()
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    recovery = TaskRecovery(settings, textfile=settings.home / "metrics" / "connect.prom")
    threading.Thread(target=recovery.run, args=(stop,), name="connect-task-recovery", daemon=True).start()
    code = child.wait()
    stop.set()
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:2] != ["connect-worker", "--"] or len(args) < 3:
        print("usage: python -m infra.cdc connect-worker -- <the Connect worker's java command>", file=sys.stderr)
        return 2
    return run_connect_worker(args[2:])


if __name__ == "__main__":
    # Run the module's real copy (infra.stack imports it too), not this __main__ one.
    from infra.cdc import main as _main

    sys.exit(_main())
