"""The Confluence source against a local Confluence REST site (tests/fakes/confluence.py)
driven by atlassian-python-api. The broker is replaced by a publisher that acknowledges at
flush (or not, where a test says so); the pipeline test is tests/test_confluence_pipeline.py."""

from __future__ import annotations

import json

import pytest

from producers.confluence import ConfluenceConfig, ConfluenceSource
from producers.confluence.client import ConfluenceUnavailable
from producers.confluence.storage import storage_to_text
from ragstream.connector import ConnectorError, declared_sources, open_source
from ragstream.settings import load_settings
from schemas import topics
from tests.fakes.confluence import FakeConfluence

TOKEN_ENV = "RAGSTREAM_TEST_CONFLUENCE_TOKEN"
CORRUPT_PDF = b"%PDF-1.4\n1 0 obj not a pdf at all\n"


class RecordingPublisher:
    """Acknowledges every event at flush, like the broker would (``fail``: refuses them)."""

    def __init__(self):
        self.events, self.letters, self._callbacks, self.fail = [], [], [], False

    def publish(self, topic, event, on_delivery=None):
        self.events.append((topic, event))
        if on_delivery:
            self._callbacks.append(on_delivery)

    def dead_letter(self, stage, **kw):
        self.letters.append((stage, kw))

    def flush(self):
        for cb in self._callbacks:
            cb("broker down" if self.fail else None, None)
        self._callbacks.clear()

    def take(self):
        out, self.events = self.events, []
        return out


