"""The local stack: idempotent start, clean stop, and clear messages when the machine is wrong."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from infra.jvm import jars
from infra.service import StackError
from infra.stack import Stack
from ragstream.settings import load_settings

pytestmark = pytest.mark.integration


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


def test_up_twice_is_harmless_and_down_leaves_no_process(private_stack):
    stack = Stack(private_stack)
    assert stack.up() == {"kafka": True, "milvus": True}
    pids = {st.name: st.pid for st in stack.status()}
    assert all(st.ready for st in stack.status())

    assert stack.up() == {"kafka": False, "milvus": False}  # second call: nothing new
    assert {st.name: st.pid for st in stack.status()} == pids

    home = str(private_stack.home)
    assert len(processes_mentioning(home)) >= 2
    assert stack.down() == {"milvus": True, "kafka": True}
    assert processes_mentioning(home) == []
    assert not any(st.running for st in stack.status())
    assert stack.down() == {"milvus": False, "kafka": False}


def test_restart_keeps_data(private_stack):
    """Storage is formatted once; a second start reuses it."""
    stack = Stack(private_stack, ("kafka",))
    stack.up()
    meta = (stack["kafka"].data_dir / "meta.properties").read_text()
    stack.down()
    stack.up()
    assert (stack["kafka"].data_dir / "meta.properties").read_text() == meta


def test_port_in_use_says_which_and_what_to_do(private_stack):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", private_stack.kafka_port))
        squatter.listen()
        with pytest.raises(StackError) as err:
            Stack(private_stack, ("kafka",)).up()
    message = str(err.value)
    assert f"port {private_stack.kafka_port}" in message
    assert "already in use" in message
    assert "RAGSTREAM_KAFKA_PORT" in message


def test_java_missing(private_stack):
    settings = load_settings(**{**private_stack.model_dump(), "java": "/nonexistent/bin/java"})
    with pytest.raises(StackError) as err:
        Stack(settings, ("kafka",)).up()
    assert "Java was not found" in str(err.value)
    assert "openjdk-17" in str(err.value) and "RAGSTREAM_JAVA" in str(err.value)


def test_maven_central_unreachable(tmp_path, monkeypatch):
    # An empty local repository and a mirror nobody listens on: nothing can be downloaded.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    monkeypatch.setenv("MAVEN_OPTS", f"-Dmaven.repo.local={tmp_path / 'm2'}")
    settings = load_settings(cache_dir=tmp_path / "cache", maven_repo_url=f"http://127.0.0.1:{dead_port}/maven2")
    with pytest.raises(StackError) as err:
        jars(settings, "broker")
    message = str(err.value)
    assert "Maven could not download the broker jars" in message
    assert "RAGSTREAM_MAVEN_REPO_URL" in message
    assert not (tmp_path / "cache" / "jars").exists() or not any((tmp_path / "cache" / "jars").glob("*/.complete"))


def test_maven_missing(tmp_path):
    settings = load_settings(cache_dir=tmp_path / "cache", mvn="/nonexistent/mvn")
    with pytest.raises(StackError, match="Maven was not found"):
        jars(settings, "broker")


def test_stale_pid_file_is_ignored(private_stack):
    stack = Stack(private_stack, ("kafka",))
    pidfile = stack["kafka"].pidfile
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(str(os.getpid()))  # alive, but not a broker of this home
    assert stack["kafka"].pid() is None
    assert stack.up() == {"kafka": True}


def test_the_api_runs_as_a_service_of_the_stack(tmp_path):
    """`ragstream up` starts the API like a worker: it answers on api_port, publishes its
    OpenAPI document, and `down` stops it."""
    import json
    import urllib.request

    from infra.stack import Stack, isolated_settings

    s = isolated_settings(tmp_path / "home")
    stack = Stack(s, ("api",))
    try:
        assert stack.up() == {"api": True}
        assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{s.api_port}/healthz", timeout=5).read()) == {
            "status": "ok"}
        spec = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{s.api_port}/openapi.json", timeout=5).read())
        assert "/v1/search" in spec["paths"] and "/v1/admin/dsr" in spec["paths"]
        import urllib.error

        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.1:{s.api_port}/metrics", timeout=5)
        assert denied.value.code == 401
    finally:
        assert stack.down() == {"api": True}
    assert stack["api"].pid() is None


def test_a_neo4j_password_beginning_with_a_dash_is_set(tmp_path: Path) -> None:
    """Generated passwords (token_urlsafe) begin with "-" one time in 64; the admin tool must not read it as an option."""
    from pydantic import SecretStr

    from infra.neo4j import Neo4j

    s = load_settings(home=tmp_path / "home")
    s = s.model_copy(update={"neo4j_password": SecretStr("-starts-with-a-dash")})
    argv = Neo4j(s).command(lambda _m: None)  # runs `neo4j-admin dbms set-initial-password`; raises on failure
    assert argv[-1].startswith("--config-dir=")
    assert (tmp_path / "home" / "neo4j" / "data" / "dbms").is_dir()  # where the admin tool keeps the initial password
