"""The local stack: a real Kafka broker (KRaft, one node) and a milvus-lite server.

No Docker engine runs on the machines ragstream is developed on, so the stack is plain
processes: the broker runs from jars that Maven resolves from Central (cached under
``RAGSTREAM_CACHE_DIR/jars``), milvus-lite from its PyPI package. Each service

* keeps its data under ``RAGSTREAM_HOME/<service>``, its log in ``RAGSTREAM_HOME/logs``
  and its pid in ``RAGSTREAM_HOME/run``;
* listens on loopback only;
* runs in its own process session, so ``down`` stops it and everything it spawned.

``up`` is idempotent: a service that already answers is left alone. Every failure raises
:class:`StackError`, whose message says what went wrong and what to do.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ragstream.settings import Settings, load_settings
from streams.registry import PIPELINE

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J = KAFKA_DIR / "log4j2.properties"
TOOLS_LOG4J = KAFKA_DIR / "tools-log4j2.properties"
MIN_JAVA = 17
DEPENDENCY_PLUGIN = "3.8.1"  # keep in step with infra/kafka/pom.xml

_NETWORK_ERRORS = re.compile(
    r"Could not transfer|Connection refused|UnknownHost|Unknown host|Connect to .* failed|"
    r"Network is unreachable|timed out|Could not resolve|No route to host|Remote host terminated",
    re.IGNORECASE,
)


class StackError(RuntimeError):
    """The stack could not do what was asked; ``hint`` says what to do about it."""

    def __init__(self, problem: str, hint: str) -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}\n  → {hint}")


# --------------------------------------------------------------------------------------
# Tools: Java and the jar cache
# --------------------------------------------------------------------------------------

def find_java(settings: Settings) -> str:
    java = shutil.which(settings.java)
    if java is None:
        raise StackError(
            f"Java was not found (RAGSTREAM_JAVA={settings.java!r}); the Kafka broker needs Java {MIN_JAVA}+.",
            "Install it (apt-get install -y openjdk-17-jre-headless) or point RAGSTREAM_JAVA at a java executable.",
        )
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{java} -version failed: {exc}", "Check the Java installation or RAGSTREAM_JAVA.") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(
            f"{java} is Java {major or 'of unknown version'}; Kafka 4 needs Java {MIN_JAVA} or newer.",
            "Install openjdk-17-jre-headless or point RAGSTREAM_JAVA at a newer java.",
        )
    return java


def jars(settings: Settings, profile: str = "broker", progress: Callable[[str], None] = lambda _m: None,
         pom: Path = POM) -> Path:
    """Return a folder holding every jar of ``profile`` of ``pom`` (default infra/kafka/pom.xml), resolving once.

    The folder name carries a hash of the POM, so editing the POM resolves afresh.
    """
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    target = settings.cache_dir / "jars" / f"{profile}-{digest}"
    if (target / ".complete").exists():
        return target
    mvn = shutil.which(settings.mvn)
    if mvn is None:
        raise StackError(
            f"Maven was not found (RAGSTREAM_MVN={settings.mvn!r}); it resolves the Kafka jars from Maven Central.",
            "Install it (apt-get install -y maven) or point RAGSTREAM_MVN at an mvn executable.",
        )
    progress(f"resolving {profile} jars from Maven Central (once; cached in {target.parent})")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    # Full plugin coordinates: with a prefix, an unreachable repository shows up as
    # "No plugin found for prefix" instead of the network error it is.
    cmd = [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom), f"-P{profile}",
           f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:copy-dependencies",
           f"-DoutputDirectory={staging}"]
    if settings.maven_repo_url:
        mirror = settings.cache_dir / "maven-mirror-settings.xml"
        mirror.parent.mkdir(parents=True, exist_ok=True)
        mirror.write_text(
            "<settings><mirrors><mirror><id>ragstream-mirror</id><mirrorOf>*</mirrorOf>"
            f"<url>{settings.maven_repo_url}</url></mirror></mirrors></settings>\n"
        )
        cmd[1:1] = ["-s", str(mirror)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise StackError("Maven did not finish resolving the Kafka jars within 30 minutes.",
                         "Check the network to Maven Central (or RAGSTREAM_MAVEN_REPO_URL) and retry.") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        tail = "\n".join(output.splitlines()[-8:])
        if _NETWORK_ERRORS.search(output):
            where = settings.maven_repo_url or "Maven Central (https://repo.maven.apache.org)"
            raise StackError(
                f"Maven could not download the {profile} jars from {where}:\n{tail}",
                "Check the network and any proxy in ~/.m2/settings.xml, or set RAGSTREAM_MAVEN_REPO_URL "
                "to a reachable mirror; then run `ragstream stack up` again.",
            )
        raise StackError(f"Maven failed to resolve the {profile} jars:\n{tail}",
                         f"Run the command yourself to see the full output: {' '.join(cmd)}")
    (staging / ".complete").write_text(" ".join(sorted(p.name for p in staging.glob("*.jar"))))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def java_tool(settings: Settings, main_class: str, args: list[str], *, timeout: float = 120,
              profile: str = "broker") -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's Java tools (e.g. ``org.apache.kafka.tools.consumer.ConsoleConsumer``)
    from the same jars as the broker; its stdout is the tool's output, logs go to stderr."""
    cmd = [find_java(settings), "-Xmx256m", f"-Dlog4j2.configurationFile={TOOLS_LOG4J}",
           "-cp", f"{jars(settings, profile)}/*", main_class, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _port_holder(port: int) -> str:
    """Who listens on ``port``, as `ss` tells it (best effort, for error messages)."""
    try:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return " ".join(out.stdout.split())[:200]


def pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap if it was our child, so it is not a zombie
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def rss_bytes(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def free_port() -> int:
    """A bindable port *below* the kernel's ephemeral range.

    A port from bind(0) is ephemeral, and a client that keeps reconnecting to a dead broker
    on such a port can be handed that very port as its source and connect to itself (TCP
    self-connect), so the port looks taken when the broker restarts.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, min(low, 32000))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive free ports below the ephemeral range (workers' metrics)."""
    for _ in range(100):
        base = free_port()
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {n} consecutive free ports")


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    ready: bool
    address: str
    log: Path
    rss: int | None
    #: Supervised services: restarts so far, the child's pid, and ``running``/``backoff``.
    restarts: int | None = None
    child_pid: int | None = None
    phase: str | None = None
    #: What the service's /healthz says: ``ok``, ``degraded`` or ``failed`` (with ``reason``), or None.
    health: str | None = None
    reason: str | None = None
    health_body: dict | None = None

    @property
    def state(self) -> str:
        """One word for people: ready, degraded, restarting, starting/unhealthy or stopped."""
        if not self.running:
            return "stopped"
        if self.phase == "backoff":
            return "restarting"
        if self.health not in (None, "ok"):
            return "failed" if self.health == "failed" else "degraded"  # a worker whose agent crashed says failed
        return "ready" if self.ready else "starting/unhealthy"


class Service:
    """A long-running local process: its command, its readiness check, its files.

    A ``supervised`` service runs under :mod:`infra.supervise`, which restarts it with
    backoff when it exits; the pid file then holds the supervisor's pid, and ``stop``
    stops both (they share a process group).
    """

    name: str = ""
    supervised: bool = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home

    # -- to be provided by each service --------------------------------------------------
    @property
    def ports(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def address(self) -> str:
        raise NotImplementedError

    def command(self, progress: Callable[[str], None]) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None  # inherit

    # -- shared mechanics -----------------------------------------------------------------
    @property
    def pidfile(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    @property
    def supervisor_state_path(self) -> Path:
        return self.home / "run" / f"{self.name}.supervisor.json"

    def supervisor_state(self) -> dict | None:
        """The supervisor's state file while it runs (None for unsupervised or stopped services)."""
        from infra.supervise import read_state

        if not self.supervised or self.pid() is None:
            return None
        return read_state(self.supervisor_state_path)

    def child_pid(self) -> int | None:
        """The pid of the supervised process itself (the one a crash test kills), if it runs."""
        state = self.supervisor_state() or {}
        pid = state.get("child_pid")
        return pid if pid and pid_alive(pid) else None

    def health(self) -> dict | None:
        """The service's own account of its health (a dict with ``status``), or None."""
        return None

    def supervise(self, cmd: list[str]) -> list[str]:
        s = self.settings
        return [sys.executable, "-m", "infra.supervise", "--name", self.name,
                "--state", str(self.supervisor_state_path), "--backoff", str(s.restart_backoff_s),
                "--backoff-max", str(s.restart_backoff_max_s), "--reset-after", str(s.restart_reset_after_s),
                "--", *cmd]

    def pid(self) -> int | None:
        """The pid of *our* running process, or None (stale pid files are ignored)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
        return pid if str(self.home.resolve()) in cmdline else None

    def status(self) -> ServiceStatus:
        pid = self.pid()
        st = ServiceStatus(self.name, pid, pid is not None, pid is not None and self.ready(),
                           self.address, self.logfile, rss_bytes(pid) if pid else None)
        sup = self.supervisor_state() if pid else None
        if sup is not None:
            st.restarts, st.phase = sup.get("restarts", 0), sup.get("phase")
            st.child_pid = self.child_pid()
            if st.child_pid:  # the memory that matters is the worker's, not the supervisor's
                st.rss = rss_bytes(st.child_pid)
        body = self.health() if pid else None
        if body is not None:
            st.health_body = body
            st.health = "ok" if body.get("status") == "ok" else str(body.get("status") or "degraded")
            if st.health != "ok":
                st.reason = _health_reason(body)
        return st

    def start(self, progress: Callable[[str], None] = lambda _m: None) -> bool:
        """Start unless already running; wait until it answers. True if it was started now."""
        pid = self.pid()
        if pid is not None:
            self._wait_ready(pid, fresh=False)  # a supervised one may be between two restarts
            return False
        for port in self.ports:
            # A port can stay busy for a moment after its previous owner crashed.
            deadline = time.monotonic() + 5
            while port_open(port) and time.monotonic() < deadline:
                time.sleep(0.2)
            if port_open(port):
                holder = _port_holder(port)
                raise StackError(
                    f"{self.name} cannot start: port {port} on 127.0.0.1 is already in use by another program"
                    f"{f' ({holder})' if holder else ''}.",
                    f"Stop that program (find it with `ss -ltnp 'sport = :{port}'`) or choose other ports "
                    "(RAGSTREAM_KAFKA_PORT, RAGSTREAM_KAFKA_CONTROLLER_PORT, RAGSTREAM_MILVUS_PORT).",
                )
        cmd = self.command(progress)
        if self.supervised:
            cmd = self.supervise(cmd)
            self.supervisor_state_path.unlink(missing_ok=True)
        for d in (self.pidfile.parent, self.logfile.parent):
            d.mkdir(parents=True, exist_ok=True)
        progress(f"starting {self.name} on {self.address} (log: {self.logfile})")
        with open(self.logfile, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.home, env=self.environment())
        self.pidfile.write_text(str(proc.pid))
        self._wait_ready(proc.pid)
        return True

    def _wait_ready(self, pid: int, fresh: bool = True) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise StackError(f"{self.name} exited during start-up:\n{self.log_tail()}",
                                 f"Read the full log at {self.logfile}.")
            if self.ready():
                return
            if fresh and self.supervised and (self.supervisor_state() or {}).get("restarts", 0) > 0:
                # It never came up once: restarting would only repeat the failure. Say why now.
                tail = self.log_tail()
                self.stop()
                raise StackError(f"{self.name} exited during start-up:\n{tail}",
                                 f"Read the full log at {self.logfile}.")
            time.sleep(0.25)
        raise StackError(
            f"{self.name} did not answer on {self.address} within {self.settings.start_timeout_s:.0f}s:\n{self.log_tail()}",
            f"Read {self.logfile}; raise RAGSTREAM_START_TIMEOUT_S on a slow machine.",
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the process group (SIGTERM, then SIGKILL after ``timeout``). True if it was running."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        if timeout > 0:
            self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            # Wait on the pid itself: /proc/<pid>/cmdline empties early in exit, while the
            # process still holds its sockets.
            while pid_alive(pid):
                time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL, as a crash would; returns once the process is gone (its sockets closed)."""
        return self.stop(timeout=0)

    def signal(self, sig: int) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return "  (no log)"
        return "\n".join("  | " + line for line in text[-lines:])


class KafkaBroker(Service):
    """Apache Kafka 4 in KRaft mode: one node that is both broker and controller."""

    name = "kafka"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.kafka_port, self.settings.kafka_controller_port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "kafka" / "data"

    def properties(self) -> str:
        s = self.settings
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.data_dir}",
            "num.partitions=1",
            # Topics come from the catalog (`ragstream topics ensure`); a typo must fail, not create.
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.cleaner.backoff.ms=5000",
            "",
        ])

    def command(self, progress: Callable[[str], None]) -> list[str]:
        java = find_java(self.settings)
        classpath = f"{jars(self.settings, 'broker', progress)}/*"
        conf = self.home / "kafka" / "server.properties"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(self.properties())
        jvm = [java, "-Xms128m", f"-Xmx{self.settings.broker_heap}", "-XX:+UseG1GC",
               "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={LOG4J}", "-cp", classpath]
        if not (self.data_dir / "meta.properties").exists():
            progress("formatting Kafka storage (first start)")
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format",
                                  f"--cluster-id={cluster_id}",  # an id may start with "-"
                                  f"--config={conf}"],
                                 capture_output=True, text=True, timeout=120)
            if fmt.returncode != 0:
                raise StackError(f"formatting Kafka storage in {self.data_dir} failed:\n{fmt.stdout}{fmt.stderr}",
                                 f"Remove {self.data_dir} if it is left over from another setup, then retry.")
        return [*jvm, "kafka.Kafka", str(conf)]

    def ready(self) -> bool:
        if not port_open(self.settings.kafka_port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.address, "log_level": 0})
        try:
            md = admin.list_topics(timeout=3)
        except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
            return False
        return bool(md.brokers)


