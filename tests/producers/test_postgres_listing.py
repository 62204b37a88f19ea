"""The postgres source's full listing against a real PostgreSQL (the machine's, started by
infra/cdc.py): every mapped row, mapped exactly as normalize maps it."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from infra.stack import free_port
from producers.postgres import PostgresSource
from ragstream.connector import Excluded, ListedDocument
from tests import leaks
from ragstream.settings import Settings, load_settings
from schemas.events import ChangeEvent
from schemas.serde import decode
from streams.normalize import DebeziumChange, NormalizeStage, PgLookups

pytestmark = pytest.mark.integration

MAPPING = """
source = "listing-db"

[[tables]]
table = "public.articles"
text = ["title", "body"]
uri = "https://intranet.example/articles/{id}"
acl = { column = "readers", kind = "group" }

[[tables]]
table = "public.tickets"
id = ["ticket_no"]
text = ["subject"]
acl = { table = "public.ticket_readers", key = "ticket_no", principal = "principal" }

[[tables]]
table = "public.notes"
text = ["body"]
acl = { principals = ["group:staff"] }

[[tables]]
table = "public.not_yet_created"
text = ["body"]
"""
SCHEMA = """
CREATE TABLE articles (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL, readers text[]);
CREATE TABLE tickets (ticket_no text PRIMARY KEY, subject text NOT NULL);
CREATE TABLE ticket_readers (ticket_no text, principal text, PRIMARY KEY (ticket_no, principal));
CREATE TABLE notes (id text, body text);
INSERT INTO articles VALUES (1, 'Travel', 'Meals up to 40 EUR.', '{eng,user:ann}'),
                            (2, 'Secret', 'Nobody may read this.', NULL),
                            (3, 'Broken', 'Readers with a blank.', '{"has space"}');
