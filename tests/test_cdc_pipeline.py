"""Database CDC end to end: real PostgreSQL → Debezium 3.7 on Kafka Connect 4.3.1 → normalize
→ the session's pipeline → Milvus, everything started by the project's own scripts.

The oracle compares the tables with the index after each step: every row is one document
whose chunks hold the row's current text (a unique token per revision), deleted rows are
gone, and no document has more chunks than its text makes (nothing duplicated).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from consumers.milvus import MilvusIndex
from infra.stack import Stack, free_port, settings_env
from ragstream.admin import wait_drained
from ragstream.settings import Settings
from schemas import topics
from streams.embedding import make_embedder, model_dim
from tests import leaks
from tests.test_pipeline import metric
from tests.test_verify_pipeline import verify

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

SOURCE = "cdc-test"
ROWS = 1000
MAPPING = f"""
source = "{SOURCE}"

[[tables]]
table = "public.articles"
text = ["title", "body", "summary"]   # summary is added by ALTER TABLE mid-stream
title = "title"
uri = "https://intranet.example/articles/{{id}}"
extra = ["category"]
acl = {{ column = "readers", kind = "group" }}

[[tables]]
table = "public.notes"
text = ["body"]
acl = {{ principals = ["group:staff"] }}

[[tables]]
table = "public.tickets"
id = ["ticket_no"]
text = ["subject", "description"]
acl = {{ table = "public.ticket_readers", key = "ticket_no", principal = "principal" }}
"""
SCHEMA = """
CREATE TABLE articles (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL, category text,
                       readers text[] NOT NULL DEFAULT '{}', views integer NOT NULL DEFAULT 0);
CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL, status text NOT NULL DEFAULT 'new');
ALTER TABLE notes ALTER COLUMN body SET STORAGE EXTERNAL;  -- out of line, uncompressed: TOASTed
CREATE TABLE tickets (ticket_no text PRIMARY KEY, subject text NOT NULL, description text NOT NULL);
CREATE TABLE ticket_readers (ticket_no text NOT NULL, principal text NOT NULL, PRIMARY KEY (ticket_no, principal));
"""
WORDS = ("maintenance window storage cluster quarterly review backup rotation network switch firmware "
         "upgrade capacity planning invoice supplier contract renewal warehouse inventory forecast").split()


TIMES: dict[str, float] = {}


def body(i: int, rev: int) -> str:
    rnd = random.Random(i * 7919 + rev)
    return f"Article {i} tok{i}r{rev} covers the " + " ".join(rnd.choice(WORDS) for _ in range(14)) + "."


def doc_id(i: int) -> str:
    return f"{SOURCE}:public.articles/{i}"


# ------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def cdc(pipeline: Settings) -> Iterator[Settings]:
    """The session's pipeline plus PostgreSQL, a Connect worker and the normalize worker,
    with ROWS articles already in the table before the connector exists (the snapshot)."""
    import psycopg

    from infra.cdc import delete_connector, wait_running

    # A home of their own for PostgreSQL, Connect and normalize (Kafka and Milvus are the
    # pipeline's, by address): PostgreSQL runs as the postgres user (it refuses root), which
    # cannot enter pytest's private temp folder (mode 0700, reset by every pytest run).
    home = Path(tempfile.mkdtemp(prefix="ragstream-cdc-test-", dir="/tmp"))
    mapping_file = home / "cdc-mapping.toml"
    mapping_file.write_text(MAPPING)
    # Their credentials in this home too (model_copy keeps the pipeline home's defaults).
    s = pipeline.model_copy(update={"home": home, "postgres_port": free_port(), "connect_port": free_port(),
                                    "cdc_mapping_file": mapping_file,
                                    "postgres_password_file": home / "secrets" / "postgres.properties",
                                    "connect_credentials_file": home / "secrets" / "connect-rest.properties"})
    services = Stack(s, ("postgres", "connect", "worker-normalize"))
    try:
        services["postgres"].start()
        with psycopg.connect(s.resolved_cdc_dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO articles (id, title, body, category, readers) VALUES (%s, %s, %s, %s, %s)",
                                [(i, f"Article {i}", body(i, 0), "ops", ["staff"]) for i in range(ROWS)])
        services["connect"].start()
        t0 = time.monotonic()
        # As an operator would: the connector, and the database registered as a source
        # (its cursor) so that `ragstream verify cdc-test` lists the tables.
        applied = subprocess.run([sys.executable, "-m", "ragstream.cli", "connect", "apply", "--no-wait"],
                                 env=settings_env(s), capture_output=True, text=True, timeout=300)
        assert applied.returncode == 0, applied.stderr
        assert f"source {SOURCE}: registered" in applied.stderr, applied.stderr
        assert (st := wait_running(s)) and st["connector"]["state"] == "RUNNING", st
        services["worker-normalize"].start()
        TIMES["snapshot_started"] = t0  # for the snapshot test's rate
        yield s
    finally:
        try:
            delete_connector(s)
        except Exception:  # noqa: BLE001 - teardown: Connect may be gone already
            pass
        services.down()
        leaks.check_then_remove(home)  # its logs and secrets go to the session-end leak check first


@pytest.fixture(scope="module")
def index(cdc: Settings) -> MilvusIndex:
    idx = MilvusIndex(cdc.resolved_milvus_uri, cdc.collection, model_dim(cdc), acl_refresh_s=0.2)
    idx.ensure()
    return idx


@pytest.fixture(scope="module")
def embedder(cdc: Settings):
    return make_embedder(cdc)


# -------------------------------------------------------------------------------- helpers

def db(s: Settings):
    import psycopg

    return psycopg.connect(s.resolved_cdc_dsn, autocommit=True)


def normalize_lag(s: Settings) -> int:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    from ragstream.admin import admin_client
    from ragstream.consumer import make_consumer
    from streams.normalize import load_mapping

    admin = admin_client(s)
    reader = make_consumer(s, "ragstream-lag-probe")
    lag = 0
    try:
        for topic in load_mapping(s.cdc_mapping_file).topics():
            parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
            req = ConsumerGroupTopicPartitions("ragstream-normalize", [TopicPartition(topic, p) for p in parts])
            committed = {tp.partition: tp.offset for tp in
                         admin.list_consumer_group_offsets([req])[req.group_id].result(timeout=10).topic_partitions}
            for p in parts:
                low, high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                c = committed.get(p, -1)
                lag += high - (c if c >= 0 else low)
    finally:
        reader.close()
    return lag


def captured(s: Settings, timeout: float = 120) -> None:
    """Every change committed so far is in Kafka: the slot confirmed an LSN past a marker
    written now (Debezium confirms only what Kafka acknowledged and it committed)."""
    with db(s) as conn:
        # A column the mapping does not use: normalize publishes nothing for it.
        conn.execute("INSERT INTO notes (id, body) VALUES (-1, 'marker') "
                     "ON CONFLICT (id) DO UPDATE SET status = md5(random()::text)")
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        while True:
            done = conn.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                                "WHERE slot_name = 'ragstream_cdc'", (target,)).fetchone()
            if done and done[0]:
                return
            assert time.monotonic() < deadline, "Debezium did not confirm the marker's LSN"
            time.sleep(0.5)


def settled(s: Settings, timeout: float = 300) -> None:
    """Captured, normalized and through every stage."""
    captured(s)
    deadline = time.monotonic() + timeout
    while normalize_lag(s):
        assert time.monotonic() < deadline, "normalize did not catch up"
        time.sleep(0.5)
    assert wait_drained(s, timeout=max(deadline - time.monotonic(), 10), stages=("compliance", "chunk", "embed", "index"))


def indexed(index: MilvusIndex, table: str = "articles") -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in index.rows(f'source == "{SOURCE}" and doc_id like "{SOURCE}:public.{table}/%"',
                          ["chunk_id", "doc_id", "text", "version"]):
        out.setdefault(row["doc_id"], []).append(row)
    return out


def drift(s: Settings, index: MilvusIndex) -> list[str]:
    """How the index differs from the articles table (empty: converged)."""
    with db(s) as conn:
        rows = {doc_id(i): b for i, b in conn.execute("SELECT id, body FROM articles").fetchall()}
    got = indexed(index)
    problems = [f"missing {d}" for d in sorted(set(rows) - set(got))[:5]]
    problems += [f"not deleted {d}" for d in sorted(set(got) - set(rows))[:5]]
    for d in rows:
        if len(got.get(d, [])) > 1:
            problems.append(f"duplicated {d}: {len(got[d])} chunks")
    return problems + stale_texts(s, index)


def stale_texts(s: Settings, index: MilvusIndex) -> list[str]:
    """Articles whose indexed text is not the row's current revision. `ragstream verify`
    cannot see this for a database: its listing has no versions (LSNs are not in the table),
    so it checks presence, chunk ids against rag.documents and readers, not the text."""
    with db(s) as conn:
        rows = {doc_id(i): b for i, b in conn.execute("SELECT id, body FROM articles").fetchall()}
    got = indexed(index)
    problems = []
    for d, text in rows.items():
        token = text.split()[2]
        if got.get(d) and not any(token in c["text"] for c in got[d]):
            problems.append(f"stale {d}: wants {token}")
    return problems


def messages_for(s: Settings, topic: str, doc: str) -> int:
    from ragstream.consumer import scan_topic

    return sum(1 for m in scan_topic(s, topic) if m.key() == doc.encode())


def visible(index: MilvusIndex, embedder: Any, query: str, principal: str, doc: str) -> bool:
    vector = embedder.embed([query])[0]
    return any(h.doc_id == doc for h in index.search(vector, [principal], limit=20))


def wait_for(cond: Any, timeout: float = 120, what: str = "") -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out: {what}"
        time.sleep(0.25)
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------- tests

def test_snapshot_of_existing_rows_becomes_searchable(cdc, index, embedder):
    settled(cdc, timeout=900)
    took = time.monotonic() - TIMES["snapshot_started"]
    assert drift(cdc, index) == []
    assert len(indexed(index)) == ROWS
    print(f"\nsnapshot: {ROWS} rows searchable in {took:.1f}s ({ROWS / took:.1f} rows/s, pipeline included)")
    assert visible(index, embedder, body(123, 0), "group:staff", doc_id(123))
    assert not visible(index, embedder, body(123, 0), "group:nobody", doc_id(123))


def test_insert_update_delete_each_reach_search(cdc, index, embedder):
    with db(cdc) as conn:
        conn.execute("INSERT INTO articles (id, title, body, readers) VALUES (5001, 'Zebra crossing', "
                     "'The zebra crossing outside building C gets new lights in spring.', '{staff}')")
        inserted = wait_for(lambda: visible(index, embedder, "zebra crossing lights", "group:staff", doc_id(5001)),
                            what="insert")
        conn.execute("UPDATE articles SET body = 'The zebra crossing outside building C is closed for repairs "
                     "until the end of the month.' WHERE id = 5001")
        updated = wait_for(lambda: any("closed for repairs" in c["text"] for c in indexed(index).get(doc_id(5001), [])),
                           what="update")
        conn.execute("DELETE FROM articles WHERE id = 5001")
        deleted = wait_for(lambda: doc_id(5001) not in indexed(index), what="delete")
    assert not visible(index, embedder, "zebra crossing repairs", "group:staff", doc_id(5001))
    print(f"\nrow change → searchable: insert {inserted:.1f}s, update {updated:.1f}s, delete {deleted:.1f}s")


def test_update_outside_the_text_reembeds_nothing_and_acl_change_is_permission_only(cdc, index, embedder):
    settled(cdc)
    state = index.doc_state(doc_id(7))
    changes, acls = messages_for(cdc, topics.CHANGES, doc_id(7)), messages_for(cdc, topics.ACL, doc_id(7))
    embedded = metric(cdc, "embed", "ragstream_chunks_embedded_total")
    with db(cdc) as conn:
        conn.execute("UPDATE articles SET views = views + 1 WHERE id = 7")
        settled(cdc)
        assert messages_for(cdc, topics.CHANGES, doc_id(7)) == changes, "an unmapped column must publish nothing"
        assert index.doc_state(doc_id(7))["version"] == state["version"]

        conn.execute("UPDATE articles SET readers = '{finance}' WHERE id = 7")
        wait_for(lambda: visible(index, embedder, body(7, 0), "group:finance", doc_id(7)), what="new reader")
        assert not visible(index, embedder, body(7, 0), "group:staff", doc_id(7))
        settled(cdc)
    assert messages_for(cdc, topics.CHANGES, doc_id(7)) == changes, "a permission-only change goes to rag.acl only"
    assert messages_for(cdc, topics.ACL, doc_id(7)) == acls + 1
    assert metric(cdc, "embed", "ragstream_chunks_embedded_total") == embedded


def test_join_table_acl(cdc, index, embedder):
    doc = f"{SOURCE}:public.tickets/HD-7"
    with db(cdc) as conn:
        conn.execute("INSERT INTO tickets VALUES ('HD-7', 'Badge reader broken', "
                     "'The badge reader at the loading dock rejects every card.')")
        conn.execute("INSERT INTO ticket_readers VALUES ('HD-7', 'group:facilities'), ('HD-7', 'user:ann')")
        wait_for(lambda: visible(index, embedder, "badge reader loading dock", "user:ann", doc), what="ticket")
        conn.execute("DELETE FROM ticket_readers WHERE ticket_no = 'HD-7' AND principal = 'user:ann'")
        wait_for(lambda: not visible(index, embedder, "badge reader loading dock", "user:ann", doc), what="revoke")
    # {group:facilities} alone is a new ACL set: searchers learn it within acl_refresh_s.
    wait_for(lambda: visible(index, embedder, "badge reader loading dock", "group:facilities", doc), timeout=30,
             what="remaining reader")


def test_connect_killed_and_postgres_restarted_mid_stream_lose_and_duplicate_nothing(cdc, index, monkeypatch):
    import psycopg

    from infra.cdc import read_recovery_state, running, wait_running

    stack = Stack(cdc, ("postgres", "connect"))
    ops = {"done": 0}
    stop = threading.Event()

    def writer() -> None:
        rnd = random.Random(42)
        conn = None
        n = 0
        while n < 400 and not stop.is_set():
            i = rnd.randrange(ROWS)
            try:
                if conn is None:
                    conn = psycopg.connect(cdc.resolved_cdc_dsn, autocommit=True, connect_timeout=3)
                if n % 10 == 9:
                    conn.execute("DELETE FROM articles WHERE id = %s", (i,))
                else:
                    conn.execute("INSERT INTO articles (id, title, body, readers) VALUES (%s, %s, %s, '{staff}') "
                                 "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                                 (i, f"Article {i}", body(i, 1000 + n)))
                n += 1
                ops["done"] = n
            except psycopg.OperationalError:
                conn = None  # PostgreSQL is restarting: retry the same change
                time.sleep(0.3)
            time.sleep(0.03)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        wait_for(lambda: ops["done"] >= 80, what="writer started")
        assert stack["connect"].kill()  # SIGKILL: no offset commit, no clean shutdown
        wait_for(lambda: ops["done"] >= 160, what="writes while Connect is down")
        stack["connect"].start()
        wait_for(lambda: ops["done"] >= 240, what="writes after Connect's restart")
        assert stack["postgres"].stop()
        time.sleep(2)
        stack["postgres"].start()
        t.join(timeout=300)
        assert ops["done"] == 400
    finally:
        stop.set()
    # Debezium reconnects by itself after a lost connection, but when its reconnect lands
    # while PostgreSQL is still shutting down, the task's start fails for good (FAILED).
    # Nobody restarts it by hand here: the Connect worker's TaskRecovery does (docs/cdc.md).
    st = wait_running(cdc, timeout=180, fail_fast=False)
    recovery = read_recovery_state(cdc)
    assert running(st), f"the connector did not come back: {st}\nrecovery: {recovery}"
    assert recovery and recovery["watching"] and not recovery["exhausted"], recovery
    if recovery["restarts"]:
        print(f"\ntask FAILED after the PostgreSQL restart and was restarted automatically "
              f"({recovery['restarts']}x): {recovery['last']['reason']} / {recovery['last']['cause']}")
        log = stack["connect"].logfile.read_text(errors="replace")
        assert "restarting a failed Kafka Connect task" in log
        assert 'ragstream_connect_task_restarts_total{connector="ragstream-postgres"}' in (
            cdc.home / "metrics" / "connect.prom").read_text()
    settled(cdc, timeout=600)
    # The oracle: every row is one document with the readers the row grants, its chunks
    # those of its compliant text, no rows of an older version; no document of a deleted row.
    code, report = verify(cdc, monkeypatch, SOURCE)
    assert (code, report["drift"]) == (0, 0), json.dumps(report["sources"][0]["findings"][:10], indent=1)
    assert report["sources"][0]["listed"] >= ROWS - 40  # every 10th of 400 changes deleted a row
    # What verify cannot check for a database (no versions): the text is the row's latest.
    assert stale_texts(cdc, index) == []


def test_added_column_and_a_row_that_breaks_the_mapping(cdc, index):
    from ragstream.dlq import list_letters

    # Other tests share the broker's dead-letter topic: compare by position, not by count.
    before = {(lt.partition, lt.offset) for lt in list_letters(cdc, "normalize")}
    with db(cdc) as conn:
        conn.execute("UPDATE articles SET body = %s WHERE id = 11", (body(11, 5),))
        conn.execute("ALTER TABLE articles ADD COLUMN summary text")
        conn.execute("UPDATE articles SET summary = 'Summary: the lights are replaced in spring.' WHERE id = 12")
        conn.execute("INSERT INTO articles (id, title, body, readers) VALUES (6001, 'Bad readers', 'x', "
                     "'{\"has space\"}')")
        conn.execute("INSERT INTO articles (id, title, body, summary, readers) VALUES (6002, 'After the bad row', "
                     "%s, 'Short summary of 6002.', '{staff}')", (body(6002, 0),))
    settled(cdc)
    got = indexed(index)
    assert any("Summary: the lights are replaced" in c["text"] for c in got[doc_id(12)])
    assert any("Short summary of 6002." in c["text"] for c in got[doc_id(6002)])
    assert doc_id(6001) not in got
    letters = [lt for lt in list_letters(cdc, "normalize") if (lt.partition, lt.offset) not in before]
    assert len(letters) == 1 and letters[0].letter is not None
    assert "column 'readers'" in letters[0].letter.error_message
    assert "invalid principal" in letters[0].letter.error_message
    with db(cdc) as conn:
        conn.execute("DELETE FROM articles WHERE id IN (6001, 6002)")
        conn.execute("ALTER TABLE articles DROP COLUMN summary")
        conn.execute("UPDATE articles SET body = %s WHERE id = 12", (body(12, 6),))
    settled(cdc)
    assert drift(cdc, index) == []
    assert not any("Summary:" in c["text"] for c in indexed(index)[doc_id(12)])


def test_toasted_unchanged_value_is_looked_up_not_indexed_as_placeholder(cdc, index):
    # REPLICA IDENTITY DEFAULT (the connector set FULL at its start): PostgreSQL then sends
    # an unchanged TOASTed column as "unchanged", Debezium as its placeholder.
    words = " ".join(random.Random(3).choice(WORDS) for _ in range(600))
    with db(cdc) as conn:
        conn.execute("ALTER TABLE notes REPLICA IDENTITY DEFAULT")
        conn.execute("INSERT INTO notes (id, body) VALUES (1, %s)", (words + " endtoken",))
        settled(cdc)
        conn.execute("UPDATE notes SET status = 'read' WHERE id = 1")
        settled(cdc)
    from ragstream.consumer import scan_topic

    placeholder = b"__debezium_unavailable_value"
    raw = [m.value() for m in scan_topic(cdc, "cdc.public.notes") if m.value() and b'"id":1,' in m.value()]
    assert any(placeholder in v for v in raw), "PostgreSQL should have left the TOASTed body out of the update"
    chunks = indexed(index, "notes")[f"{SOURCE}:public.notes/1"]
    text = " ".join(c["text"] for c in chunks)
    assert "endtoken" in text and "__debezium" not in text


# ------------------------------------------------- credentials of the local CDC stack (issue 14)

def _raw(s: Settings, method: str, path: str, auth: str | None = None) -> int:
    """A Connect REST call from a client that is not ragstream's: the HTTP status."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{s.connect_port}{path}", method=method,
                                 data=b"{}" if method in ("POST", "PUT") else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": auth} if auth else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_connect_rest_needs_the_credentials_and_listens_on_loopback(cdc):
    import base64

    from infra.cdc import CONNECTOR_NAME, connect_request

    guessed = "Basic " + base64.b64encode(b"ragstream:guess").decode()
    for method, path in (("GET", "/connectors"), ("GET", "/"), ("GET", "/connector-plugins"),
                         ("GET", f"/connectors/{CONNECTOR_NAME}/config"), ("PUT", f"/connectors/{CONNECTOR_NAME}/config"),
                         ("POST", "/connectors"), ("DELETE", f"/connectors/{CONNECTOR_NAME}"),
                         ("PUT", "/admin/loggers/root")):
        assert _raw(cdc, method, path) == 401, (method, path)
        assert _raw(cdc, method, path, guessed) == 401, (method, path)
    # ragstream's one client sends the generated credentials; the connector survived the attempts.
    assert connect_request(cdc, "GET", "/connectors") == (200, [CONNECTOR_NAME])
    user, password = cdc.connect_credentials
    assert user == "ragstream" and len(password.get_secret_value()) >= 32
    assert password.get_secret_value() not in repr(cdc.connect_credentials)
    right = "Basic " + base64.b64encode(f"{user}:{password.get_secret_value()}".encode()).decode()
    assert _raw(cdc, "GET", f"/connectors/{CONNECTOR_NAME}/status", right) == 200
    # The REST listener is bound to 127.0.0.1 only.
    ss = subprocess.run(["ss", "-Hltn", f"sport = :{cdc.connect_port}"], capture_output=True, text=True)
    if ss.returncode == 0:
        bound = [ln.split()[3] for ln in ss.stdout.splitlines()]
        assert bound and all(a.removeprefix("[::ffff:").replace("]:", ":") == f"127.0.0.1:{cdc.connect_port}"
                             for a in bound), ss.stdout  # Java shows IPv4 loopback as [::ffff:127.0.0.1]
    # The credentials are never sent to a Connect elsewhere; one configured for it is.
    remote = cdc.model_copy(update={"connect_url": "https://connect.example:8083"})
    assert remote.connect_credentials is None
    given = remote.model_copy(update={"connect_password": SecretStr("pw-of-remote-connect")})
    assert given.connect_credentials == ("ragstream", given.connect_password)


