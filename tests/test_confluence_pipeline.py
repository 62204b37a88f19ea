"""The Confluence source end to end: a local Confluence REST site (tests/fakes/confluence.py)
read through atlassian-python-api, the real pipeline and ``ragstream verify`` — drift 0 after
each scenario: initial sync (a restricted parent, a child inheriting its restriction,
attachments, one of them corrupt); create, modify and rename found by CQL, a delete found
by reconciliation; a restriction change on the parent reaching the index as ACLs only; a
restart that resumes from the cursor; an invalid position and a lost cursor resynced without
duplicates; throttling waited out; wrong credentials refused clearly.

Few, small pages: the module takes about a minute once the pipeline runs.
"""

from __future__ import annotations

import json
import uuid

import pytest

from producers.confluence import ConfluenceConfig, ConfluenceSource
from ragstream.admin import wait_drained
from ragstream.connector import ConnectorError, open_source
from tests.fakes.confluence import FakeConfluence
from tests.test_verify_pipeline import findings, paragraphs, verify

pytestmark = pytest.mark.integration

TOKEN_ENV = "RAGSTREAM_TEST_CONFLUENCE_TOKEN"
CORRUPT_PDF = b"%PDF-1.4\n1 0 obj not a pdf at all\n"


def checked(settings, monkeypatch, source_id: str, indexed: int) -> dict:
    assert wait_drained(settings, timeout=300)
    code, report = verify(settings, monkeypatch, source_id)
    assert (code, report["drift"], report["sources"][0]["indexed"]) == (0, 0, indexed), findings(report)
    return report


def html(seed: int, n: int = 2) -> str:
    return "".join(f"<p>{p}</p>" for p in paragraphs(seed, n).split("\n\n"))


def test_a_confluence_space_through_the_pipeline_and_verify(pipeline, monkeypatch):
    s = pipeline
    monkeypatch.setenv(TOKEN_ENV, "good-token")
    with FakeConfluence(timezone_name="America/New_York") as site:
        site.add_user("alice", "confluence-users", "hr")
        site.add_user("bob", "confluence-users")
        site.add_space("ENG", "Engineering")
        parent = site.add_page("ENG", "People", html(21), read_groups=("hr",))
        child = site.add_page("ENG", "Salaries", html(22), parent=parent)  # inherits the restriction
        public = site.add_page("ENG", "Handbook", html(23))
        notes = site.add_attachment(public, "notes.md", ("# Notes\n\n" + paragraphs(24, 2)).encode(), "text/markdown")
        pdf = site.add_attachment(public, "report.pdf", CORRUPT_PDF, "application/pdf")
        cfg = ConfluenceConfig(url=site.url, space="ENG", auth="token", token_env=TOKEN_ENV,
                               timezone="America/New_York")
        src = ConfluenceSource(s, cfg, f"wiki-{uuid.uuid4().hex[:6]}")

        # initial sync
        stats = src.sync()
        assert (stats.added, stats.failed) == (4, 1)
        assert src.cursor.items[child]["acl"] == ["user:confluence/alice"]
        report = checked(s, monkeypatch, src.source_id, 4)
        assert findings(report)[src.doc_id(f"{public}/{pdf}")][0] == "dead_lettered"
        assert src.cursor.items[f"{public}/{notes}"]["acl"] == ["group:confluence/confluence-users"]

        # create, modify, rename: one CQL query; a delete: found by reconciliation
        created = site.add_page("ENG", "Onboarding", html(25))
        site.edit(public, body=html(26))
        site.edit(child, title="Salaries 2026")
        stats = src.sync()
        assert (src.last_mode, stats.added, stats.changed) == ("incremental", 1, 2)
        checked(s, monkeypatch, src.source_id, 5)
        site.delete(created)
        stats = src.reconcile()
        assert stats.deleted == 1
        checked(s, monkeypatch, src.source_id, 4)

        # a restriction change on the parent: the child's inherited ACL too, nothing re-embedded
        site.restrict(parent, users=("alice", "bob"))
        reads = site.count("expand=body.storage")
        stats = src.reconcile()
        assert (stats.permission_only, stats.added + stats.changed, site.count("expand=body.storage") - reads) == (2, 0, 0)
        assert src.cursor.items[child]["acl"] == ["user:confluence/alice", "user:confluence/bob"]
        checked(s, monkeypatch, src.source_id, 4)  # verify compares the index's ACL with the site's

        # throttled while syncing: Retry-After waited out within the budget
        site.edit(public, body=html(27))
        site.throttle(2, retry_after=1)
        stats = src.sync()
        assert stats.changed == 1 and [(st, d) for _, st, d in src.client.retries] == [("429", 1.0), ("429", 1.0)]
        checked(s, monkeypatch, src.source_id, 4)

        # a restart resumes from the saved cursor: an incremental query, nothing read or published
        again = open_source(s, src.source_id)
        before = len(site.requests)
        stats = again.sync()
        searches = [p for _, p in site.requests[before:] if "/rest/api/search" in p]
        assert (again.last_mode, stats.published, len(searches)) == ("incremental", 0, 1)
        assert "lastmodified" in searches[0]
        checked(s, monkeypatch, src.source_id, 4)

        # an invalid position: a reconciliation that publishes nothing unchanged
        path = s.home / "sources" / f"{src.source_id}.json"
        data = json.loads(path.read_text())
        data["position"]["cql"]["since"] = "not a time"
        path.write_text(json.dumps(data))
        again = open_source(s, src.source_id)
        stats = again.sync()
        assert (again.last_mode, stats.published) == ("reconcile", 0)
        checked(s, monkeypatch, src.source_id, 4)

        # the cursor is lost: a full resync, each document once
        path.unlink()
        fresh = ConfluenceSource(s, cfg, src.source_id)
        stats = fresh.sync()
        assert (stats.added, stats.published) == (4, 4)
        checked(s, monkeypatch, src.source_id, 4)  # 4 documents indexed, none twice

        # wrong credentials: a clear error
        monkeypatch.setenv(TOKEN_ENV, "expired-token")
        wrong = ConfluenceSource(s, cfg, f"wiki-{uuid.uuid4().hex[:6]}")
        with pytest.raises(ConnectorError, match="refused the credentials"):
            wrong.test_connection()
