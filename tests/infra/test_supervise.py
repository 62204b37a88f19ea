"""Supervision: a worker that exits is restarted with backoff, each restart logged and
counted; a deliberate stop is not fought; `stack status` tells degraded from ready."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from infra.service import Service, StackError, pid_alive
from infra.stack import SERVICES, isolated_settings
from infra.supervise import Supervisor, read_state
from ragstream.settings import Settings

#: A child that does what its mode file says: "exit:N" exits at once with N, "sleep" stays up.
CHILD = """
import sys, time, pathlib
home = pathlib.Path(sys.argv[1])
mode = (home / "mode").read_text().strip()
if mode.startswith("exit:"):
    time.sleep(float((home / "delay").read_text()) if (home / "delay").exists() else 0)
    sys.exit(int(mode[5:]))
while True:
    time.sleep(1)
"""


class Dummy(Service):
    name = "dummy"
    supervised = True

    @property
    def ports(self) -> tuple[int, ...]:
        return ()

    @property
    def address(self) -> str:
        return "-"

    def command(self, progress):  # noqa: ANN001
        return [sys.executable, "-c", CHILD, str(self.home)]

    def ready(self) -> bool:
        return (self.home / "ready").exists()


def settings_for(tmp_path: Path, **kw: float) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return isolated_settings(home, **kw)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def log_events(svc: Service) -> list[dict]:
    out = []
    for line in svc.logfile.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return [e for e in out if e.get("logger") == "infra.supervise"]


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def test_a_crashing_child_is_restarted_with_doubling_backoff_and_each_restart_logged(tmp_path):
    s = settings_for(tmp_path, restart_backoff_s=0.2, restart_backoff_max_s=0.8, restart_reset_after_s=30)
    (s.home / "mode").write_text("exit:3")
    (s.home / "ready").touch()
    svc = Dummy(s)
    try:
        assert svc.start() is True
        state = wait_for(lambda: (st := svc.supervisor_state()) and st["restarts"] >= 5 and st, what="5 restarts")
        events = [e for e in log_events(svc) if e["event"].startswith("child exited")]
        assert len(events) >= 5
        assert [e["backoff_s"] for e in events[:5]] == [0.2, 0.4, 0.8, 0.8, 0.8]
        assert [e["attempt"] for e in events[:5]] == [1, 2, 3, 4, 5]
        assert all(e["exit_code"] == 3 and e["signal"] is None and e["stage"] == "dummy" for e in events)
        # The waits really happened: each exit is at least its backoff after the previous one.
        exits = [h["at"] for h in state["history"]]
        gaps = [b - a for a, b in zip(exits, exits[1:])]
        assert all(g >= d - 0.05 for g, d in zip(gaps, [0.2, 0.4, 0.8, 0.8])), gaps
        assert svc.status().restarts == state["restarts"]
    finally:
        svc.stop()
    assert processes_mentioning(str(s.home)) == []


def test_kill_9_of_the_child_restarts_it_and_stack_down_is_not_fought(tmp_path):
    s = settings_for(tmp_path, restart_backoff_s=0.2, restart_backoff_max_s=1, restart_reset_after_s=30)
    (s.home / "mode").write_text("sleep")
    (s.home / "ready").touch()
    svc = Dummy(s)
    try:
        svc.start()
        first = wait_for(svc.child_pid, what="the child")
        supervisor = svc.pid()
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (p := svc.child_pid()) and p != first and p, what="a new child")
        assert svc.pid() == supervisor  # the same supervisor restarted it
        st = svc.status()
        assert (st.restarts, st.child_pid, st.state) == (1, second, "ready")
        [event] = [e for e in log_events(svc) if e["event"].startswith("child exited")]
        assert (event["signal"], event["exit_code"], event["attempt"], event["backoff_s"]) == ("SIGKILL", None, 1, 0.2)
        t0 = time.monotonic()
        assert svc.stop() is True
        assert time.monotonic() - t0 < 10  # SIGTERM was enough: nobody restarted the child meanwhile
        assert not pid_alive(second) and not pid_alive(supervisor)
        time.sleep(0.5)  # longer than the backoff: a supervisor that fought back would have a child now
        assert processes_mentioning(str(s.home)) == []
        assert read_state(svc.supervisor_state_path)["phase"] == "stopped"
        assert read_state(svc.supervisor_state_path)["restarts"] == 1
    finally:
        svc.stop()


def test_a_stable_run_resets_the_backoff(tmp_path):
    s = settings_for(tmp_path, restart_backoff_s=0.2, restart_backoff_max_s=5, restart_reset_after_s=0.5)
    (s.home / "mode").write_text("exit:1")
    (s.home / "delay").write_text("0.7")  # every run is "stable" (longer than reset_after)
    (s.home / "ready").touch()
    svc = Dummy(s)
    try:
        svc.start()
        wait_for(lambda: (st := svc.supervisor_state()) and st["restarts"] >= 3, what="3 restarts")
        events = [e for e in log_events(svc) if e["event"].startswith("child exited")]
        assert [e["backoff_s"] for e in events[:3]] == [0.2, 0.2, 0.2]
        assert [e["attempt"] for e in events[:3]] == [1, 1, 1]
    finally:
        svc.stop()


def test_a_child_that_never_comes_up_fails_the_start_with_its_log(tmp_path):
    s = settings_for(tmp_path, restart_backoff_s=0.2, start_timeout_s=30)
    (s.home / "mode").write_text("exit:7")  # never ready, exits at once
    svc = Dummy(s)
    t0 = time.monotonic()
    with pytest.raises(StackError, match="dummy exited during start-up"):
        svc.start()
    assert time.monotonic() - t0 < 15
    assert svc.pid() is None and processes_mentioning(str(s.home)) == []


def test_the_supervisor_refuses_an_empty_command_and_bad_delays(tmp_path):
    with pytest.raises(ValueError, match="nothing to supervise"):
        Supervisor("x", [], tmp_path / "s.json")
    with pytest.raises(ValueError, match="backoff"):
        Supervisor("x", ["true"], tmp_path / "s.json", backoff=5, backoff_max=1)


def test_restart_counter_is_exported_from_the_state_file(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from ragstream.metrics import _SupervisorRestarts

    state = tmp_path / "worker-embed.supervisor.json"
    registry = CollectorRegistry()
    registry.register(_SupervisorRestarts(str(state)))
    assert b"ragstream_worker_restarts_total" not in generate_latest(registry)  # no state yet: no sample
    state.write_text(json.dumps({"stage": "embed", "restarts": 4}))
    assert b'ragstream_worker_restarts_total{stage="embed"} 4.0' in generate_latest(registry)


# --------------------------------------------------------------------------- stack status

#: A stand-in for a worker's web server: /healthz answers what the file "health" holds
#: ("200" or "503"), with the body the workers use.
FAKE_WORKER = """
import http.server, json, pathlib, sys
home, port, stage = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        want = (home / "health").read_text().strip()
        code = 200 if want == "200" else 503
        body = {"stage": stage, "status": "ok"} if code == 200 else {
            "stage": stage, "status": "degraded", "reason": "no progress for 95 s while input waits",
            "doc_id": "fs-docs-abc123:big.md", "partition": 2, "stalled_s": 95.0, "extra": [1, 2]}
        if want == "failed":
            body = {"stage": stage, "status": "failed", "reason": "the fetcher crashed: KafkaError"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_stack_status_shows_a_worker_whose_healthz_is_503_as_degraded_with_the_reason(tmp_path, monkeypatch):
    import subprocess

    from infra.stack import settings_env
    from ragstream.cli import cli
    from ragstream.settings import get_settings
    from streams.registry import metrics_port

    s = settings_for(tmp_path)
    (s.home / "health").write_text("503")
    port = metrics_port(s, "embed")
    proc = subprocess.Popen([sys.executable, "-c", FAKE_WORKER, str(s.home), str(port), "embed"])
    worker = SERVICES["worker-embed"](s)
    worker.pidfile.parent.mkdir(parents=True, exist_ok=True)
    worker.pidfile.write_text(str(proc.pid))
    for k, v in settings_env(s).items():
        if k.startswith("RAGSTREAM_"):
            monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        wait_for(worker.health, what="the fake worker")
        st = worker.status()
        assert (st.state, st.health) == ("degraded", "degraded")
        assert st.reason == "no progress for 95 s while input waits (doc_id fs-docs-abc123:big.md, partition 2)"
        result = CliRunner().invoke(cli, ["stack", "status", "-s", "worker-embed"])
        assert result.exit_code == 4, result.output
        assert "worker-embed" in result.output and "degraded" in result.output
        assert "no progress for 95 s while input waits (doc_id fs-docs-abc123:big.md, partition 2)" in result.output

        (s.home / "health").write_text("failed")
        result = CliRunner().invoke(cli, ["stack", "status", "-s", "worker-embed"])
        assert result.exit_code == 4, result.output
        assert "failed" in result.output and "the fetcher crashed: KafkaError" in result.output

        (s.home / "health").write_text("200")
        result = CliRunner().invoke(cli, ["stack", "status", "-s", "worker-embed"])
        assert result.exit_code == 0, result.output
        assert "ready" in result.output and "degraded" not in result.output
    finally:
        get_settings.cache_clear()
        proc.kill()
        proc.wait()


class DummyUpWhileChildRuns(Dummy):
    def ready(self) -> bool:
        return self.child_pid() is not None


def test_stack_up_while_a_worker_waits_to_be_restarted_waits_for_it_and_does_not_stop_it(tmp_path):
    s = settings_for(tmp_path, restart_backoff_s=2, restart_backoff_max_s=2, restart_reset_after_s=30)
    (s.home / "mode").write_text("sleep")
    svc = DummyUpWhileChildRuns(s)
    try:
        assert svc.start() is True
        first, supervisor = svc.child_pid(), svc.pid()
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: (svc.supervisor_state() or {}).get("phase") == "backoff", what="the backoff")
        assert svc.status().state == "restarting"
        assert svc.start() is False  # `stack up` again: waits for the restart, raises nothing
        assert svc.pid() == supervisor and svc.child_pid() not in (None, first)
    finally:
        svc.stop()
