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
import sys
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
    # The form the standalone engine needs (root's password), which ragstream's clients send to both.
    assert _raw_call(s.milvus_port, base64.b64encode(f"root:{token}".encode())) == grpc.StatusCode.OK
    assert _raw_call(s.milvus_port, base64.b64encode(f"admin:{token}".encode())) == grpc.StatusCode.UNAUTHENTICATED
    assert _raw_call(s.milvus_port, base64.b64encode(f"root:{token[:-1]}".encode())) == grpc.StatusCode.UNAUTHENTICATED
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
    # Sent as root's password, the form either local engine accepts (Milvus standalone logs a bare one).
    assert milvus_token(local.resolved_milvus_uri) == "root:" + s.milvus_token_file.read_text().strip()
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


def _tls_files(folder: Path, name: str = "server", ca: tuple | None = None) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it signed for localhost/127.0.0.1: (ca, cert, key). With
    ``ca`` (a previous call's result) the certificate is signed by that CA instead (a client's)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    if ca is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ragstream test CA {name}")])
        ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        (folder / f"{name}-ca.key").write_bytes(ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        ca_path = folder / f"{name}-ca.pem"
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    else:
        ca_path = ca[0]
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_path.with_suffix(".key").read_bytes(), None)
        ca_name = ca_cert.subject
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = ca_path, folder / f"{name}.pem", folder / f"{name}.key"
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _wait_for(server: subprocess.Popen, connect) -> None:
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            connect()
            return
        except MilvusException:
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.5)


def test_a_milvus_over_tls_with_a_private_ca_and_a_token(tmp_path):
    """RAGSTREAM_MILVUS_URI=https://…, RAGSTREAM_MILVUS_TOKEN and RAGSTREAM_MILVUS_CA_FILE reach
    every client (the one factory); without the CA the certificate is refused."""
    import secrets as pysecrets

    from consumers.milvus import milvus_client
    from infra.service import free_port
    from ragstream.settings import load_settings

    ca, cert, key = _tls_files(tmp_path)
    token = pysecrets.token_urlsafe(32)
    (tmp_path / "token").write_text(token)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "infra.milvus_server", "--data-dir", str(tmp_path / "data"),
                               "--port", str(port), "--token-file", str(tmp_path / "token"),
                               "--tls-cert", str(cert), "--tls-key", str(key)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        uri = f"https://localhost:{port}"
        s = load_settings(home=tmp_path / "home", milvus_uri=uri, milvus_token=token, milvus_ca_file=ca)
        _wait_for(server, lambda: milvus_client(s.resolved_milvus_uri, timeout=5).list_collections())
        wrong = load_settings(home=tmp_path / "home", milvus_uri=uri, milvus_token="x" + token, milvus_ca_file=ca)
        with pytest.raises(MilvusException):  # TLS alone is not enough: the token is checked
            milvus_client(wrong.resolved_milvus_uri, timeout=5).list_collections()
        # The right token without our CA: the system's CAs do not know it, the handshake fails
        # (in a process of its own: pymilvus pools a connection per address and token).
        probe = subprocess.run([sys.executable, "-c", "from ragstream.settings import get_settings\n"
                                "from consumers.milvus import milvus_client\n"
                                "milvus_client(get_settings().resolved_milvus_uri, timeout=5).list_collections()"],
                               env={**os.environ, "RAGSTREAM_HOME": str(tmp_path / "home"), "RAGSTREAM_MILVUS_URI": uri,
                                    "RAGSTREAM_MILVUS_TOKEN": token}, capture_output=True, text=True, timeout=120)
        assert probe.returncode != 0 and "MilvusException" in probe.stderr, probe.stderr[-2000:]
        assert token not in probe.stderr
    finally:
        server.terminate()
        server.wait(30)