class MilvusLite(Service):
    """milvus-lite in server mode, so several processes (index stage, API) share one store."""

    name = "milvus"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.milvus_port,)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.milvus_port}"

    def command(self, progress: Callable[[str], None]) -> list[str]:
        data = self.home / "milvus"
        data.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data),
                "--host", "127.0.0.1", "--port", str(self.settings.milvus_port)]

    def ready(self) -> bool:
        if not port_open(self.settings.milvus_port):
            return False
        from consumers.milvus import milvus_client

        try:
            client = milvus_client(self.address, timeout=3)
            client.list_collections()
        except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
            return False
        return True


class StageWorker(Service):
    """One pipeline stage (``ragstream worker <stage>``) as a supervised background process."""

    stage = ""
    supervised = True

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,)

    @property
    def port(self) -> int:
        from streams.registry import metrics_port

        return metrics_port(self.settings, self.stage)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def command(self, progress: Callable[[str], None]) -> list[str]:
        return [sys.executable, "-m", "ragstream.cli", "--home", str(self.home), "worker", self.stage]

    def environment(self) -> dict[str, str]:
        # Workers write to log files: structured JSON, one object per line.
        return {**settings_env(self.settings), "RAGSTREAM_LOG_FORMAT": "json"}

    def ready(self) -> bool:
        """It answers /healthz: 200, or a 503 that says why it is degraded (still up)."""
        return self.health() is not None

    def health(self) -> dict | None:
        return fetch_health(f"http://127.0.0.1:{self.port}/healthz")


