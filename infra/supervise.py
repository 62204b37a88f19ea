"""Keep one process running: restart it with exponential backoff when it exits.

The local stack starts every stage worker and the API through this supervisor::

    python -m infra.supervise --name worker-embed --state HOME/run/worker-embed.supervisor.json \\
        -- python -m ragstream.cli --home HOME worker embed

* The child runs in the supervisor's process group (the stack gives each service a session
  of its own), so ``stack down`` — SIGTERM to the group, SIGKILL after a grace period —
  reaches both. A SIGTERM/SIGINT/SIGHUP to the supervisor is also forwarded to the child,
  and the supervisor then waits for it and exits without restarting: a deliberate stop is
  never fought.
* The child is asked to die with the supervisor (``PR_SET_PDEATHSIG``): a supervisor
  killed on its own leaves no orphan holding the worker's port.
* When the child exits on its own (crash, ``kill -9``, a fatal error) it is started again
  after ``backoff`` seconds, doubling up to ``backoff_max``; a run that lasted at least
  ``reset_after`` seconds counts as stable and resets the backoff.
* Each restart is one structured log line (``stage``, ``exit_code`` or ``signal``,
  ``attempt``, ``backoff_s``, ``restarts``) in the service's log, and the state file
  (JSON: child pid, restarts, last exit, phase) is what ``ragstream stack status`` and the
  child's ``ragstream_worker_restarts_total`` read.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Environment variable that tells a supervised child where its supervisor's state is
#: (ragstream/metrics.py exports the restart count from it).
STATE_ENV = "RAGSTREAM_SUPERVISOR_STATE"

_PR_SET_PDEATHSIG = 1


@dataclass
class SupervisorState:
    """What the supervisor tells the outside world, rewritten atomically on every change."""

    name: str
    stage: str
    supervisor_pid: int
    phase: str = "starting"  # starting | running | backoff | stopping | stopped
    child_pid: int | None = None
    restarts: int = 0
    attempt: int = 0  # consecutive restarts without a stable run
    started_at: float | None = None  # wall-clock start of the current child
    last_exit: dict[str, Any] | None = None
    next_start_at: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # the last few exits

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), sort_keys=True))
        os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any] | None:
    """The state a supervisor wrote, or None when there is none (or it is half written)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stage_of(name: str) -> str:
    """``worker-embed`` → ``embed``; any other service name stays as it is (``api``)."""
    return name.removeprefix("worker-")


def describe_exit(returncode: int) -> dict[str, Any]:
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = f"signal {-returncode}"
        return {"exit_code": None, "signal": sig}
    return {"exit_code": returncode, "signal": None}


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the supervisor dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the stack's process-group kill still covers `stack down`


def _log(level: str, event: str, **fields: Any) -> None:
    """One JSON object per line on stdout (the service's log file), like the workers' lines."""
    line = {"event": event, "level": level, "logger": "infra.supervise",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() % 1 * 1e6):06d}Z",
            **fields}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Supervisor:
    def __init__(self, name: str, command: list[str], state_path: Path, *, backoff: float = 1.0,
                 backoff_max: float = 30.0, reset_after: float = 60.0) -> None:
        if not command:
            raise ValueError("nothing to supervise: give the command after --")
        if backoff <= 0 or backoff_max < backoff or reset_after <= 0:
            raise ValueError("need 0 < backoff <= backoff_max and reset_after > 0")
        self.command = command
        self.state_path = state_path
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.reset_after = reset_after
        self.state = SupervisorState(name=name, stage=stage_of(name), supervisor_pid=os.getpid())
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    def _on_signal(self, signum: int, _frame: Any) -> None:
        first = not self.stopping.is_set()
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            # The group signal usually reached the child already; the workers and the API
            # treat a repeated SIGTERM like the first one.
            try:
                child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)
            except ProcessLookupError:
                pass
        if first:
            _log("info", "stop requested; stopping the child, no restart", stage=self.state.stage,
                 signal=signal.Signals(signum).name, child_pid=child.pid if child else None)

    def _save(self) -> None:
        self.state.write(self.state_path)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, STATE_ENV: str(self.state_path)}
        delay = self.backoff
        while not self.stopping.is_set():
            started = time.monotonic()
            self.child = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL,
                                          preexec_fn=_die_with_parent)
            self.state.phase, self.state.child_pid = "running", self.child.pid
            self.state.started_at, self.state.next_start_at = time.time(), None
            self._save()
            if self.stopping.is_set():  # a stop arrived while the child was being created
                self.child.terminate()
            returncode = self.child.wait()
            ran = time.monotonic() - started
            exit_info = {**describe_exit(returncode), "ran_s": round(ran, 3), "at": time.time()}
            self.state.last_exit = exit_info
            self.state.history = [*self.state.history, exit_info][-10:]
            self.state.child_pid = None
            if self.stopping.is_set():
                break
            if ran >= self.reset_after:  # a stable run: the next failure starts from the first step
                delay, self.state.attempt = self.backoff, 0
            self.state.restarts += 1
            self.state.attempt += 1
            self.state.phase, self.state.next_start_at = "backoff", time.time() + delay
            self._save()
            _log("warning", "child exited; restarting after backoff", stage=self.state.stage,
                 service=self.state.name, **describe_exit(returncode), ran_s=round(ran, 3),
                 attempt=self.state.attempt, restarts=self.state.restarts, backoff_s=delay)
            self.stopping.wait(delay)
            delay = min(delay * 2, self.backoff_max)
        self.state.phase = "stopped"
        self._save()
        _log("info", "supervisor stopped", stage=self.state.stage, restarts=self.state.restarts)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.supervise",
        description="Run COMMAND and restart it with exponential backoff whenever it exits, until "
                    "this supervisor is told to stop (SIGTERM, SIGINT or SIGHUP).")
    parser.add_argument("--name", required=True, help="service name, e.g. worker-embed (its stage labels logs)")
    parser.add_argument("--state", required=True, type=Path, help="JSON state file to keep up to date")
    parser.add_argument("--backoff", type=float, default=1.0, help="first restart delay, seconds (default 1)")
    parser.add_argument("--backoff-max", type=float, default=30.0, help="longest restart delay (default 30)")
    parser.add_argument("--reset-after", type=float, default=60.0,
                        help="a run at least this long resets the backoff (default 60)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to supervise")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        supervisor = Supervisor(args.name, command, args.state, backoff=args.backoff,
                                backoff_max=args.backoff_max, reset_after=args.reset_after)
    except ValueError as exc:
        parser.error(str(exc))
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
