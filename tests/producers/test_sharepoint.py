"""The SharePoint source against a local SharePoint (tests/fakes/sharepoint.py), driven by
the real office365-rest-python-client: listing with paging, change tokens, an expired token,
permissions from claim login names, throttling, wrong credentials. No broker: a recording
publisher acknowledges every event at flush, as the broker would."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from producers.sharepoint import SharePointConfig, SharePointSource
from producers.sharepoint.client import Throttled
from producers.sharepoint.permissions import PrincipalMapper, decode, encode, grants_read
from ragstream.connector import Capability, ConnectorError, ListedDocument, connector_classes
from ragstream.settings import load_settings
from schemas import topics
from schemas.events import Acl
from tests.fakes.sharepoint import SECURITY_GROUP, FakeSharePoint
from tests.producers.test_filesystem_unit import RecordingPublisher

TOKEN_ENV = "RAGSTREAM_TEST_SP_TOKEN"


@pytest.fixture
def site():
    with FakeSharePoint() as fake:
        yield fake


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "good-token")


def config(site: FakeSharePoint, **kw) -> SharePointConfig:
    return SharePointConfig(**{"site_url": site.url, "auth": "access_token", "access_token_env": TOKEN_ENV,
                               "page_size": 2, **kw})


#: What the source slept for (throttling), instead of sleeping; the retry budget's clock
#: moves by as much.
sleeps: list[float] = []


def fake_sleep(seconds: float) -> None:
    sleeps.append(seconds)


def fake_clock() -> float:
    return sum(sleeps)


def make(tmp_path, site, source_id="sp-eng", retry_budget_s=30, **kw):
    pub = RecordingPublisher()
    s = load_settings(home=tmp_path / "home", retry_budget_s=retry_budget_s)
    src = SharePointSource(s, config(site, **kw), source_id, publisher=pub)
    src.client._sleep, src.client._clock = fake_sleep, fake_clock
    return src, pub


def published(pub, topic=topics.CHANGES):
    return [(e.doc_id, e.op if topic == topics.CHANGES else "acl") for t, e in pub.events if t == topic]


# -- principals ------------------------------------------------------------------------------------
def test_principals_from_claim_login_names_are_unambiguous_and_accepted():
    m = PrincipalMapper("https://contoso.sharepoint.com/sites/eng")

    def p(login, kind, title=""):
        return m.principal({"LoginName": login, "PrincipalType": kind, "Title": title})

    assert p("i:0#.f|membership|Alice@Contoso.com", 1) == "user:entra/alice@contoso.com"
    assert p("c:0t.c|tenant|9F0A-11", 4) == "group:entra/9f0a-11"
    assert p("c:0o.c|federateddirectoryclaimprovider|abc-1_o", 4) == "group:entra/abc-1_o"
    assert p("Eng Members", 8) == "group:sharepoint/contoso.sharepoint.com/sites/eng/Eng%20Members"
    assert p("c:0(.s|true", 4) == "group:sharepoint-claim/c:0(.s%7Ctrue"
    assert PrincipalMapper("https://c/sites/x", everyone_is_public=True).principal(
        {"LoginName": "c:0-.f|rolemanager|spo-grid-all-users/t1", "PrincipalType": 4}) == "public"
    assert p("i:0#.w|contoso\\bob smith", 1) == "user:sharepoint-claim/i:0#.w%7Ccontoso\\bob%20smith"
    # every one of them is a principal the pipeline accepts, and the encoding is reversible
    odd = "100% sure | a\tb ü"
    assert decode(encode(odd)) == odd and encode("a%7Cb") != encode("a|b")
    Acl(principals=(p("i:0#.f|membership|x@y", 1), p("Eng Members", 8), p("c:0(.s|true", 4),
                    p("i:0#.w|contoso\\bob smith", 1), f"group:claim/{encode(odd)}"))


def test_only_roles_with_view_list_items_grant_reading():
    assert grants_read({"BasePermissions": {"High": "176", "Low": "138612833"}})  # Read
    assert not grants_read({"BasePermissions": {"High": "48", "Low": "134418528"}})  # Limited Access
    assert grants_read({"RoleTypeKind": 3}) and not grants_read({"RoleTypeKind": 1})


# -- configuration ----------------------------------------------------------------------------------
def test_config_names_secrets_never_holds_them():
    base = {"site_url": "https://contoso.sharepoint.com/sites/eng"}
    with pytest.raises(ValidationError, match="never write a secret"):
        SharePointConfig(**base, auth="client_secret", tenant="t", client_id="c", client_secret="s3cret")
    with pytest.raises(ValidationError, match="exactly one of client_secret_env and client_secret_file"):
        SharePointConfig(**base, auth="client_secret", tenant="t", client_id="c")
    with pytest.raises(ValidationError, match="needs tenant"):
        SharePointConfig(**base, auth="certificate", client_id="c", certificate_key_file="k.pem",
                         certificate_thumbprint="a" * 40)
    with pytest.raises(ValidationError, match="site_url"):
        SharePointConfig(site_url="contoso", auth="access_token", access_token_env="X")
    with pytest.raises(ValidationError, match="sharepoint"):
        SharePointConfig(**base, auth="access_token", access_token_env="X", directory="sharepoint")
    ok = SharePointConfig(**base, auth="certificate", tenant="t", client_id="c", certificate_key_file="k.pem",
                          certificate_thumbprint="a" * 40)
    assert ok.library == "Documents"


def test_the_connector_is_found_and_declares_what_it_does(tmp_path):
    cls = connector_classes(load_settings(home=tmp_path))["sharepoint"]
    assert cls is SharePointSource
    assert cls.capabilities == {Capability.full_listing, Capability.incremental, Capability.permission_sync,
                                Capability.deletes}


# -- sync -----------------------------------------------------------------------------------------
def test_initial_sync_lists_every_page_and_maps_permissions(tmp_path, site, token):
    alice, fin = site.user("alice@x.com"), site.directory_group("0f1e2d3c-aaaa", "Finance")
    a = site.add_file("a.md", "# A\n\nalpha")
    b = site.add_file("b.txt", "bravo", readers=[(alice, "Read"), (fin, "Contribute"),
                                                 (site.user("lim@x.com"), "Limited Access")])
    site.add_file("c.html", "<h1>C</h1><p>charlie</p>")
    site.add_file("logo.png", b"\x89PNG\x00\x00")
    src, pub = make(tmp_path, site)
    stats = src.sync()
    assert (stats.added, stats.skipped_by_reason) == (3, {"unsupported": 1})
    assert site.count("GET", "/items") == 2  # page_size 2: three items on a second page via __next
    by_id = {e.doc_id: e for _, e in pub.events}
    assert by_id[src.doc_id(str(b))].acl.principals == ("group:entra/0f1e2d3c-aaaa", "user:entra/alice@x.com")
    site_groups = by_id[src.doc_id(str(a))].acl.principals  # inherits the library's: the site's groups
    assert site_groups == tuple(sorted(f"group:sharepoint/127.0.0.1/sites/eng/{n}"
                                       for n in ("Eng%20Members", "Eng%20Owners", "Eng%20Visitors")))
    assert by_id[src.doc_id(str(a))].content.text == "# A\n\nalpha"
    assert by_id[src.doc_id(str(a))].metadata.uri.endswith("/sites/eng/Shared%20Documents/a.md")
    assert src.cursor.position["change_token"].split(";")[4] == site.current_token().split(";")[4]


def test_a_full_first_page_without_next_ends_the_listing(tmp_path, site, token):
    """SharePoint ignores $skip on list items: the listing follows __next only."""
    site.add_file("a.md", "alpha")
    site.add_file("b.md", "bravo")  # exactly page_size items: one full page, no __next
    src, _ = make(tmp_path, site)
    assert src.sync().added == 2
    assert site.count("GET", "/items?") == 1


def test_changes_follow_the_change_token_without_relisting(tmp_path, site, token):
    alice, bob = site.user("alice@x.com"), site.user("bob@x.com")
    a = site.add_file("a.md", "alpha")
    b = site.add_file("b.md", "bravo", readers=[(alice, "Read")])
    c = site.add_file("c.md", "charlie")
    src, pub = make(tmp_path, site)
    src.sync()
    pub.events.clear()
    listings, downloads = site.count("GET", "/items?"), site.count("GET", "$value")

    site.update_file(a, "alpha, second edition")
    site.rename(c, "charlie renamed.md")
    site.set_permissions(b, [(alice, "Read"), (bob, "Read")])
    d = site.add_file("d.md", "delta")
    site.delete(d)  # created and deleted between two syncs: nothing to publish
    e = site.add_file("e.md", "echo")
    site.change_page = 2  # getChanges answers two changes at a time: the source asks again from the last token
    asked = site.count("POST", "getchanges")
    stats = src.sync()
    assert (stats.added, stats.changed, stats.permission_only, stats.deleted) == (1, 2, 1, 0)
    assert site.count("POST", "getchanges") == asked + 4  # 6 changes: 3 pages and an empty one
    assert site.count("GET", "/items?") == listings  # no full listing
    assert site.count("GET", "$value") == downloads + 3  # a, renamed c, e; b's content not read again
    assert sorted(published(pub)) == sorted([(src.doc_id(str(a)), "upsert"), (src.doc_id(str(c)), "upsert"),
                                             (src.doc_id(str(e)), "upsert")])
    assert published(pub, topics.ACL) == [(src.doc_id(str(b)), "acl")]
    renamed = next(ev for t, ev in pub.events if t == topics.CHANGES and ev.doc_id == src.doc_id(str(c)))
    assert renamed.metadata.title == "charlie renamed.md"
    acl = next(ev for t, ev in pub.events if t == topics.ACL)
    assert acl.acl.principals == ("user:entra/alice@x.com", "user:entra/bob@x.com")

    pub.events.clear()
    site.delete(a)
    assert src.sync().deleted == 1 and published(pub) == [(src.doc_id(str(a)), "delete")]
    pub.events.clear()
    assert src.sync().published == 0 and pub.events == []  # nothing new: nothing published


def test_a_library_permission_change_reaches_every_inheriting_item_as_acl_only(tmp_path, site, token):
    ids = [site.add_file(f"{n}.md", n) for n in "xyz"]
    own = site.add_file("own.md", "own", readers=[(site.user("ann@x.com"), "Read")])
    src, pub = make(tmp_path, site)
    src.sync()
    pub.events.clear()
    site.set_library_permissions([(site.owners, "Full Control"), (site.directory_group("abcd", "All staff"), "Read")])
    stats = src.sync()
    assert (stats.permission_only, stats.changed, stats.added) == (3, 0, 0)
    assert sorted(d for d, _ in published(pub, topics.ACL)) == sorted(src.doc_id(str(i)) for i in ids)
    assert src.doc_id(str(own)) not in [d for d, _ in published(pub, topics.ACL)]


def test_restart_resumes_from_the_saved_cursor(tmp_path, site, token):
    a = site.add_file("a.md", "alpha")
    src, _ = make(tmp_path, site)
    src.sync()
    site.update_file(a, "alpha again")
    listings = site.count("GET", "/items?")
    again, pub = make(tmp_path, site)  # a new process: same home, same source id
    stats = again.sync()
    assert (stats.changed, again.full_syncs) == (1, 0)
    assert site.count("GET", "/items?") == listings


def test_an_expired_change_token_means_a_full_resync_without_duplicates(tmp_path, site, token):
    a, b, c = (site.add_file(f"{n}.md", n) for n in "abc")
    src, pub = make(tmp_path, site)
    src.sync()
    pub.events.clear()
    site.update_file(a, "a changed")
    site.delete(b)
    site.set_permissions(c, [(site.user("carol@x.com"), "Read")])
    site.expire_change_log()  # the token in the cursor is now older than the change log
    stats = src.sync()
    assert src.full_syncs == 2  # the first sync's, and this one
    assert (stats.changed, stats.deleted, stats.permission_only, stats.added, stats.unchanged) == (1, 1, 1, 0, 0)
    assert sorted(published(pub) + published(pub, topics.ACL)) == sorted(
        [(src.doc_id(str(a)), "upsert"), (src.doc_id(str(b)), "delete"), (src.doc_id(str(c)), "acl")])
    pub.events.clear()
    assert src.sync().published == 0  # the new token works again
    assert src.full_syncs == 2


def test_throttling_is_waited_out_as_retry_after_says(tmp_path, site, token):
    sleeps.clear()
    site.add_file("a.md", "alpha")
    src, _ = make(tmp_path, site)
    site.throttle(2, 429, retry_after=3, path="/items")
    site.throttle(1, 503, retry_after=2, path="roleassignments")
    assert src.sync().added == 1
    assert site.throttled == 3 and sleeps == [3.0, 3.0, 2.0]


def test_throttling_beyond_the_retry_budget_stops_the_sync_and_keeps_the_token(tmp_path, site, token):
    sleeps.clear()
    a = site.add_file("a.md", "alpha")
    src, pub = make(tmp_path, site, retry_budget_s=10)
    src.sync()
    token_before = src.cursor.position["change_token"]
    site.update_file(a, "alpha 2")
    site.throttle(10, 429, retry_after=4, path="getchanges")
    with pytest.raises(Throttled, match="RAGSTREAM_RETRY_BUDGET_S"):
        src.sync()
    assert sum(sleeps) <= 10 and src.cursor.position["change_token"] == token_before
    site._throttle.clear()
    assert src.sync().changed == 1


def test_wrong_credentials_are_a_clear_connector_error(tmp_path, site, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "stolen-or-expired")
    src, pub = make(tmp_path, site)
    with pytest.raises(ConnectorError, match=r"refused the credentials .*HTTP 401"):
        src.test_connection()
    with pytest.raises(ConnectorError, match="refused the credentials"):
        src.sync()
    assert pub.events == []
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ConnectorError, match=f"access_token_env: the environment variable {TOKEN_ENV} is not set"):
        src.test_connection()


def test_test_connection_says_what_it_found(tmp_path, site, token):
    site.add_file("a.md", "alpha")
    src, _ = make(tmp_path, site)
    assert "library 'Documents', 1 item(s)" in src.test_connection()


def test_app_only_sign_in_with_a_secret_or_a_certificate_through_msal(tmp_path, site, monkeypatch):
    """Real MSAL against a local Entra ID token service (tests/fakes/entra.py, TLS with its
    own CA): the client-credentials grant with a secret, then with a certificate."""
    from tests.fakes.entra import FakeEntra, self_signed

    thumbprint = self_signed("ragstream-sp", tmp_path / "app.key", tmp_path / "app.pem")
    s = load_settings(home=tmp_path / "home")
    with FakeEntra(tmp_path) as entra:
        entra.add_secret_app("app-secret", "right-secret")
        entra.add_certificate_app("app-cert", (tmp_path / "app.pem").read_bytes())
        common = {"site_url": site.url, "tenant": entra.tenant, "authority": entra.authority,
                  "ca_bundle": entra.ca_file}
        monkeypatch.setenv("SP_SECRET", "right-secret")
        by_secret = SharePointConfig(auth="client_secret", client_id="app-secret", client_secret_env="SP_SECRET",
                                     **common)
        assert "library 'Documents'" in SharePointSource(s, by_secret, "sp-a", publisher=RecordingPublisher()
                                                         ).test_connection()
        by_cert = SharePointConfig(auth="certificate", client_id="app-cert", certificate_key_file=tmp_path / "app.key",
                                   certificate_thumbprint=thumbprint, **common)
        site.add_file("a.md", "alpha")
        assert SharePointSource(s, by_cert, "sp-b", publisher=RecordingPublisher()).sync().added == 1
        assert [(i["client_id"], i["how"], i["scope"]) for i in entra.issued] == [
            ("app-secret", "secret", site.origin + "/.default"), ("app-cert", "certificate", site.origin + "/.default")]

        monkeypatch.setenv("SP_SECRET", "wrong-secret")
        with pytest.raises(ConnectorError, match="invalid_client: AADSTS7000215: Invalid client secret") as err:
            SharePointSource(s, by_secret, "sp-c", publisher=RecordingPublisher()).test_connection()
        assert "wrong-secret" not in str(err.value)
        other_key = tmp_path / "other.key"
        self_signed("not-registered", other_key, tmp_path / "other.pem")
        wrong_cert = by_cert.model_copy(update={"certificate_key_file": other_key})
        with pytest.raises(ConnectorError, match="invalid_client: AADSTS700027"):
            SharePointSource(s, wrong_cert, "sp-d", publisher=RecordingPublisher()).sync()
        no_tenant = by_secret.model_copy(update={"authority": entra.authority.replace(entra.tenant, "nobody.example")})
        with pytest.raises(ConnectorError, match="cannot sign in at .*nobody.example"):
            SharePointSource(s, no_tenant, "sp-e", publisher=RecordingPublisher()).test_connection()


def test_reread_and_full_listing_for_the_runtime(tmp_path, site, token):
    a = site.add_file("a.md", "alpha")
    b = site.add_file("b.md", "bravo")
    site.add_file("x.png", b"\x89PNG")
    src, pub = make(tmp_path, site)
    src.sync()
    listing = list(src.full_listing())
    docs = [d for d in listing if isinstance(d, ListedDocument)]
    assert sorted(d.doc_id for d in docs) == sorted([src.doc_id(str(a)), src.doc_id(str(b))])
    assert not any(d.changed_since_published for d in docs)
    assert [x.kind for x in listing if not isinstance(x, ListedDocument)] == ["skipped"]
    site.update_file(a, "alpha 2")
    assert {d.doc_id: d.changed_since_published for d in src.full_listing() if isinstance(d, ListedDocument)
            }[src.doc_id(str(a))]
    pub.events.clear()
    site.delete(b)
    stats = src.reread([src.doc_id(str(a)), src.doc_id(str(b))])
    assert (stats.changed, stats.deleted) == (1, 1)


def test_a_corrupt_pdf_is_dead_lettered_and_replayed_once_fixed(tmp_path, site, token):
    bad = site.add_file("report.pdf", b"%PDF-1.4\n1 0 obj not a pdf at all\n")
    src, pub = make(tmp_path, site)
    stats = src.sync()
    assert stats.failed == 1 and pub.letters and pub.letters[0][1]["key"] == src.doc_id(str(bad))
    assert [x.kind for x in src.full_listing()] == ["dead_lettered"]
    site.update_file(bad, "<html><body><p>now readable</p></body></html>".encode())
    site.rename(bad, "report.html")
    assert src.reread([src.doc_id(str(bad))]).added == 1
