"""Supervision of one local service: pid and log files, readiness, health, stop, ports.

Every failure raises :class:`StackError`, whose message says what went wrong and what to do."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from ragstream.settings import Settings


class StackError(RuntimeError):
    """The stack could not do what was asked; ``hint`` says what to do about it."""

    def __init__(self, problem: str, hint: str) -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}\n  → {hint}")



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


#: Where ``free_port_block`` puts the stage workers' metrics ports, and ``free_port`` never
#: looks: the extra workers ``ragstream scale`` starts bind their ports (base + offset + 10·i)
#: long after the block was found free, so a single port handed out meanwhile to another
#: server (a Milvus server's internal gRPC ports, a test's own service) must not land there.
BLOCK_PORTS = (20000, 24000)


def free_port() -> int:
    """A bindable port *below* the kernel's ephemeral range (and above the workers' blocks).

    A port from bind(0) is ephemeral, and a client that keeps reconnecting to a dead broker
    on such a port can be handed that very port as its source and connect to itself (TCP
    self-connect), so the port looks taken when the broker restarts.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(BLOCK_PORTS[1], min(low, 32000))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive free ports in ``BLOCK_PORTS`` (workers' metrics, their
    extra workers' included), where ``free_port`` hands out nothing."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(BLOCK_PORTS[0], BLOCK_PORTS[1] - n)
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

    def replace_if_older(self, marker: bytes, what: str, progress: Callable[[str], None]) -> None:
        """Stop our running process if its command line lacks ``marker``: one an older version
        started without a check this version adds (``what`` says which, for the progress line)."""
        pid = self.pid()
        if pid is None:
            return
        try:
            current = marker in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            current = True  # gone meanwhile: nothing to replace
        if not current:
            progress(f"{self.name}: replacing a server without {what} (started by an older version)")
            self.stop()

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
    from pydantic import SecretStr

    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:  # a secret's real value (str() of a SecretStr is its mask)
            env[f"RAGSTREAM_{name.upper()}"] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return env