class Clock:
    def __init__(self, t: float = 1_790_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def tick(self, s: float = 1.0) -> None:
        self.t += s


@pytest.fixture
def site(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "good-token")
    with FakeConfluence(timezone_name="Europe/Berlin") as f:
        f.add_user("alice", "confluence-users", "hr")
        f.add_user("bob", "confluence-users")
        f.add_user("carol", "confluence-users", "hr")
        f.add_space("ENG", "Engineering", readers=("group:confluence-users",))
        yield f


def config(site, **kw) -> ConfluenceConfig:
    return ConfluenceConfig.model_validate({"url": site.url, "space": "ENG", "auth": "token", "token_env": TOKEN_ENV,
                                            "timezone": "Europe/Berlin", **kw})


def make(tmp_path, site, source_id="wiki", **kw):
    pub = RecordingPublisher()
    src = ConfluenceSource(load_settings(home=tmp_path / "home"), config(site, **kw), source_id, publisher=pub)
    src.client.sleep = lambda s: None  # throttling waits are asserted, not slept
    return src, pub


def ops(events):
    return sorted((t.split(".")[-1], e.doc_id, getattr(getattr(e, "op", None), "value", "acl")) for t, e in events)


def page_reads(site) -> int:
    return site.count("expand=body.storage")


# -- initial sync, create, modify, rename, delete -------------------------------------------------
def test_initial_sync_pages_blog_posts_and_attachments(tmp_path, site):
    home = site.add_page("ENG", "Home", "<p>Welcome to <strong>engineering</strong>.</p>")
    guide = site.add_page("ENG", "Guide", '<h2>Setup</h2><ac:structured-macro ac:name="code"><ac:parameter '
                          'ac:name="language">bash</ac:parameter><ac:plain-text-body><![CDATA[make <all>]]>'
                          "</ac:plain-text-body></ac:structured-macro>", parent=home)
    site.add_page("ENG", "Release notes", "<p>Version 2 is out.</p>", type="blogpost")
    site.add_space("OTHER")
    site.add_page("OTHER", "Elsewhere", "<p>not this space</p>")  # another space: not selected
    notes = site.add_attachment(guide, "notes.md", b"# Notes\n\nattached text", "text/markdown")
    site.add_attachment(guide, "photo.png", bytes(range(256)), "image/png")
    site.add_attachment(guide, "report.pdf", CORRUPT_PDF, "application/pdf")
    src, pub = make(tmp_path, site)
    stats = src.sync()
    assert src.last_mode == "reconcile"
    assert (stats.added, stats.failed, stats.skipped_by_reason) == (4, 1, {"unsupported": 1})
    events = {e.doc_id: e for _, e in pub.take()}
    assert set(events) == {f"wiki:{home}", f"wiki:{guide}", f"wiki:{guide}/{notes}",
                           *(f"wiki:{c.id}" for c in site.contents.values() if c.type == "blogpost")}
    g = events[f"wiki:{guide}"]
    assert g.content.text.startswith("# Guide") and "make <all>" in g.content.text and "bash" not in g.content.text
    assert (g.metadata.title, g.acl.principals) == ("Guide", ("group:confluence/confluence-users",))
    assert g.metadata.uri == f"{site.url}/spaces/ENG/pages/{guide}/Guide"
    assert events[f"wiki:{guide}/{notes}"].content.text.startswith("# Notes")
    assert pub.letters and pub.letters[0][1]["key"].endswith("/" + next(
        c.id for c in site.contents.values() if c.title == "report.pdf"))

    # nothing changed: an incremental query, nothing read, nothing published
    reads = page_reads(site)
    stats = src.sync()
    assert (src.last_mode, stats.published, page_reads(site) - reads) == ("incremental", 0, 0)
    assert "lastmodified" in site.requests[-1][1]


def test_create_modify_rename_incrementally_and_delete_by_reconciliation(tmp_path, site):
    a = site.add_page("ENG", "Alpha", "<p>first</p>")
    b = site.add_page("ENG", "Bravo", "<p>bravo</p>")
    src, pub = make(tmp_path, site)
    src.sync()
    pub.take()
    site.clock = Clock(site.clock() + 5)  # later edits
    c = site.add_page("ENG", "Charlie", "<p>new</p>")  # create
    site.edit(a, body="<p>second</p>")  # modify
    site.edit(b, title="Bravo renamed")  # rename: a new version, same id
    searches = site.count("/rest/api/search")
    stats = src.sync()
    assert src.last_mode == "incremental"
    assert (stats.added, stats.changed, stats.deleted) == (1, 2, 0)
    assert site.count("/rest/api/search") - searches == 1  # one CQL query (attachments included), no listing
    events = {e.doc_id: e for _, e in pub.take()}
    assert events[f"wiki:{b}"].metadata.title == "Bravo renamed" and "second" in events[f"wiki:{a}"].content.text
    assert set(events) == {f"wiki:{a}", f"wiki:{b}", f"wiki:{c}"}

    site.delete(c)  # never appears in a search: found by reconciliation only
    assert src.sync().deleted == 0
    stats = src.reconcile()
    assert (stats.deleted, stats.published) == (1, 1)
    assert ops(pub.take()) == [("changes", f"wiki:{c}", "delete")]
    assert set(src.cursor.items) == {a, b}


def test_overlap_window_and_minute_precision_dedupe_by_id_and_version(tmp_path, site):
    clock = site.clock = Clock(1_790_000_000.0 + 20)  # 20 s into a minute
    a = site.add_page("ENG", "Alpha", "<p>one</p>")
    src, pub = make(tmp_path, site)
    src.sync()
    pub.take()
    clock.tick(10)  # same minute as the position: CQL cannot tell "after" from "before" within it
    site.edit(a, body="<p>two</p>")
    q0 = len(site.requests)
    stats = src.sync()
    assert stats.changed == 1
    cql = next(p for _, p in site.requests[q0:] if "/rest/api/search" in p)
    assert "lastmodified" in cql and "%3E%3D" in cql  # >= a minute, ten minutes earlier (overlap_s)
    pub.take()
    # found again through the overlap window, the same (id, version): not read, not published
    reads = page_reads(site)
    stats = src.sync()
    assert (stats.published, stats.unchanged, page_reads(site) - reads) == (0, 1, 0)


# -- permissions -----------------------------------------------------------------------------------
def test_restrictions_inherit_from_ancestors_and_changes_are_acl_only(tmp_path, site):
    parent = site.add_page("ENG", "HR", "<p>hr home</p>", read_groups=("hr",))
    child = site.add_page("ENG", "Salaries", "<p>salaries</p>", parent=parent)
    grandchild = site.add_page("ENG", "Bonus", "<p>bonus</p>", parent=child, read_users=("alice", "bob"))
    open_page = site.add_page("ENG", "Open", "<p>open</p>")
    att = site.add_attachment(child, "plan.txt", b"the plan", "text/plain")
    src, pub = make(tmp_path, site)
    src.sync()
    acls = {e.doc_id: e.acl.principals for _, e in pub.take()}
    hr = ("user:confluence/alice", "user:confluence/carol")  # the space grants confluence-users, not hr:
    assert acls == {                                          # hr's members, each checked against both
        f"wiki:{parent}": hr,
        f"wiki:{child}": hr,  # inherited from its parent
        f"wiki:{child}/{att}": hr,  # an attachment: its page's readers
        f"wiki:{grandchild}": ("user:confluence/alice",),  # bob is named but not in hr: out
        f"wiki:{open_page}": ("group:confluence/confluence-users",),
    }

    # the parent's restriction changes: no new version, found by reconciliation, ACL only
    site.restrict(parent, users=("carol",))
    reads = page_reads(site)
    stats = src.sync()  # incremental: a restriction changes no lastmodified
    assert stats.published == 0
    stats = src.reconcile()
    assert (stats.permission_only, stats.added + stats.changed + stats.deleted) == (4, 0)
    assert page_reads(site) == reads  # nothing read again, nothing re-embedded
    events = pub.take()
    assert {t for t, _ in events} == {topics.ACL}
    assert {e.doc_id: e.acl.principals for _, e in events} == {
        f"wiki:{parent}": ("user:confluence/carol",), f"wiki:{child}": ("user:confluence/carol",),
        f"wiki:{child}/{att}": ("user:confluence/carol",),
        f"wiki:{grandchild}": ()}  # alice and bob are not carol: nobody (fail closed)

    # a group granted the space and named at every level stays a group
    site.set_space_readers("ENG", ("group:confluence-users", "group:hr"))
    site.restrict(parent, groups=("hr",))
    site.restrict(grandchild, groups=("hr",), users=("bob",))
    src.reconcile()
    acls = {e.doc_id: e.acl.principals for _, e in pub.take()}
    assert acls[f"wiki:{grandchild}"] == ("group:confluence/hr",) and acls[f"wiki:{parent}"] == ("group:confluence/hr",)


def test_space_permissions_users_by_key_and_anonymous(tmp_path, site):
    site.set_space_readers("ENG", ("user:bob", "group:eng leads", "anonymous"))
    p = site.add_page("ENG", "Open", "<p>x</p>")
    src, pub = make(tmp_path, site)
    src.sync()
    [(_, e)] = pub.take()
    assert e.acl.principals == ("group:confluence/eng%20leads", "user:confluence/bob")  # anonymous: nobody
    src2, pub2 = make(tmp_path, site, source_id="wiki2", anonymous_is_public=True, directory="corp")
    src2.sync()
    assert pub2.take()[0][1].acl.principals == ("group:corp/eng%20leads", "public", "user:corp/bob")
    assert p in src.cursor.items


def test_unreadable_restrictions_fail_closed(tmp_path, site):
    p = site.add_page("ENG", "Secret", "<p>secret</p>")
    src, pub = make(tmp_path, site)
    src.sync()
    pub.take()
    site.forbidden_restrictions.add(p)
    stats = src.reconcile()
    assert (stats.deleted, stats.skipped_by_reason) == (1, {"unreadable": 1})
    assert ops(pub.take()) == [("changes", f"wiki:{p}", "delete")]
    listed = list(src.full_listing())
    assert [(x.doc_id, x.kind) for x in listed] == [(f"wiki:{p}", "skipped")]
    site.forbidden_restrictions.clear()  # readable again: published again
    assert src.reconcile().added == 1


def test_truncated_restriction_lists_are_read_in_full(tmp_path, site):
    site.restriction_limit = 1
    p = site.add_page("ENG", "Team", "<p>t</p>", read_users=("alice", "bob", "carol"))
    src, pub = make(tmp_path, site, page_size=1)
    src.sync()
    assert pub.take()[0][1].acl.principals == ("user:confluence/alice", "user:confluence/bob", "user:confluence/carol")
    assert site.count(f"/rest/api/content/{p}/restriction/byOperation/read/user") == 3


# -- cursor ----------------------------------------------------------------------------------------
def test_restart_resumes_from_the_cursor_and_the_position_moves_only_when_acknowledged(tmp_path, site):
    a = site.add_page("ENG", "Alpha", "<p>one</p>")
    src, pub = make(tmp_path, site)
    src.sync()
    since = src.cursor.position["cql"]["since"]
    site.clock = Clock(site.clock() + 120)
    site.edit(a, body="<p>two</p>")
    pub.fail = True  # the broker does not acknowledge: neither the item nor the position move
    src.sync()
    assert src.cursor.position["cql"]["since"] == since and src.cursor.items[a]["cf_version"] == 1

    s = load_settings(home=tmp_path / "home")
    again = open_source(s, "wiki", publisher=RecordingPublisher())  # from the cursor's saved config
    again.client.sleep = lambda s: None
    searches = [p for _, p in site.requests]
    stats = again.sync()
    new = [p for _, p in site.requests][len(searches):]
    assert (again.last_mode, stats.changed) == ("incremental", 1)
    assert all("lastmodified" in p for p in new if "/rest/api/search" in p)  # no full listing
    assert again.cursor.position["cql"]["since"] > since


def test_an_invalid_position_reconciles_without_duplicates(tmp_path, site):
    for i in range(3):
        site.add_page("ENG", f"Page {i}", f"<p>text {i}</p>")
    src, pub = make(tmp_path, site, page_size=2)  # paged listing
    assert src.sync().added == 3
    path = tmp_path / "home" / "sources" / "wiki.json"
    data = json.loads(path.read_text())
    data["position"]["cql"] = {"scope": data["position"]["cql"]["scope"], "since": "yesterday"}
    path.write_text(json.dumps(data))
    src, pub = make(tmp_path, site, page_size=2)
    stats = src.sync()
    assert (src.last_mode, stats.published, stats.unchanged) == ("reconcile", 0, 3)
    assert "since" in src.cursor.position["cql"] and src.cursor.position["cql"]["since"] != "yesterday"


# -- throttling, credentials, configuration ---------------------------------------------------------
def test_throttling_is_waited_out_per_retry_after_within_the_budget(tmp_path, site):
    site.add_page("ENG", "Alpha", "<p>one</p>")
    src, pub = make(tmp_path, site)
    site.throttle(2, retry_after=3)
    assert src.sync().added == 1
    assert [(s, d) for _, s, d in src.client.retries] == [("429", 3.0), ("429", 3.0)]

    site.throttle(50, retry_after=30)
    src.client.budget_s = 5
    site.edit(next(iter(src.cursor.items)), body="<p>two</p>")
    with pytest.raises(ConfluenceUnavailable, match="retry budget"):
        src.reconcile()


def test_wrong_credentials_are_a_clear_error_without_the_secret(tmp_path, site, monkeypatch):
    src, _ = make(tmp_path, site)
    monkeypatch.setenv(TOKEN_ENV, "wrong-token-value")
    src.client._api = None
    with pytest.raises(ConnectorError, match="refused the credentials") as err:
        src.sync()
    assert "wrong-token-value" not in str(err.value) and TOKEN_ENV in str(err.value)
    with pytest.raises(ConnectorError, match="401"):
        src.test_connection()
    basic, _ = make(tmp_path, site, source_id="wiki-basic", auth="basic", token_env=None, username="svc-rag",
                    password_env="RAGSTREAM_TEST_CONFLUENCE_PASSWORD")
    monkeypatch.setenv("RAGSTREAM_TEST_CONFLUENCE_PASSWORD", "s3cret")
    assert "space ENG (Engineering)" in basic.test_connection()
    monkeypatch.delenv("RAGSTREAM_TEST_CONFLUENCE_PASSWORD")
    basic.client._api = None
    with pytest.raises(ConnectorError, match="RAGSTREAM_TEST_CONFLUENCE_PASSWORD is not set"):
        basic.sync()


def test_sources_file_declares_a_space_and_refuses_secrets(tmp_path, site, monkeypatch):
    f = tmp_path / "sources.toml"
    f.write_text(f'[sources.wiki]\nkind = "confluence"\nurl = "{site.url}"\nspace = "ENG"\nauth = "token"\n'
                 f'token_file = "{tmp_path / "token"}"\n')
    (tmp_path / "token").write_text("good-token\n")
    s = load_settings(home=tmp_path / "home", sources_file=f)
    [src] = declared_sources(s, publisher=RecordingPublisher())
    assert src.kind == "confluence" and "0 page/blogpost(s)" in src.test_connection()
    f.write_text(f'[sources.wiki]\nkind = "confluence"\nurl = "{site.url}"\nspace = "ENG"\nauth = "token"\n'
                 'token = "abc"\n')
    with pytest.raises(SystemExit, match="never write a secret"):
        declared_sources(s)


def test_storage_format_to_text():
    text = storage_to_text('<p>See <ac:link><ri:page ri:content-title="Other page"/></ac:link> and '
                           '<ac:link><ri:user ri:username="alice"/></ac:link>.</p><table><tr><th>k</th></tr>'
                           '<tr><td>v</td></tr></table>', "T & Q")
    assert text.startswith("# T & Q") and "Other page" in text and "@alice" in text and "| k |" in text