class ApiServer(StageWorker):
    """The retrieval API (``ragstream api``) as a background process on ``api_port``."""

    name = "api"

    @property
    def port(self) -> int:
        return self.settings.api_port

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}/docs"

    def command(self, progress: Callable[[str], None]) -> list[str]:
        return [sys.executable, "-m", "ragstream.cli", "--home", str(self.home), "api", "--port", str(self.port)]


def fetch_health(url: str, timeout: float = 2) -> dict | None:
    """GET a /healthz: the JSON body of a 200 (``status`` ok unless it says otherwise) or of a
    503 (``status`` degraded, ``reason``, ``doc_id``...); None when nothing sensible answers."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            return None
        status, raw = exc.code, exc.read()
    except (OSError, ValueError):
        return None
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status == 200:
        return {**body, "status": body.get("status", "ok")}
    return {**body, "status": "degraded" if body.get("status", "ok") == "ok" else body["status"],
            "reason": body.get("reason") or "/healthz answered 503"}


def _health_reason(body: dict) -> str:
    """The body's reason, with the document and partition it names unless it says them already."""
    reason = str(body.get("reason") or body.get("status"))
    extra = []
    if body.get("doc_id") and str(body["doc_id"]) not in reason:
        extra.append(f"doc_id {body['doc_id']}")
    if body.get("partition") is not None and "partition" not in reason:
        extra.append(f"partition {body['partition']}")
    return f"{reason} ({', '.join(extra)})" if extra else reason


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"RAGSTREAM_{name.upper()}"] = str(value)
    return env


