"""The postgres source connector: its cursor, what it refuses, and how ``verify`` checks a
listing without versions. The listing against a real PostgreSQL is in
tests/producers/test_postgres_listing.py; end to end in tests/test_cdc_pipeline.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.postgres import CONNECTOR, PostgresSource
from ragstream.connector import (
    Capability,
    ConnectorError,
    Excluded,
    ListedDocument,
    connector_classes,
    known_sources,
    open_source,
)
from ragstream.settings import load_settings
from ragstream.verify import Compliant, IndexedDocument, compare

MAPPING = """
source = "crm-db"
[[tables]]
table = "public.articles"
text = ["body"]
acl = { column = "readers", kind = "group" }
"""


class NoPublisher:
    def flush(self) -> None:
        pass


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(home=tmp_path / "home")


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    p = tmp_path / "mapping.toml"
    p.write_text(MAPPING)
    return p


def test_declares_only_the_full_listing(settings) -> None:
    assert CONNECTOR is PostgresSource and connector_classes(settings)["postgres"] is PostgresSource
    assert PostgresSource.capabilities == frozenset({Capability.full_listing})


def test_register_writes_a_cursor_that_verify_finds_and_reopens(settings, mapping_file: Path) -> None:
    path = PostgresSource.register(settings, mapping_file)
    assert path == settings.home / "sources" / "crm-db.json"
    assert json.loads(path.read_text())["identity"] == {"mapping": str(mapping_file.resolve())}
    assert PostgresSource.register(settings, mapping_file) == path  # idempotent
    assert known_sources(settings) == {"crm-db": "postgres"}
    src = open_source(settings, "crm-db", publisher=NoPublisher())
    assert isinstance(src, PostgresSource) and src.mapping.tables[0].table == "public.articles"
    assert src.dsn == settings.resolved_cdc_dsn


def test_register_follows_a_moved_mapping_but_not_another_kind_of_source(settings, mapping_file: Path,
                                                                        tmp_path: Path) -> None:
    PostgresSource.register(settings, mapping_file)
    moved = tmp_path / "elsewhere.toml"
    moved.write_text(MAPPING)
    PostgresSource.register(settings, moved)
    assert json.loads((settings.home / "sources" / "crm-db.json").read_text())["identity"]["mapping"] == str(moved)
    (settings.home / "sources" / "crm-db.json").write_text(json.dumps(
        {"kind": "filesystem", "identity": {"root": "/srv"}, "items": {}, "skipped": {}, "position": {}}))
    with pytest.raises(ConnectorError, match="already a filesystem source"):
        PostgresSource.register(settings, mapping_file)


def test_sync_publishes_nothing_and_reread_says_where_changes_come_from(settings, mapping_file: Path) -> None:
    src = PostgresSource(settings, mapping_file, publisher=NoPublisher())
    assert src.sync().published == 0
    with pytest.raises(ConnectorError, match="Debezium"):
        src.reread(["crm-db:public.articles/1"])


def test_a_missing_mapping_is_a_connector_error(settings, tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="does not exist"):
        PostgresSource(settings, tmp_path / "gone.toml", publisher=NoPublisher())


# ------------------------------------------------------------------ verify without versions

def chunk_ids(doc_id: str, text: str) -> set[str]:
    return {f"{doc_id}#{w}" for w in text.split()}


def indexed(version: int, text: str, doc: str, acl: str = "|group:eng|", deleted: bool = False,
            rows_version: int | None = None) -> IndexedDocument:
    rows = [] if deleted else [{"chunk_id": c, "version": rows_version or version, "acl": acl}
                               for c in chunk_ids(doc, text)]
    return IndexedDocument(version, version, deleted, rows)


def listed(doc: str, acl: tuple[str, ...] = ("group:eng",)) -> ListedDocument:
    return ListedDocument(doc, None, acl, changed_since_published=False)


def test_a_listing_without_versions_is_checked_for_presence_chunks_and_acl() -> None:
    a, b, c, d, e, f, g = (f"db:public.t/{i}" for i in "abcdefg")
    index = {a: indexed(900, "alpha beta", a),  # as it should be (any version: LSNs are unknown here)
             b: indexed(901, "beta", b, acl="|group:ops|"),  # readers changed, not applied
             c: indexed(902, "gamma", c),  # chunk rows do not match rag.documents
             d: indexed(903, "delta", d, deleted=True),  # deleted in the index, still in the table
             f: indexed(904, "phi", f),  # gone from the table
             g: indexed(905, "gee", g, rows_version=906)}  # rows above the version the registry applied
    compliant = {a: Compliant(900, False, "alpha beta"), b: Compliant(901, False, "beta"),
                 c: Compliant(902, False, "gamma changed"), d: Compliant(903, True, None),
                 f: Compliant(904, False, "phi"), g: Compliant(905, False, "gee")}
    listing = [listed(a), listed(b), listed(c), listed(d), listed(e), listed(g),
               Excluded("db:public.t/(no id)", "dead_lettered", "normalize: id column 'id' is NULL")]
    report = compare("db", listing, index, compliant, {}, chunk_ids)
    got = {x.doc_id: (x.kind, x.reason) for x in report.findings}
    assert a not in got
    assert got[b][0] == "stale" and "ACL" in got[b][1]
    assert got[c][0] == "stale" and "chunk ids differ" in got[c][1]
    assert got[d] == ("missing", "deleted in the index at version 903 (a change not applied, or the compliance "
                                 "policy blocks it: audit compliance.block)")
    assert got[e] == ("missing", "not in the index")
    assert got[f][0] == "orphan"
    assert got[g][0] == "stale" and "rows of version(s) [906] above the applied version 905" in got[g][1]
    assert got["db:public.t/(no id)"][0] == "dead_lettered"
    assert (report.listed, len(report.drift)) == (6, 6)


def test_versioned_listings_are_still_checked_by_version() -> None:
    a = "fs:a.md"
    index = {a: indexed(5, "alpha", a)}
    compliant = {a: Compliant(5, False, "alpha")}
    assert compare("fs", [ListedDocument(a, 5, ("group:eng",))], index, compliant, {}, chunk_ids).findings == []
    stale = compare("fs", [ListedDocument(a, 6, ("group:eng",))], index, compliant, {}, chunk_ids).findings
    assert [(x.kind, x.reason) for x in stale] == [("stale", "the index applied version 5; the source published 6")]
    new = compare("fs", [ListedDocument("fs:b.md", None, ("group:eng",), changed_since_published=True)],
                  {}, {}, {}, chunk_ids).findings
    assert [(x.kind, x.reason) for x in new] == [("missing", "changed at the source and not published yet")]
