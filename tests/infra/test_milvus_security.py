"""The local milvus-lite server refuses clients without the token ``stack up`` generated
(infra/milvus_server.py); every ragstream client sends it (consumers.milvus.milvus_client).

The local-user case is tried as a second Unix user created by the test (when the tests run
as root and ``useradd`` exists; that user speaks gRPC with curl).
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import grpc
import pytest
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from infra.stack import Stack, isolated_settings

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    s = isolated_settings(tmp_path_factory.mktemp("milvus-auth") / "home")
    stack = Stack(s, ("milvus",))
    stack.up()
    try:
        yield s, stack
    finally:
        stack.down()


def _refused(uri: str, **kw: object) -> str:
    with pytest.raises(MilvusException) as err:
        client = MilvusClient(uri=uri, timeout=5, **kw)  # plain pymilvus
        client.list_collections()
    return str(err.value)


def _raw_call(port: int, authorization: bytes | None) -> grpc.StatusCode:
    """ShowCollections over a bare gRPC channel with this ``authorization`` metadata."""
    from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = milvus_pb2_grpc.MilvusServiceStub(channel)
        try:
            stub.ShowCollections(milvus_pb2.ShowCollectionsRequest(), timeout=5,
                                 metadata=[("authorization", authorization)] if authorization else None)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_a_client_without_the_token_is_refused_and_ragstream_s_clients_send_it(lite):
    from consumers.milvus import MilvusIndex

    s, stack = lite
    token_file = s.milvus_token_file
    assert token_file == s.home / "secrets" / "milvus.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    token = token_file.read_text().strip()
    assert len(token) >= 40

    # ragstream's own client (the one factory) finds the token through the settings.
    index = MilvusIndex(s.resolved_milvus_uri, "authz", 4)
    index.ensure()
    assert any(c.startswith("authz_") for c in index.client.list_collections())

    uri = s.resolved_milvus_uri
    _refused(uri)  # pymilvus reports "Fail connecting"; what the server said:
    assert _raw_call(s.milvus_port, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _raw_call(s.milvus_port, base64.b64encode(b"guess")) == grpc.StatusCode.UNAUTHENTICATED
    assert _raw_call(s.milvus_port, base64.b64encode(token.encode())) == grpc.StatusCode.OK
    _refused(uri, token="not-" + token)
    _refused(uri, token=token[:-1])
    _refused(uri, user="root", password="Milvus")  # real Milvus' default credentials
    # The real token with plain pymilvus works: it is the token that is checked, nothing else.
    assert any(c.startswith("authz_") for c in MilvusClient(uri=uri, timeout=5, token=token).list_collections())

    # The token is never on the command line (ps) nor in the server's log.
    pid = stack["milvus"].pid()
    assert pid is not None
    assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert token not in stack["milvus"].logfile.read_text(errors="replace")


def test_a_remote_milvus_gets_only_its_own_token(lite, tmp_path):
    """The local server's token goes to the local server only (no URI, or one on loopback);
    a Milvus elsewhere gets RAGSTREAM_MILVUS_TOKEN or nothing."""
    from ragstream.settings import load_settings, milvus_token

    s, _ = lite
    remote = load_settings(home=s.home, milvus_uri="http://milvus.example.com:19530")
    assert milvus_token(remote.resolved_milvus_uri) is None
    given = load_settings(home=s.home, milvus_uri="https://milvus.example.com:19530", milvus_token="user:pw-remote")
    assert milvus_token(given.resolved_milvus_uri) == "user:pw-remote"
    assert "pw-remote" not in repr(given) and "pw-remote" not in given.model_dump_json()
    local = load_settings(home=s.home, milvus_port=s.milvus_port)
    assert milvus_token(local.resolved_milvus_uri) == s.milvus_token_file.read_text().strip()
    # A home without a stack yet: no token file, no token (the server will refuse, saying why).
    assert milvus_token(load_settings(home=tmp_path / "fresh", milvus_port=1).resolved_milvus_uri) is None


def test_a_second_local_user_cannot_use_the_local_milvus(lite):
    s, _ = lite
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("curl") is None:
        pytest.skip("creating a second Unix user needs root and useradd (and the probe curl)")
    user = f"rsm{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", user], check=True)
    try:
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid

        def as_other(*cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run(list(cmd), capture_output=True, text=True, user=uid, group=gid, extra_groups=[],
                                  cwd="/tmp", env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}, timeout=120)

        r = as_other("cat", str(s.milvus_token_file))
        assert r.returncode != 0 and "Permission denied" in r.stderr
        # A gRPC call as any client would make it (HTTP/2, an empty ShowCollectionsRequest),
        # without and with a guessed token: the project's Python is not readable by that user,
        # curl is.
        url = f"http://127.0.0.1:{s.milvus_port}/milvus.proto.milvus.MilvusService/ShowCollections"
        for extra in ([], ["-H", "authorization: " + base64.b64encode(b"guess").decode()]):
            r = as_other("sh", "-c", 'printf "\\0\\0\\0\\0\\0" | curl -s --http2-prior-knowledge -X POST '
                         '-H "content-type: application/grpc" -H "te: trailers" --data-binary @- -D - "$@"',
                         "curl", *extra, url)
            assert "grpc-status: 16" in r.stdout, (r.stdout, r.stderr)  # UNAUTHENTICATED
            assert "authz" not in r.stdout
    finally:
        subprocess.run(["userdel", user], check=False)