def _worker(stage: str) -> type[StageWorker]:
    return type(f"{stage.title()}Worker", (StageWorker,), {"name": f"worker-{stage}", "stage": stage})


PIPELINE_STAGES = PIPELINE  # the stage registry's (streams/registry.py) non-optional stages
WORKERS = tuple(f"worker-{s}" for s in PIPELINE_STAGES)
SERVICES: dict[str, type[Service]] = {"kafka": KafkaBroker, "milvus": MilvusLite,
                                      **{f"worker-{s}": _worker(s) for s in PIPELINE_STAGES}, "api": ApiServer}
INFRA = ("kafka", "milvus")
APPS = ("api",)


class Stack:
    def __init__(self, settings: Settings, names: tuple[str, ...] | None = None) -> None:
        unknown = set(names or ()) - set(SERVICES)
        if unknown:
            raise StackError(f"unknown service(s): {', '.join(sorted(unknown))}",
                             f"Services are: {', '.join(SERVICES)}.")
        self.settings = settings
        self.services = [SERVICES[n](settings) for n in (names or INFRA)]

    def up(self, progress: Callable[[str], None] = lambda _m: None) -> dict[str, bool]:
        return {svc.name: svc.start(progress) for svc in self.services}

    def down(self) -> dict[str, bool]:
        return {svc.name: svc.stop() for svc in reversed(self.services)}

    def status(self) -> list[ServiceStatus]:
        return [svc.status() for svc in self.services]

    def __getitem__(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)


def isolated_settings(home: Path, **overrides: object) -> Settings:
    """Settings for a stack of its own: this home and free loopback ports (tests, benchmarks)."""
    kafka_port = free_port()
    return load_settings(home=home, kafka_port=kafka_port, kafka_bootstrap=f"127.0.0.1:{kafka_port}",
                         kafka_controller_port=free_port(), milvus_port=free_port(),
                         metrics_port_base=free_port_block(8), api_port=free_port(), **overrides)


@contextlib.contextmanager
def running_pipeline(settings: Settings) -> Iterator[Stack]:
    """Kafka, milvus-lite, the topics and the stage workers; all stopped on exit."""
    from ragstream.admin import ensure_topics

    stack = Stack(settings, INFRA + WORKERS)
    try:
        Stack(settings, INFRA).up()
        ensure_topics(settings)
        Stack(settings, WORKERS).up()
        yield stack
    finally:
        stack.down()


# Database CDC (PostgreSQL, Kafka Connect with Debezium, the normalize worker): infra/cdc.py
# adds its services to SERVICES when imported.
import infra.cdc  # noqa: E402,F401 - it builds on the classes above
