"""A SharePoint library through the real pipeline (issue 17, SharePoint's "must show").

SharePoint cannot be reached from here: the library is tests/fakes/sharepoint.py, a local
site that answers SharePoint's REST API, driven by office365-rest-python-client. The source
is declared in a sources file (``RAGSTREAM_SOURCES_FILE``) and re-opened from it, the way
``ragstream verify`` and DLQ replay open it. After each scenario the pipeline drains and
``ragstream verify`` must find no drift between the library and the index.
"""

from __future__ import annotations

import uuid

import pytest

from ragstream.admin import wait_drained
from ragstream.connector import ConnectorError, declared_sources, open_source
from tests.fakes.sharepoint import FakeSharePoint
from tests.test_verify_pipeline import paragraphs, verify

pytestmark = pytest.mark.integration

TOKEN_ENV = "RAGSTREAM_TEST_SP_TOKEN"


def declare(path, source_id: str, site: FakeSharePoint, token_env: str = TOKEN_ENV) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(f'[sources.{source_id}]\nkind = "sharepoint"\nsite_url = "{site.url}"\nlibrary = "{site.library}"\n'
                f'auth = "access_token"\naccess_token_env = "{token_env}"\npage_size = 2\n\n')


def cli(s, monkeypatch, *args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from infra.stack import settings_env
    from ragstream.cli import cli as ragstream
    from ragstream.settings import get_settings

    for k, v in settings_env(s).items():
        if k.startswith("RAGSTREAM_"):
            monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(ragstream, list(args))
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


def drained_without_drift(s, monkeypatch, source_id: str, indexed: int) -> dict:
    assert wait_drained(s, timeout=300)
    code, report = verify(s, monkeypatch, source_id)
    assert (code, report["drift"], report["sources"][0]["indexed"]) == (0, 0, indexed), report
    return report


def test_a_sharepoint_library_through_the_pipeline(pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "good-token")
    sources_file = tmp_path / "sources.toml"
    source_id = f"sp-{uuid.uuid4().hex[:6]}"
    s = pipeline.model_copy(update={"sources_file": sources_file})
    with FakeSharePoint() as site:
        declare(sources_file, source_id, site)
        alice, bob = site.user("alice@contoso.com"), site.user("bob@contoso.com")
        finance = site.directory_group("5a1e7c2d-0000-4000-8000-00000000f1f1", "Finance")

        # Initial sync: three documents (one with its own permissions, claim login names
        # included), an image that is not a document; two pages of items.
        a = site.add_file("plan.md", "# Plan\n\n" + paragraphs(171, 3))
        b = site.add_file("budget.txt", paragraphs(172, 3), readers=[(alice, "Read"), (finance, "Contribute")])
        c = site.add_file("notes.html", "<h1>Notes</h1><p>" + paragraphs(173, 2) + "</p>")
        site.add_file("logo.png", b"\x89PNG\r\n\x1a\n\x00\x00")
        (src,) = declared_sources(s)  # as `ragstream up` and `ragstream sources sync` open it
        stats = src.sync()
        assert (stats.added, stats.skipped_by_reason) == (3, {"unsupported": 1})
        report = drained_without_drift(s, monkeypatch, source_id, 3)
        assert report["sources"][0]["counts"]["skipped"] == 1

        # Create, modify, rename, delete: one incremental sync from the change token.
        listings = site.count("GET", "/items?")
        d = site.add_file("minutes.md", "# Minutes\n\n" + paragraphs(174, 2))
        site.update_file(a, "# Plan, revised\n\n" + paragraphs(175, 3))
        site.rename(c, "meeting notes.html")
        site.delete(b)
        stats = src.sync()
        assert (stats.added, stats.changed, stats.deleted) == (1, 2, 1)
        assert site.count("GET", "/items?") == listings  # followed the change log, listed nothing
        drained_without_drift(s, monkeypatch, source_id, 3)

        # A permission change: the new ACL goes to rag.acl, nothing to rag.changes (no re-embedding).
        site.set_permissions(d, [(bob, "Read"), (site.claim("c:0(.s|true", "Everyone"), "Limited Access")])
        downloads = site.count("GET", "$value")
        stats = src.sync()
        assert (stats.permission_only, stats.added + stats.changed) == (1, 0)
        assert site.count("GET", "$value") == downloads  # the content was not even read again
        drained_without_drift(s, monkeypatch, source_id, 3)

        # Restart: a new instance, opened from its cursor and the sources file, resumes from
        # the saved change token.
        site.update_file(d, "# Minutes\n\n" + paragraphs(176, 2))
        listings = site.count("GET", "/items?")
        again = open_source(s, source_id)
        stats = again.sync()
        assert (stats.changed, again.full_syncs, site.count("GET", "/items?")) == (1, 0, listings)
        drained_without_drift(s, monkeypatch, source_id, 3)

        # An expired change token: a full resync that publishes only what differs.
        e = site.add_file("extra.md", "# Extra\n\n" + paragraphs(177, 2))
        site.delete(a)
        site.set_permissions(c, [(alice, "Edit")])
        site.expire_change_log()
        stats = again.sync()
        assert again.full_syncs == 1
        assert (stats.added, stats.deleted, stats.permission_only, stats.changed) == (1, 1, 1, 0)
        assert again.sync().published == 0  # and the new token is followed again
        drained_without_drift(s, monkeypatch, source_id, 3)

        # Throttling: 429 and 503 with Retry-After are waited out, then the sync goes on.
        site.update_file(e, "# Extra\n\n" + paragraphs(178, 2))
        site.throttle(2, 429, retry_after=1, path="getchanges")
        site.throttle(1, 503, retry_after=1, path="/file")
        stats = again.sync()
        assert (stats.changed, site.throttled, again.client.throttle_waits) == (1, 3, 3)
        drained_without_drift(s, monkeypatch, source_id, 3)

        # Wrong credentials: a clear error, nothing published, the cursor untouched.
        monkeypatch.setenv(TOKEN_ENV, "expired-token")
        wrong = open_source(s, source_id)
        with pytest.raises(ConnectorError, match="refused the credentials"):
            wrong.test_connection()
        with pytest.raises(ConnectorError, match="refused the credentials"):
            wrong.sync()
        code, out = cli(s, monkeypatch, "sources", "test", source_id)
        assert code != 0 and "refused the credentials" in out and "expired-token" not in out
        monkeypatch.setenv(TOKEN_ENV, "good-token")
        drained_without_drift(s, monkeypatch, source_id, 3)