INSERT INTO tickets VALUES ('HD/7', 'Badge reader broken'), ('HD-8', 'No readers yet');
INSERT INTO ticket_readers VALUES ('HD/7', 'group:facilities'), ('HD/7', 'user:bo');
INSERT INTO notes VALUES ('n1', 'A note'), (NULL, 'A note without an id');
"""


@pytest.fixture(scope="module")
def db() -> Iterator[tuple[Settings, Path]]:
    import psycopg

    from infra.cdc import Postgres

    # PostgreSQL runs as the postgres user, which cannot enter pytest's 0700 temp folders.
    home = Path(tempfile.mkdtemp(prefix="ragstream-pg-listing-", dir="/tmp"))
    mapping = home / "mapping.toml"
    mapping.write_text(MAPPING)
    s = load_settings(home=home, postgres_port=free_port(), cdc_mapping_file=mapping)
    pg = Postgres(s)
    try:
        pg.start()
        with psycopg.connect(s.resolved_cdc_dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)
        yield s, mapping
    finally:
        pg.stop()
        leaks.check_then_remove(home)  # its logs and secrets go to the session-end leak check first


class NoPublisher:
    def flush(self) -> None:
        pass


def test_listing_maps_every_row_as_normalize_does(db) -> None:
    import psycopg
    from psycopg.rows import dict_row

    s, mapping = db
    src = PostgresSource(s, mapping, publisher=NoPublisher())
    listing = list(src.full_listing())
    docs = {d.doc_id: d for d in listing if isinstance(d, ListedDocument)}
    excluded = {d.doc_id: d for d in listing if isinstance(d, Excluded)}
    assert docs == {
        "listing-db:public.articles/1": ListedDocument("listing-db:public.articles/1", None, ("group:eng", "user:ann")),
        "listing-db:public.articles/2": ListedDocument("listing-db:public.articles/2", None, ()),
        "listing-db:public.tickets/HD%2F7": ListedDocument("listing-db:public.tickets/HD%2F7", None,
                                                           ("group:facilities", "user:bo")),
        "listing-db:public.tickets/HD-8": ListedDocument("listing-db:public.tickets/HD-8", None, ()),
        "listing-db:public.notes/n1": ListedDocument("listing-db:public.notes/n1", None, ("group:staff",)),
    }
    assert set(excluded) == {"listing-db:public.articles/3", "listing-db:public.notes/(no id)"}
    assert all(e.kind == "dead_lettered" for e in excluded.values())
    assert "invalid principal" in excluded["listing-db:public.articles/3"].reason

    # The same rows through normalize (as a snapshot read): the same doc_ids and readers.
    stage = NormalizeStage(src.mapping, lookups=PgLookups(s.resolved_cdc_dsn))
    with psycopg.connect(s.resolved_cdc_dsn, row_factory=dict_row) as conn:
        for table in ("articles", "tickets", "notes"):
            for row in conn.execute(f"SELECT * FROM {table}").fetchall():
                change = DebeziumChange.model_validate({"op": "r", "after": row, "source": {
                    "schema": "public", "table": table, "lsn": 100}})
                try:
                    (out,) = stage.process(change)
                except Exception:  # noqa: BLE001 - normalize dead-letters what the listing excludes
                    continue
                event = decode(ChangeEvent, out.value)
                assert event.doc_id in docs and docs[event.doc_id].acl == event.acl.principals


def test_verify_report_counts_the_excluded_rows_as_not_drift(db) -> None:
    from ragstream.verify import compare

    s, mapping = db
    report = compare("listing-db", PostgresSource(s, mapping, publisher=NoPublisher()).full_listing(),
                     {}, {}, {}, lambda d, t: set())
    assert report.counts()["missing"] == 5 and report.counts()["dead_lettered"] == 2


def test_connection_counts_the_mapped_rows(db) -> None:
    s, mapping = db
    said = PostgresSource(s, mapping, publisher=NoPublisher()).test_connection()
    assert said.startswith("public.articles 3 row(s); public.tickets 2 row(s); public.notes 2 row(s); "
                           "public.not_yet_created missing"), said


def test_the_local_postgres_refuses_a_connection_without_the_password(db, monkeypatch) -> None:
    """scram-sha-256 for every connection (docs/security.md): the roles exist, but neither the
    superuser nor the connector's role gets in without its password, or with a wrong one; the
    project's clients get it from the one place (Settings.resolved_cdc_dsn)."""
    import stat

    import psycopg

    from infra.cdc import Postgres, postgres_bin

    s, _ = db
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # no ~/.pgpass either
    port = s.postgres_port
    for user, dbname in (("postgres", "postgres"), ("ragstream", "ragstream")):
        for auth in (user, f"{user}:wrong-{user}"):
            with pytest.raises(psycopg.OperationalError) as refused:
                psycopg.connect(f"postgresql://{auth}@127.0.0.1:{port}/{dbname}", connect_timeout=5).close()
            assert "no password supplied" in str(refused.value) or "password authentication failed" in str(
                refused.value), str(refused.value)
    # The server's own client, as any local user would try it (-w: never prompt).
    psql = subprocess.run([str(postgres_bin() / "psql"), "-w", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                           "-c", "SELECT 1"], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "PGPASSFILE": "/nonexistent"})
    assert psql.returncode != 0 and "password" in psql.stderr, psql.stderr

    from infra.cdc import PG_HBA

    password = s.local_postgres_password
    assert password is not None and password.get_secret_value() in s.resolved_cdc_dsn
    assert password.get_secret_value() not in s.cdc_dsn_shown + repr(s) + repr(password)
    with psycopg.connect(s.resolved_cdc_dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("ragstream",)
    with psycopg.connect(Postgres(s).dsn(), connect_timeout=5) as conn:
        stored = dict(conn.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN "
                                   "('postgres', 'ragstream')").fetchall())
    assert set(stored) == {"postgres", "ragstream"}
    assert all(v.startswith("SCRAM-SHA-256$4096:") for v in stored.values())  # verifiers, not passwords
    assert (s.home / "postgres" / "pg_hba.conf").read_text() == PG_HBA and "trust" not in PG_HBA
    for path in (s.postgres_password_file, Postgres(s).superuser_password_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(s.postgres_password_file.parent.stat().st_mode) == 0o700


def test_a_configured_dsn_is_used_as_given_and_never_shown() -> None:
    given = load_settings(cdc_dsn="postgresql://capture:pw-given-123@db.internal:5432/erp")
    assert given.resolved_cdc_dsn == "postgresql://capture:pw-given-123@db.internal:5432/erp"
    assert given.cdc_dsn_shown == "postgresql://capture:***@db.internal:5432/erp"
    assert "pw-given-123" not in repr(given)
    keyword = load_settings(cdc_dsn="host=db.internal user=capture password=pw-given-123")
    assert "pw-given-123" not in keyword.cdc_dsn_shown
    query = load_settings(cdc_dsn="postgresql://capture:pw-given-123@[::1]:5432/erp?sslpassword=key-pw-456")
    assert query.cdc_dsn_shown == "postgresql://capture:***@[::1]:5432/erp?***"