def test_the_connector_config_connect_serves_holds_a_placeholder_not_the_password(cdc):
    from infra.cdc import CONNECTOR_NAME, connect_request

    code, config = connect_request(cdc, "GET", f"/connectors/{CONNECTOR_NAME}/config")
    assert code == 200 and config.get("database.password") == f"${{file:{cdc.postgres_password_file}:password}}"
    password = cdc.local_postgres_password.get_secret_value()
    served = [config]
    for path in (f"/connectors/{CONNECTOR_NAME}", f"/connectors/{CONNECTOR_NAME}/tasks", "/connectors?expand=info"):
        code, body = connect_request(cdc, "GET", path)
        assert code == 200
        served.append(body)
    assert password not in json.dumps(served)
    # ...and the worker resolved it: the task streams (the fixture waited for RUNNING).
    assert running_state(cdc) == "RUNNING"
    # Nor is it in what Connect stored (connect.configs), nor in its log.
    stored = read_topic(cdc, "connect.configs")
    assert stored and not any(password.encode() in v for v in stored)
    assert password not in (cdc.home / "logs" / "connect.log").read_text(errors="replace")


def test_a_second_local_user_reaches_neither_postgres_nor_connect(cdc):
    import os
    import pwd
    import uuid

    from infra.cdc import postgres_bin

    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("curl") is None:
        pytest.skip("creating a second Unix user needs root and useradd (and the probe curl)")
    user = f"rsc{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", user], check=True)
    try:
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid

        def as_other(*cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run(list(cmd), capture_output=True, text=True, user=uid, group=gid, extra_groups=[],
                                  cwd="/tmp", env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}, timeout=60)

        for secret in (cdc.postgres_password_file, cdc.connect_credentials_file):
            r = as_other("cat", str(secret))
            assert r.returncode != 0 and "Permission denied" in r.stderr, r.stdout + r.stderr
        for role, dbname in (("postgres", "postgres"), ("ragstream", "ragstream")):
            r = as_other(str(postgres_bin() / "psql"), "-w", "-h", "127.0.0.1", "-p", str(cdc.postgres_port),
                         "-U", role, "-d", dbname, "-c", "SELECT 1")
            assert r.returncode != 0 and "no password supplied" in r.stderr, r.stdout + r.stderr
        r = as_other("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     f"http://127.0.0.1:{cdc.connect_port}/connectors")
        assert r.stdout == "401", r.stdout + r.stderr
    finally:
        subprocess.run(["userdel", user], check=False)


def running_state(s: Settings) -> str:
    from infra.cdc import connector_status

    st = connector_status(s)
    return st["tasks"][0]["state"] if st and st["tasks"] else "none"


def read_topic(s: Settings, topic: str, timeout: float = 30) -> list[bytes]:
    """Every record value of ``topic`` from the start (as the admin principal)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from ragstream.consumer import make_consumer

    reader = make_consumer(s, f"ragstream-test-read-{time.monotonic_ns()}")
    try:
        parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        done: dict[int, int] = {p: -1 for p in parts}
        while any(done[p] < ends[p] - 1 for p in parts) and time.monotonic() < deadline:
            msg = reader.poll(1)
            if msg is None or msg.error():
                continue
            done[msg.partition()] = msg.offset()
            if msg.value():
                values.append(msg.value())
        return values
    finally:
        reader.close()


def test_connect_apply_is_idempotent_and_delete_leaves_no_replication_slot(cdc):
    import subprocess
    import sys

    from infra.stack import settings_env

    env = settings_env(cdc)
    again = subprocess.run([sys.executable, "-m", "ragstream.cli", "connect", "apply"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "ragstream-postgres: unchanged" in again.stderr, again.stderr
    status = subprocess.run([sys.executable, "-m", "ragstream.cli", "connect", "status"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "task 0: RUNNING" in status.stdout, status.stdout + status.stderr
    gone = subprocess.run([sys.executable, "-m", "ragstream.cli", "connect", "delete"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert gone.returncode == 0 and "replication slot dropped" in gone.stderr, gone.stderr
    with db(cdc) as conn:
        assert conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall() == []
        assert conn.execute("SELECT pubname FROM pg_publication").fetchall() == []
    status = subprocess.run([sys.executable, "-m", "ragstream.cli", "connect", "status"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 3 and "not created" in status.stdout


# ------------------------------------------------------- automatic recovery (no stack needed)

class FakeConnect:
    """The two Connect REST calls TaskRecovery makes, answered from a script of states."""

    TRACE = ("org.apache.kafka.connect.errors.ConnectException: Couldn't get timestamp utils\n"
             "\tat io.debezium.connector.postgresql.PostgresConnectorTask.start(PostgresConnectorTask.java:1)\n"
             "Caused by: org.postgresql.util.PSQLException: FATAL: the database system is shutting down\n")

    def __init__(self, name: str) -> None:
        self.name, self.task, self.calls, self.down = name, "RUNNING", [], False

    def __call__(self, method: str, path: str) -> tuple[int, Any]:
        from infra.stack import StackError

        if self.down:
            raise StackError("Kafka Connect does not answer", "start it")
        self.calls.append((method, path))
        if method == "POST":
            return 202, None
        task = {"id": 0, "state": self.task, "worker_id": "w"}
        if self.task == "FAILED":
            task["trace"] = self.TRACE
        return 200, {"name": self.name, "connector": {"state": "RUNNING", "worker_id": "w"}, "tasks": [task]}

    def restarts(self) -> list[str]:
        return [p for m, p in self.calls if m == "POST"]


class FakeLog:
    """Records what TaskRecovery logs: (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str):
        return lambda event, **fields: self.lines.append((level, event, fields))


def recovery(tmp_path: Path, name: str, **overrides: Any):
    from infra.cdc import TaskRecovery
    from ragstream.settings import load_settings

    s = load_settings(home=tmp_path, **{"retry_budget_s": 20, "restart_backoff_s": 1, "restart_backoff_max_s": 4,
                                        "restart_reset_after_s": 30, **overrides})
    clock = {"now": 1000.0}
    fake = FakeConnect(name)
    rec = TaskRecovery(s, name, interval_s=1, request=fake, clock=lambda: clock["now"],
                       textfile=tmp_path / "metrics" / "connect.prom")
    rec.log = FakeLog()

    def step() -> float:
        wait = rec.check()
        clock["now"] += wait
        return wait

    return s, rec, fake, step, clock


def test_a_failed_task_is_restarted_automatically_with_its_reason(tmp_path):
    from infra.cdc import WATCH_REGISTRY, describe_recovery, read_recovery_state

    s, rec, fake, step, _ = recovery(tmp_path, "unit-restart")
    step()
    assert fake.restarts() == []
    fake.task = "FAILED"
    step()
    assert fake.restarts() == ["/connectors/unit-restart/restart?includeTasks=true&onlyFailed=true"]
    state = read_recovery_state(s)
    assert state["restarts"] == 1 and state["watching"] and not state["exhausted"]
    assert state["last"]["reason"] == "org.apache.kafka.connect.errors.ConnectException: Couldn't get timestamp utils"
    assert state["last"]["cause"].endswith("FATAL: the database system is shutting down")
    assert WATCH_REGISTRY.get_sample_value("ragstream_connect_task_restarts_total", {"connector": "unit-restart"}) == 1
    (level, event, fields), = rec.log.lines
    assert (level, event, fields["reason"], fields["what"]) == (
        "warning", "restarting a failed Kafka Connect task", state["last"]["reason"], "task 0")
    assert 'ragstream_connect_task_restarts_total{connector="unit-restart"} 1.0' in (
        tmp_path / "metrics" / "connect.prom").read_text()
    fake.task = "RUNNING"
    step()
    assert len(fake.restarts()) == 1
    assert describe_recovery(read_recovery_state(s))[0].startswith("automatic restarts: on")


def test_restarts_back_off_and_stop_loudly_when_the_budget_is_spent(tmp_path):
    from infra.cdc import WATCH_REGISTRY, describe_recovery, read_recovery_state

    s, rec, fake, step, _ = recovery(tmp_path, "unit-budget")
    fake.task = "FAILED"
    waits = [step() for _ in range(8)]
    assert waits[:4] == [1, 2, 4, 4]  # backoff from RAGSTREAM_RESTART_BACKOFF_S to its maximum
    n = len(fake.restarts())
    assert 3 <= n < 8, waits  # 20 s of budget: a few restarts, then none
    state = read_recovery_state(s)
    assert state["exhausted"] and state["restarts"] == n
    assert WATCH_REGISTRY.get_sample_value("ragstream_connect_restart_budget_exhausted",
                                           {"connector": "unit-budget"}) == 1
    assert [e for lvl, e, _ in rec.log.lines if lvl == "error"] == [
        "AUTOMATIC RESTARTS STOPPED: the connector keeps failing and the retry budget is spent"]
    lines = describe_recovery(state)
    assert lines[0].startswith("AUTOMATIC RESTARTS STOPPED: task 0 failed")
    assert "FATAL: the database system is shutting down" in lines[1]
    assert "ragstream connect restart" in lines[2]
    for _ in range(5):
        step()
    assert len(fake.restarts()) == n, "a spent budget restarts nothing more"
    # The operator fixed the cause and restarted it: recovery is armed again, with a new budget.
    fake.task = "RUNNING"
    step()
    assert not read_recovery_state(s)["exhausted"]
    fake.task = "FAILED"
    step()
    assert len(fake.restarts()) == n + 1


def test_a_stable_run_renews_the_budget_and_connect_down_spends_none(tmp_path):
    s, rec, fake, step, clock = recovery(tmp_path, "unit-renew")
    fake.task = "FAILED"
    step(), step()
    assert rec.budget.attempts == 2
    fake.task = "RUNNING"
    step()
    clock["now"] += 27
    step()
    assert rec.budget.attempts == 2  # not yet stable for restart_reset_after_s
    clock["now"] += 5
    step()
    assert rec.budget.attempts == 0
    fake.down = True
    for _ in range(50):
        step()
    assert rec.budget.attempts == 0 and not rec.exhausted