def test_a_milvus_demanding_client_certificates_mutual_tls(tmp_path):
    """RAGSTREAM_MILVUS_CLIENT_CERT_FILE/_KEY_FILE reach every client (the one factory) for a
    Milvus that demands a client certificate (infra/milvus_server.py --tls-client-ca): with
    the certificate it works; without one, or with one of another CA, the handshake is refused
    and the error says why."""
    import secrets as pysecrets
    import time

    from consumers.milvus import milvus_client
    from infra.service import free_port, port_open
    from ragstream.settings import SettingsError, load_settings

    ca, cert, key = _tls_files(tmp_path, "server")
    client_ca, client_cert, client_key = _tls_files(tmp_path, "client-ca")  # the CA clients are issued by
    client_cert, client_key = _tls_files(tmp_path, "client", ca=(client_ca,))[1:]
    stranger_cert, stranger_key = _tls_files(tmp_path, "stranger")[1:]  # a client of another CA
    for path in (key, client_key, stranger_key):
        path.chmod(0o600)
    token = pysecrets.token_urlsafe(32)
    (tmp_path / "token").write_text(token)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "infra.milvus_server", "--data-dir", str(tmp_path / "data"),
                               "--port", str(port), "--token-file", str(tmp_path / "token"),
                               "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(client_ca)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    home = tmp_path / "home"
    uri = f"https://localhost:{port}"

    def settings(**kw: object):
        return load_settings(home=home, milvus_uri=uri, milvus_token=token, milvus_ca_file=ca, **kw)

    try:
        deadline = time.monotonic() + 60
        while not port_open(port, "127.0.0.1"):
            assert time.monotonic() < deadline and server.poll() is None, server.stderr.read() if server.stderr else ""
            time.sleep(0.3)
        # Refused first: pymilvus pools a connection per address and token only once it works.
        with pytest.raises(MilvusException) as err:  # no client certificate
            milvus_client(settings().resolved_milvus_uri, timeout=5).list_collections()
        assert "TLS handshake failed" in str(err.value) and "refused the client certificate" in str(err.value), err.value
        assert "none was given" in str(err.value)
        with pytest.raises(MilvusException) as err:  # a certificate of another CA
            milvus_client(settings(milvus_client_cert_file=stranger_cert, milvus_client_key_file=stranger_key)
                          .resolved_milvus_uri, timeout=5).list_collections()
        assert "TLS handshake failed" in str(err.value) and "refused the client certificate" in str(err.value), err.value
        assert "RAGSTREAM_MILVUS_CLIENT_CERT_FILE" in str(err.value)
        assert token not in str(err.value)

        good = settings(milvus_client_cert_file=client_cert, milvus_client_key_file=client_key)
        _wait_for(server, lambda: milvus_client(good.resolved_milvus_uri, timeout=5).list_collections())
        assert milvus_client(good.resolved_milvus_uri, timeout=5).list_collections() == []
    finally:
        server.terminate()
        server.wait(30)

    # Checked at start-up: both or neither, and files that can be read (named, never printed).
    with pytest.raises(SettingsError, match="go together"):
        settings(milvus_client_cert_file=client_cert)
    with pytest.raises(SettingsError, match="go together"):
        settings(milvus_client_key_file=client_key)
    with pytest.raises(SettingsError, match="CLIENT_KEY_FILE .* is not a readable file"):
        settings(milvus_client_cert_file=client_cert, milvus_client_key_file=tmp_path / "missing.key")
    with pytest.raises(SettingsError) as err:
        settings(milvus_client_cert_file=client_cert, milvus_client_key_file=tmp_path)  # a folder
    assert "BEGIN" not in str(err.value)


def test_an_embedded_db_file_is_served_behind_a_token_only_its_process_knows(tmp_path):
    """A ``.db`` URI: pymilvus would serve it on a loopback port open to every local user;
    ragstream's client factory serves it behind a random token instead."""
    from urllib.parse import urlparse

    from consumers.milvus import MilvusIndex
    from consumers.milvus.lite_server import embedded

    index = MilvusIndex(str(tmp_path / "lite.db"), "embedded", 4)
    index.ensure()
    uri, token = embedded(str(tmp_path / "lite.db"))
    assert embedded(str(tmp_path / "lite.db")) == (uri, token)  # one server per file in a process
    port = urlparse(uri).port
    assert port and _raw_call(port, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _raw_call(port, base64.b64encode(b"guess")) == grpc.StatusCode.UNAUTHENTICATED
    assert _raw_call(port, base64.b64encode(token.encode())) == grpc.StatusCode.OK
    assert any(c.startswith("embedded_") for c in index.client.list_collections())


def test_an_open_server_left_by_an_older_version_is_replaced(tmp_path):
    """Before the token check, the stack ran `python -m milvus_lite server`; `stack up` must
    not leave such a server running (it would answer the token and everyone else too)."""
    import time

    s = isolated_settings(tmp_path / "home")
    stack = Stack(s, ("milvus",))
    data = s.home / "milvus"
    data.mkdir(parents=True)
    (s.home / "run").mkdir(exist_ok=True)
    (s.home / "logs").mkdir(exist_ok=True)
    old = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data), "--host",
                            "127.0.0.1", "--port", str(s.milvus_port)], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (s.home / "run" / "milvus.pid").write_text(str(old.pid))
        deadline = time.monotonic() + 60
        while _raw_call(s.milvus_port, None) != grpc.StatusCode.OK:  # the old server: open to anyone
            assert time.monotonic() < deadline and old.poll() is None
            time.sleep(0.5)
        assert stack.up() == {"milvus": True}
        old.wait(30)  # stopped
        assert _raw_call(s.milvus_port, None) == grpc.StatusCode.UNAUTHENTICATED
        assert stack.up() == {"milvus": False}  # ours is left alone
    finally:
        stack.down()
        if old.poll() is None:
            old.kill()


def test_credentials_in_a_milvus_or_maven_url_are_refused_without_being_printed():
    from ragstream.settings import SettingsError, load_settings

    for field, url in (("milvus_uri", "https://root:s3cr3t-pw@milvus.example.com:19530"),
                       ("maven_repo_url", "https://deploy:s3cr3t-pw@repo.example.com/maven2"),
                       ("milvus_uri", "http://tok3n-only@milvus.example.com:19530"),
                       ("connect_url", "https://admin:s3cr3t-pw@connect.example.com:8083")):
        with pytest.raises(SettingsError) as err:
            load_settings(**{field: url})
        assert f"RAGSTREAM_{field.upper()} holds credentials" in str(err.value)
        assert "s3cr3t" not in str(err.value) and "tok3n" not in str(err.value)
    assert load_settings(milvus_uri="https://milvus.example.com:19530").milvus_uri
    assert load_settings(milvus_uri="/tmp/x/lite.db").milvus_uri
