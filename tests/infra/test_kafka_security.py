"""Kafka authentication and authorization (issue 14): the client configuration in one place,
the ACLs derived from the stage registry and the catalog, and the local broker with
SASL/SCRAM and the StandardAuthorizer really refusing what it should."""

from __future__ import annotations

import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from infra.service import settings_env
from infra.stack import Stack, isolated_settings
from ragstream.admin import ensure_topics
from ragstream.consumer import scan_topic
from ragstream.kafka import (API, PRODUCER, client_config, credentials_path, faust_credentials,
                             java_client_properties, local_credentials, stage_principal)
from ragstream.kafka_acls import acl_bindings, local_principals
from ragstream.settings import load_settings
from schemas import topics
from schemas.events import Acl, AclChange
from schemas.serde import encode
from streams.registry import STAGES


# --------------------------------------------------------------------------------------
# Unit: the ACLs and the client configuration
# --------------------------------------------------------------------------------------

def _who(settings, op: str, topic: str) -> set[str]:
    return {g.principal for g in acl_bindings(settings)
            if g.resource == "topic" and g.operation == op
            and (g.name == topic if not g.prefixed else topic.startswith(g.name))}


def test_acls_follow_the_registry_and_each_topic_has_its_writers(tmp_path):
    s = load_settings(home=tmp_path)
    grants = acl_bindings(s)
    assert grants == acl_bindings(s)  # deterministic
    for spec in STAGES:
        who = stage_principal(spec.name)
        for t in (*spec.inputs, *(e.topic for e in spec.extra_inputs)):
            if not t.endswith("*"):
                assert who in _who(s, "READ", t), (spec.name, t)
        for t in spec.outputs:
            assert who in _who(s, "WRITE", t), (spec.name, t)
        assert who in _who(s, "WRITE", topics.AUDIT_EVENTS)
        assert any(g.principal == who and g.resource == "group" and g.name == f"ragstream-{spec.name}"
                   and g.operation == "READ" for g in grants)
    # The forged-ACL attack of issue 14: only the sources and normalize may write rag.acl.
    assert _who(s, "WRITE", topics.ACL) == {PRODUCER, stage_principal("normalize")}
    assert _who(s, "WRITE", topics.CHANGES) == {PRODUCER, stage_principal("normalize")}
    assert _who(s, "WRITE", topics.DOCUMENTS) == {stage_principal("compliance"), stage_principal("dsr")}
    assert _who(s, "WRITE", topics.DSR) == {API}
    assert _who(s, "WRITE", topics.AUDIT) == {stage_principal("audit")}
    assert _who(s, "WRITE", "rag.dlq.chunk") == {stage_principal("chunk")}
    assert _who(s, "READ", topics.CHANGES) == {stage_principal("compliance")}
    # Admin operations: only the dsr stage deletes records, only on the derived topics.
    assert {(g.principal, g.name) for g in grants if g.operation == "DELETE"} == {
        (stage_principal("dsr"), topics.CHUNKS), (stage_principal("dsr"), topics.VECTORS)}
    assert {g.principal for g in grants if g.resource == "transactional_id"} == {stage_principal("audit")}
    assert not any(g.operation in ("ALL", "ALTER", "ALTER_CONFIGS", "CLUSTER_ACTION") for g in grants)
    assert {g.principal for g in grants} <= set(local_principals())


