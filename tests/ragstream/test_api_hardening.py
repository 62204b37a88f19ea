"""The API as it is served (``ragstream api``: uvicorn in its own process), tried as an
attacker on the network or the same host would: spoofed X-Forwarded-For, a 200 MB
anonymous body, malformed JSON, unfinished headers, a body that never ends. Nothing here
needs Kafka or Milvus: each case is decided before an endpoint runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infra.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Served:
    def __init__(self, tmp: Path, per_minute: int = 10_000, **env: str) -> None:
        self.port = free_port()
        auth = tmp / "auth.toml"
        auth.write_text(f"[rate_limit]\nper_minute = {per_minute}\n")
        self.log = open(tmp / "api.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ragstream.cli", "--home", str(tmp / "home"), "api", "--port", str(self.port)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "RAGSTREAM_AUTH_FILE": str(auth), "RAGSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                 "FORWARDED_ALLOW_IPS": "*", **env})  # uvicorn's own switch, set as an attacker's host would
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, (tmp / "api.log").read_text()
            assert time.monotonic() < deadline, "API did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


@pytest.fixture
def serve(tmp_path):
    started: list[Served] = []

    def start(**kw: object) -> Served:
        s = Served(tmp_path / f"api{len(started)}", **kw)  # type: ignore[arg-type]
        started.append(s)
        return s

    for p in (tmp_path / f"api{i}" for i in range(3)):
        p.mkdir()
    yield start
    for s in started:
        s.stop()


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(serve):
    api = serve(per_minute=3)
    codes = [httpx.get(f"{api.url}/v1/auth/whoami", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
             for i in range(6)]
    assert codes == [401, 401, 401, 429, 429, 429]  # one client (the peer), whatever it claims to be

    proxied = serve(per_minute=3, RAGSTREAM_API_TRUSTED_PROXIES="127.0.0.1")
    codes = [httpx.get(f"{proxied.url}/v1/auth/whoami", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
             for i in range(6)]
    assert codes == [401] * 6  # behind a trusted proxy each forwarded client has its own budget


def test_a_200_mb_anonymous_body_is_refused_before_it_is_read(serve):
    api = serve()
    before = rss_mib(api.proc.pid)
    for chunked in (False, True):
        sock = socket.create_connection(("127.0.0.1", api.port))
        head = "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {200 * 2**20}\r\n\r\n"
        sock.sendall(head.encode())
        block = b"[" * 2**20
        sent = 0
        t0 = time.monotonic()
        try:
            for _ in range(200):
                sock.sendall(b"100000\r\n" + block + b"\r\n" if chunked else block)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b"(reset)"
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413"), (chunked, sent, answer[:200])
        assert sent < 200 and time.monotonic() - t0 < 10, (chunked, sent)
    after = rss_mib(api.proc.pid)
    assert after - before < 30, (before, after)


def test_anonymous_malformed_json_counts_against_the_rate_limit(serve):
    api = serve(per_minute=3)
    codes = [httpx.post(f"{api.url}/v1/search", content=b'{"query": ', headers={"Content-Type": "application/json"}
                        ).status_code for _ in range(5)]
    assert codes == [422, 422, 422, 429, 429]


def test_unfinished_headers_and_bodies_are_cut_off(serve):
    api = serve(RAGSTREAM_API_HEADER_TIMEOUT_S="2", RAGSTREAM_API_BODY_TIMEOUT_S="2")
    sock = socket.create_connection(("127.0.0.1", api.port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    sock.settimeout(15)
    t0 = time.monotonic()
    assert sock.recv(1024) == b""  # closed by the server
    assert time.monotonic() - t0 < 6
    sock.close()

    sock = socket.create_connection(("127.0.0.1", api.port))
    sock.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"user")
    sock.settimeout(15)
    t0 = time.monotonic()
    answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - t0 < 6
    sock.close()


def test_the_api_listens_on_loopback_by_default(serve):
    api = serve()
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) == api.port:  # LISTEN
                listening.add(host)
    assert listening == {"0100007F"}, listening  # 127.0.0.1 only


def test_readyz_is_cached_and_rate_limited(tmp_path):
    from fastapi.testclient import TestClient

    from ragstream.api import create_app
    from ragstream.settings import load_settings

    auth = tmp_path / "auth.toml"
    auth.write_text("[rate_limit]\nper_minute = 5\n")
    app = create_app(load_settings(home=tmp_path / "home", auth_file=auth))

    class Index:
        queries = 0

        def first_rows(self, *args: object, **kw: object) -> list:
            Index.queries += 1
            return []

        rows = first_rows  # whichever query readiness uses

    app.state.services._index = Index()
    with TestClient(app) as client:
        codes = [client.get("/readyz").status_code for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3
    assert Index.queries == 1  # one index query answers every probe within READY_TTL_S
