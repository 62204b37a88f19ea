"""Secrets stay secret (settings, errors, logs) and RAGSTREAM_HOME is its owner's alone.

The local-user case is tried as a second Unix user created by the test (when the tests run
as root and ``useradd`` exists).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ragstream.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-live-" + "7f3e9c1a" * 4


def test_settings_never_show_a_secret():
    s = load_settings(embed_api_key=SECRET, cdc_dsn=f"postgresql://capture:{SECRET}@db.internal/erp")
    assert s.embed_api_key is not None and s.embed_api_key.get_secret_value() == SECRET
    assert SECRET in s.resolved_cdc_dsn  # what the connector is given
    for shown in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert SECRET not in shown


def test_configuration_errors_name_the_variable_not_the_secret():
    with pytest.raises(SettingsError) as err:  # a rule across fields fails: the whole input is in the error
        load_settings(embed_backend="openai", embed_api_key=SECRET)
    message = str(err.value)
    assert SECRET not in message and "RAGSTREAM_={" not in message
    assert "RAGSTREAM_EMBED_URL" in message and "RAGSTREAM_EMBED_MODEL" in message
    with pytest.raises(SettingsError) as err:  # the secret field itself is invalid
        load_settings(embed_api_key=12345678901234567890)
    assert "RAGSTREAM_EMBED_API_KEY=<hidden>" in str(err.value) and "12345678901234567890" not in str(err.value)


def test_a_bad_configuration_from_the_environment_prints_no_secret():
    out = subprocess.run([sys.executable, "-m", "ragstream.cli", "topics", "list"], capture_output=True, text=True,
                         cwd=ROOT, env={"PATH": os.environ.get("PATH", ""), "RAGSTREAM_EMBED_BACKEND": "openai",
                                        "RAGSTREAM_EMBED_API_KEY": SECRET})
    assert out.returncode != 0 and "RAGSTREAM_EMBED_URL" in out.stderr
    assert SECRET not in out.stdout + out.stderr and "Traceback" not in out.stderr


class Echoing(BaseHTTPRequestHandler):
    """An embedding endpoint that fails and echoes what it was sent (the worst case)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"error": f"refused {self.headers.get('Authorization')}"}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_served_api_logs_no_secret_when_the_embedding_endpoint_fails(tmp_path):
    from infra.stack import free_port

    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Echoing)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    home, port = tmp_path / "home", free_port()
    from ragstream.auth import Authenticator, AuthConfig

    key = Authenticator(AuthConfig(), home).api_keys.create("probe", ("user",))
    log = tmp_path / "api.log"
    env = {**os.environ, "RAGSTREAM_EMBED_BACKEND": "openai", "RAGSTREAM_EMBED_MODEL": "m",
           "RAGSTREAM_EMBED_URL": f"http://127.0.0.1:{endpoint.server_port}/v1", "RAGSTREAM_EMBED_API_KEY": SECRET,
           "RAGSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1", "RAGSTREAM_LOG_LEVEL": "DEBUG", "RAGSTREAM_LOG_FORMAT": "json"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ragstream.cli", "--home", str(home), "api", "--port",
                                 str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                    time.sleep(0.2)
            r = httpx.post(f"http://127.0.0.1:{port}/v1/search", json={"query": "anything"},
                           headers={"X-API-Key": key}, timeout=60)
            assert r.status_code == 500 and SECRET not in r.text
        finally:
            proc.terminate()
            proc.wait(20)
            endpoint.shutdown()
    text = log.read_text()
    assert "request failed" in text  # the failure was logged...
    assert SECRET not in text  # ...without the key


@pytest.mark.integration
def test_home_is_private_and_a_second_local_user_cannot_reach_it(settings):
    base = Path(tempfile.mkdtemp(prefix="ragstream-home-", dir="/tmp"))
    base.chmod(0o755)  # reachable by others, as a project folder usually is
    home = base / "home"
    home.mkdir(mode=0o755)
    (home / "left-by-an-older-version.log").write_text("x")
    env = {**os.environ, "RAGSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    try:
        out = subprocess.run([sys.executable, "-m", "ragstream.cli", "--home", str(home), "apikey", "create", "bot",
                              "--role", "user"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                             umask=0o022)
        assert out.returncode == 0, out.stderr
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for path in home.rglob("*"):  # created 0600/0700 by ragstream; the old log is behind the 0700 home
            if path.name == "left-by-an-older-version.log":
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, (path, oct(mode))
        if os.geteuid() != 0 or shutil.which("useradd") is None:
            pytest.skip("creating a second Unix user needs root and useradd")
        user = f"rsx{uuid.uuid4().hex[:8]}"
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", user], check=True)
        try:
            uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid

            def as_other(*cmd: str) -> subprocess.CompletedProcess:
                # user=/group=/extra_groups= switch in the child without running Python code
                # there (a preexec_fn in a process with threads can crash the child).
                return subprocess.run(list(cmd), capture_output=True, text=True, user=uid, group=gid,
                                      extra_groups=[])

            assert as_other("ls", str(base)).returncode == 0  # the folder above is open...
            for target in (home, home / "keys", home / "keys" / "auth.db", home / "left-by-an-older-version.log"):
                r = as_other("cat", str(target)) if target.suffix else as_other("ls", str(target))
                assert r.returncode != 0 and "Permission denied" in r.stderr, (target, r.stdout, r.stderr)
        finally:
            subprocess.run(["userdel", user], check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_search_as_someone_else_needs_an_admin_key(monkeypatch, tmp_path):
    from ragstream.cli import cli
    from ragstream.settings import get_settings

    monkeypatch.setenv("RAGSTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAGSTREAM_API_KEY", raising=False)
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(cli, ["search", "quarterly plan", "--as", "user:not-me-9f2c"])
        assert r.exit_code == 1 and "not your principal" in r.output and "admin API key" in r.output
        from ragstream.auth import AuthConfig, Authenticator

        user_key = Authenticator(AuthConfig(), tmp_path / "home").api_keys.create("helper", ("power_user",))
        r = CliRunner().invoke(cli, ["search", "q", "--as", "user:not-me-9f2c", "--key", user_key])
        assert r.exit_code == 1 and "principals:assume" in r.output
        help_text = CliRunner().invoke(cli, ["search", "--help"]).output
        assert "Who is trusted with what" in help_text and "admin" in help_text
    finally:
        get_settings.cache_clear()