def test_a_networked_broker_gets_sasl_ssl_in_every_client(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-from-file\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("")  # only its path travels
    s = load_settings(home=tmp_path, kafka_bootstrap="kafka.example:9093", kafka_security_protocol="SASL_SSL",
                      kafka_username="ragstream-chunk", kafka_password_file=pw, kafka_ssl_ca_file=ca)
    conf = client_config(s, **{"group.id": "g"})
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "ragstream-chunk" and conf["sasl.password"] == "s3cret-from-file"
    assert conf["ssl.ca.location"] == str(ca) and conf["group.id"] == "g"
    java = java_client_properties(s)
    assert java["security.protocol"] == "SASL_SSL" and java["ssl.truststore.type"] == "PEM"
    assert 'username="ragstream-chunk" password="s3cret-from-file"' in java["sasl.jaas.config"]
    s2 = load_settings(home=tmp_path, kafka_security_protocol="SASL_PLAINTEXT", kafka_username="u",
                       kafka_password="from-env")
    creds = faust_credentials(s2)
    assert (creds.username, creds.password, creds.mechanism.value, creds.protocol.value) == (
        "u", "from-env", "SCRAM-SHA-512", "SASL_PLAINTEXT")
    assert "from-env" not in repr(s2) and "from-env" not in s2.model_dump_json()
    assert settings_env(s2)["RAGSTREAM_KAFKA_PASSWORD"] == "from-env"  # a child process gets the real value
    with pytest.raises(SystemExit, match="RAGSTREAM_KAFKA_USERNAME"):
        load_settings(home=tmp_path, kafka_security_protocol="SASL_SSL")
    # Nothing configured, local auth off: plaintext, as before.
    assert "security.protocol" not in client_config(load_settings(home=tmp_path, kafka_local_auth=False))


# --------------------------------------------------------------------------------------
# Integration: a secured broker of this module's own
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    s = isolated_settings(tmp_path_factory.mktemp("ksec") / "home", kafka_local_auth=True, partitions=2)
    stack = Stack(s, ("kafka",))
    try:
        stack.up()
        ensure_topics(s)
        yield s
    finally:
        stack.down()


def _as(s, who: str):
    return s.model_copy(update={"kafka_principal": who})


def _errors_of(conf: dict) -> list[KafkaError]:
    seen: list[KafkaError] = []
    admin = AdminClient({**conf, "error_cb": seen.append, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=6)
    admin.poll(1)  # serves error_cb
    return seen


@pytest.mark.integration
def test_anonymous_and_wrong_password_clients_are_refused(secured):
    _errors_of({"bootstrap.servers": secured.kafka_bootstrap})  # no credentials: no metadata at all
    wrong = {**client_config(secured), "sasl.password": "not-the-password"}
    errors = _errors_of(wrong)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    # the controller listener does not serve clients without its own credentials either
    _errors_of({"bootstrap.servers": f"127.0.0.1:{secured.kafka_controller_port}"})


def _forge(s, who: str, doc_id: str) -> KafkaError | None:
    change = AclChange(source="fs", doc_id=doc_id, version=99, acl=Acl(principals=("user:bob",)))
    result: list[KafkaError | None] = []
    p = Producer(client_config(_as(s, who), **{"message.timeout.ms": 10_000, "log_level": 0}))
    p.produce(topics.ACL, key=doc_id.encode(), value=encode(change), on_delivery=lambda err, _m: result.append(err))
    p.flush(15)
    assert result, "no delivery report"
    return result[0]


@pytest.mark.integration
def test_a_forged_acl_change_from_a_principal_that_does_not_own_rag_acl_is_refused(secured):
    forged = f"fs:/root/secret-{uuid.uuid4().hex[:6]}"
    for who in (stage_principal("chunk"), API):
        err = _forge(secured, who, forged)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (who, err)
    assert not [m for m in scan_topic(secured, topics.ACL) if m.key() == forged.encode()]
    owned = f"fs:/home/alice/doc-{uuid.uuid4().hex[:6]}"
    assert _forge(secured, PRODUCER, owned) is None  # the sources own it
    assert [m for m in scan_topic(secured, topics.ACL) if m.key() == owned.encode()]


@pytest.mark.integration
def test_credentials_are_private_and_no_password_is_logged_or_printed(secured):
    path = credentials_path(secured)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((secured.home / "kafka" / "server.properties").stat().st_mode) == 0o600
    creds = local_credentials(secured)
    passwords = [creds["controller"], *creds["users"].values()]
    out = subprocess.run([sys.executable, "-m", "ragstream.cli", "--home", str(secured.home), "stack", "status"],
                         capture_output=True, text=True, timeout=120, env=settings_env(secured))
    assert "kafka" in out.stdout + out.stderr
    logs = [p.read_text(errors="replace") for p in (secured.home / "logs").glob("*")]
    assert any("SaslServerAuthenticator" in t or "Kafka Server started" in t or "kafka" in t for t in logs)
    cmdline = Path(f"/proc/{Stack(secured, ('kafka',))['kafka'].pid()}/cmdline").read_bytes().decode(errors="replace")
    for pw in passwords:
        assert pw not in out.stdout + out.stderr
        for text in logs:
            assert pw not in text
        assert pw not in cmdline  # what `ps` shows every local user


@pytest.mark.integration
def test_each_principal_has_exactly_its_admin_operations(secured):
    """The dsr stage may delete records of the derived topics only; the API files requests."""
    from confluent_kafka import TopicPartition

    dsr = AdminClient(client_config(_as(secured, stage_principal("dsr")), log_level=0))
    ok = dsr.delete_records([TopicPartition(topics.CHUNKS, 0, 0)])
    for fut in ok.values():
        fut.result(timeout=30)
    refused = dsr.delete_records([TopicPartition(topics.DOCUMENTS, 0, 0)])
    for fut in refused.values():
        with pytest.raises(KafkaException) as exc:
            fut.result(timeout=30)
        assert exc.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    api = AdminClient(client_config(_as(secured, API), log_level=0))
    with pytest.raises(KafkaException):  # nobody but admin changes topics
        for fut in api.delete_topics([topics.ACL], operation_timeout=10).values():
            fut.result(timeout=30)
    result: dict[str, KafkaError | None] = {}
    p = Producer(client_config(_as(secured, API), **{"message.timeout.ms": 10_000, "log_level": 0}))
    for t in (topics.DSR, topics.CHANGES):
        p.produce(t, key=b"k", value=b"{}", on_delivery=lambda err, _m, t=t: result.__setitem__(t, err))
    p.flush(15)
    assert result[topics.DSR] is None
    assert result[topics.CHANGES] is not None and result[topics.CHANGES].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


#: A Kafka client in the standard library only (the second user cannot read the project's
#: Python): sends one request without authenticating and says whether the broker answered.
_RAW_PROBE = """
import socket, struct, sys
port, api_key = int(sys.argv[1]), int(sys.argv[2])
body = struct.pack(">hhih", api_key, 0, 7, 5) + b"probe" + (struct.pack(">i", 0) if api_key == 3 else b"")
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(struct.pack(">i", len(body)) + body)
try:
    data = s.recv(4)
except OSError:
    data = b""
print("ANSWERED" if data else "CLOSED")
"""


@pytest.mark.integration
def test_a_second_local_user_gets_nothing_from_the_broker(secured):
    import os
    import pwd
    import shutil

    if os.geteuid() != 0 or shutil.which("useradd") is None or not Path("/usr/bin/python3").exists():
        pytest.skip("creating a second Unix user needs root and useradd (and the system's python3)")
    user = f"rsk{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", user], check=True)
    try:
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid

        def as_other(*cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run(list(cmd), capture_output=True, text=True, user=uid, group=gid, extra_groups=[],
                                  cwd="/tmp", env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}, timeout=60)

        r = as_other("cat", str(credentials_path(secured)))
        assert r.returncode != 0 and "Permission denied" in r.stderr
        # ApiVersions is answered before authentication (the probe speaks Kafka)...
        assert as_other("/usr/bin/python3", "-c", _RAW_PROBE, str(secured.kafka_port), "18").stdout.strip() == "ANSWERED"
        # ...Metadata (topics, then anything else) is not: the broker closes the connection.
        r = as_other("/usr/bin/python3", "-c", _RAW_PROBE, str(secured.kafka_port), "3")
        assert r.stdout.strip() == "CLOSED", (r.stdout, r.stderr)
    finally:
        subprocess.run(["userdel", user], check=False)
