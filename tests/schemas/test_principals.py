"""Principals as one value type (issue 14): ``schemas.principals.Principal``.

* text and parse are inverses, and two different principals never share a text (property
  tests over names with every separator and escape character, in several namespaces);
* the grammar ``Acl`` accepts is exactly the one of the first contracts (replayed events
  must still validate);
* every principal text the code wrote before this type is written byte for byte the same
  (LDAP, OIDC issuer and local-names issuer, identity_map, SAML, file system, SharePoint,
  Confluence, API keys, ``ragstream search``).
"""

from __future__ import annotations

import os
import pickle
import re
import stat
from types import SimpleNamespace

import pytest
from hypothesis import given, settings as hsettings, strategies as st
from pydantic import ValidationError

from schemas.events import PRINCIPAL_RE as EVENTS_PRINCIPAL_RE, Acl
from schemas.principals import (
    PRINCIPAL_RE,
    PUBLIC,
    Principal,
    decode_name,
    encode_name,
    is_principal,
)

#: The grammar as the first contracts wrote it, copied here so a change to it fails.
GRAMMAR_BEFORE = re.compile(r"^(public|(user|group|service):[^\s|]+)$")

#: Every character a name may hold that a text must not, or that the encoding treats
#: specially: separators, escapes, blanks of several kinds, controls, and hex digits so that
#: literal "%2F"-like sequences occur.
SPECIAL = "|%/:\\ \t\n\r\x00\x1f\x7f\u00a0\u2028\u3000" + "2F0A" + "é€😀"
NAMESPACES = (None, "corp", "partner", "saml", "sharepoint", "sharepoint-claim", "corp.eu", "a_b-c")
KIND = st.sampled_from(("user", "group", "service"))
names = st.text(alphabet=st.sampled_from("ab" + SPECIAL), min_size=1, max_size=8)
namespaces = st.sampled_from(NAMESPACES)


# -- the type --------------------------------------------------------------------------------------


def test_text_and_parse():
    p = Principal.user("alice")
    assert p.text == str(p) == "user:alice" and (p.kind, p.name, p.namespace) == ("user", "alice", None)
    q = Principal.group("Eng Members|x 100%", "confluence")
    assert q.text == "group:confluence/Eng%20Members%7Cx%20100%25"
    assert Principal.parse(q.text) == q and Principal.parse(q.text).name == "Eng Members|x 100%"
    # A provider's names may hold "/": the namespace ends at the first one.
    r = Principal.parse("user:corp/a/b")
    assert (r.kind, r.namespace, r.name) == ("user", "corp", "a/b") and r == Principal.user("a/b", "corp")
    # A local name's "/" is encoded: it cannot pose as a namespace.
    assert Principal.user("corp/alice").text == "user:corp%2Falice" != Principal.user("alice", "corp").text
    assert Principal.parse("user:corp%2Falice") == Principal.user("corp/alice")
    assert PUBLIC.text == "public" and Principal.parse("public") == PUBLIC == Principal("public")
    assert (PUBLIC.kind, PUBLIC.name, PUBLIC.namespace) == ("public", "", None)
    assert Principal.service("indexer-bot").text == "service:indexer-bot"
    assert sorted([Principal.user("b"), PUBLIC, Principal.group("a")]) == [
        Principal.group("a"), PUBLIC, Principal.user("b")]
    assert pickle.loads(pickle.dumps(q)) == q
    with pytest.raises(AttributeError):
        p.name = "root"  # type: ignore[misc]
    assert len({Principal.user("x"), Principal.parse("user:x")}) == 1


@pytest.mark.parametrize("bad", ["", "user:", "users:alice", "user alice", "user:a b", "user:a|b", "group:x|public",
                                 "public:x", "Public", "user:\talice", "user:a\u00a0b", " public"])
def test_parse_refuses_what_acl_refuses_with_a_clear_message(bad):
    with pytest.raises(ValueError, match=r"invalid principal .*use 'user:<id>', 'group:<id>', 'service:<id>' "
                                         r"or 'public' \(no blanks or '\|' in the id\)"):
        Principal.parse(bad)
    with pytest.raises(ValidationError, match="invalid principal"):
        Acl(principals=(bad,))
    assert not is_principal(bad)


def test_constructor_refusals():
    with pytest.raises(ValueError, match="kind"):
        Principal("admin", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a name"):
        Principal.user("")
    with pytest.raises(ValueError, match="no name"):
        Principal("public", "x")
    for ns in ("", "a/b", "a b", "a|b", "a%b", "a\x00"):
        with pytest.raises(ValueError, match="namespace"):
            Principal.user("x", ns)
        with pytest.raises(ValueError, match="namespace"):
            Principal.as_is("user", "x", ns)
    with pytest.raises(ValueError, match=r"'\|'"):
        Principal.as_is("group", "x|public")
    with pytest.raises(ValueError, match="kind"):
        Principal.as_is("public", "x")  # type: ignore[arg-type]


def test_as_is_writes_validated_names_as_they_always_were():
    assert Principal.as_is("user", "50%off", "corp").text == "user:corp/50%off"  # "%" not encoded
    assert Principal.as_is("group", "corp/eng") == Principal.group("eng", "corp")  # "/" qualifies
    assert Principal.as_is("user", "x/y", "corp").text == "user:corp/x/y"
    assert Principal.as_is("service", "bot").text == "service:bot"


def test_encode_and_decode_name():
    assert encode_name("Eng Members|100%\x00\n") == "Eng%20Members%7C100%25%00%0A"
    assert encode_name("a/b") == "a/b" and encode_name("a/b", slash=True) == "a%2Fb"
    assert encode_name("caf\u00e9\u00a0x") == "caf\u00e9%C2%A0x"  # a no-break space is a blank: UTF-8 bytes
    assert decode_name("Eng%20Members%7C100%25") == "Eng Members|100%"
    assert decode_name("50%off") == "50%off" and decode_name("a%FFb") == "a%FFb"  # not an escape: as it is


def test_principal_re_moved_and_kept():
    assert PRINCIPAL_RE is EVENTS_PRINCIPAL_RE and PRINCIPAL_RE.pattern == GRAMMAR_BEFORE.pattern


# -- properties ------------------------------------------------------------------------------------


@hsettings(max_examples=400, deadline=None)
@given(kind=KIND, name=names, namespace=namespaces)
def test_text_round_trips_and_is_a_valid_acl_principal(kind, name, namespace):
    p = Principal(kind, name, namespace)
    assert GRAMMAR_BEFORE.match(p.text) and "|" not in p.text and not any(c.isspace() for c in p.text)
    q = Principal.parse(p.text)
    assert q == p and (q.kind, q.name, q.namespace, q.text) == (kind, name, namespace, p.text)
    assert Acl(principals=(p.text,)).principals == (p.text,)
    assert decode_name(encode_name(name)) == name == decode_name(encode_name(name, slash=True))
    if namespace is None:
        assert "/" not in p.text  # a local name never reads as a provider's


@hsettings(max_examples=400, deadline=None)
@given(a=st.tuples(KIND, names, namespaces), b=st.tuples(KIND, names, namespaces))
def test_two_different_principals_never_share_a_text(a, b):
    pa, pb = Principal(*a), Principal(*b)
    assert (a == b) == (pa.text == pb.text) == (pa == pb)


@st.composite
def near_twins(draw: st.DrawFn) -> tuple[tuple, tuple]:
    """Pairs one step apart: a namespace moved into the name, a character escaped by hand."""
    kind, name, ns = draw(KIND), draw(names), draw(st.sampled_from(NAMESPACES[1:]))
    twist = draw(st.sampled_from(("into-name", "escaped", "other-ns")))
    if twist == "into-name":
        return (kind, name, ns), (kind, f"{ns}/{name}", None)
    if twist == "escaped":
        return (kind, name, ns), (kind, encode_name(name), ns)
    return (kind, name, ns), (kind, name, draw(namespaces))


@hsettings(max_examples=300, deadline=None)
@given(pair=near_twins())
def test_near_twins_get_different_texts(pair):
    a, b = pair
    assert (Principal(*a).text == Principal(*b).text) == (a == b)


@hsettings(max_examples=500, deadline=None)
@given(text=st.one_of(
    st.text(max_size=12),
    st.builds(lambda k, rest: f"{k}:{rest}", st.sampled_from(("user", "group", "service", "public", "role")),
              st.text(alphabet=st.sampled_from("ab/" + SPECIAL), max_size=8)),
    st.sampled_from(("public", "public\n", "user:a\n", "user:a\n\n", "user:\x00", "user:/", "user:corp/", "public "))))
def test_parse_accepts_exactly_the_grammar_acl_always_accepted(text):
    """Replayed events must validate as they did: the same acceptance, the text kept as written."""
    accepted = bool(GRAMMAR_BEFORE.match(text))
    assert is_principal(text) == accepted
    if accepted:
        assert Principal.parse(text).text == text
        assert Acl(principals=(text,)).principals == (text,)
    else:
        with pytest.raises(ValidationError):
            Acl(principals=(text,))


# -- today's texts, byte for byte ------------------------------------------------------------------


def test_auth_principals_are_written_as_before(tmp_path):
    from ragstream.auth import ApiKeys, principals_of, provider_principals
    from ragstream.store import AuthStore

    # LDAP (principals_of with the entry's uid) and a names = "local" issuer
    assert principals_of("alice", ["eng", "ops", "50%", "corp/eng", "x y"]) == (
        "group:50%", "group:eng", "group:ops", "public", "user:alice")
    assert principals_of("a%41", []) == ("public", "user:a%41")
    assert provider_principals("corp", "local", {}, "alice", ["eng"]) == (
        "user:alice", ("group:eng", "public", "user:alice"))
    # an OIDC issuer's names: qualified by its alias, "/" and "%" as they come
    assert provider_principals("corp", "issuer", {}, "alice@x.com", ["eng", "a/b", "e|f", "50%", "x y"]) == (
        "user:corp/alice@x.com",
        ("group:corp/50%", "group:corp/a/b", "group:corp/eng", "public", "user:corp/alice@x.com"))
    assert provider_principals("corp", "issuer", {}, "50%off/x", []) == (
        "user:corp/50%off/x", ("public", "user:corp/50%off/x"))
    assert provider_principals("partner", "issuer", {"partner/al": "alice"}, "al", ["eng"]) == (
        "user:alice", ("group:partner/eng", "public", "user:alice"))
    # SAML
    assert provider_principals("saml", "issuer", {}, "bob@x.com", ["staff"]) == (
        "user:saml/bob@x.com", ("group:saml/staff", "public", "user:saml/bob@x.com"))
    # API keys: service accounts, with the groups the operator gave (a "/" qualifies, as before)
    keys = ApiKeys(AuthStore(tmp_path / "keys"))
    who = keys.authenticate(keys.create("indexer-bot", ("user",), ("eng", "corp/eng", "50%")))
    assert who.subject == "service:indexer-bot"
    assert who.principals == ("group:50%", "group:corp/eng", "group:eng", "public", "service:indexer-bot")


def test_filesystem_principals_are_written_as_before():
    from producers.filesystem.source import FilesystemSource

    def st_of(mode: int, uid: int, gid: int) -> os.stat_result:
        return os.stat_result((stat.S_IFREG | mode, 1, 1, 1, uid, gid, 0, 0, 0, 0))

    fs = SimpleNamespace(world_readable_is_public=True)
    assert FilesystemSource.acl_for(fs, st_of(0o644, 0, 0)).principals == ("group:root", "public", "user:root")
    assert FilesystemSource.acl_for(fs, st_of(0o640, 4242420, 4242421)).principals == (
        "group:gid-4242421", "user:uid-4242420")
    assert FilesystemSource.acl_for(SimpleNamespace(world_readable_is_public=False),
                                    st_of(0o604, 4242420, 0)).principals == ("user:uid-4242420",)


def test_search_names_you_as_the_filesystem_does():
    import grp
    import pwd

    from ragstream.cli.search import _local_principals

    def name(f, i, prefix):
        try:
            return f(i)[0]
        except KeyError:
            return f"{prefix}-{i}"

    groups = {name(grp.getgrgid, g, "gid") for g in [*os.getgroups(), os.getgid()]}
    assert _local_principals() == [f"user:{name(pwd.getpwuid, os.getuid(), 'uid')}",
                                   *sorted(f"group:{g}" for g in groups)]


def test_sharepoint_principals_are_written_as_before():
    from producers.sharepoint.permissions import PrincipalMapper

    m = PrincipalMapper("https://x.sharepoint.com/sites/eng/", "entra")
    cases = {
        ("i:0#.f|membership|Alice@X.com", 1, None): "user:entra/alice@x.com",
        ("c:0t.c|tenant|ABCD-1234", 4, None): "group:entra/abcd-1234",
        ("c:0o.c|federateddirectoryclaimprovider|abcd-12_o", 4, None): "group:entra/abcd-12_o",
        ("Eng Members", 8, None): "group:sharepoint/x.sharepoint.com/sites/eng/Eng%20Members",
        ("", 8, "Eng 100%"): "group:sharepoint/x.sharepoint.com/sites/eng/Eng%20100%25",
        ("c:0(.s|true", 4, None): "group:sharepoint-claim/c:0(.s%7Ctrue",
        ("c:0-.f|rolemanager|spo-grid-all-users/abc", 4, None):
            "group:sharepoint-claim/c:0-.f%7Crolemanager%7Cspo-grid-all-users/abc",
        ("i:0#.w|dom\\bob 100%", 1, None): "user:sharepoint-claim/i:0#.w%7Cdom\\bob%20100%25",
        ("c:0+.w|s-1-5-21", 4, None): "group:sharepoint-claim/c:0+.w%7Cs-1-5-21",
    }
    for (login, kind, title), text in cases.items():
        assert m.principal({"LoginName": login, "PrincipalType": kind, "Title": title}) == text
    assert m.principal({"LoginName": "", "PrincipalType": 1}) is None
    public = PrincipalMapper("https://x.sharepoint.com/sites/eng", "entra", everyone_is_public=True)
    assert public.principal({"LoginName": "c:0(.s|true", "PrincipalType": 4}) == "public"


def test_confluence_principals_are_written_as_before():
    from producers.confluence.permissions import Level, PrincipalMapper

    m = PrincipalMapper("confluence", anonymous_is_public=True)
    assert m.user("5b10ac8d82e05b22cc7d4ef5") == "user:confluence/5b10ac8d82e05b22cc7d4ef5"
    assert m.user("Jane Doe") == "user:confluence/Jane%20Doe"
    assert m.group("confluence-users") == "group:confluence/confluence-users"
    assert m.group("eng|ops 50%/x") == "group:confluence/eng%7Cops%2050%25/x"
    space = Level(users={"u1"}, groups={"Eng Team"}, anyone=True, origin="space")
    assert m.effective(space, [], groups_of=lambda u: [], members_of=lambda g: []) == (
        "group:confluence/Eng%20Team", "public", "user:confluence/u1")


def test_search_as_refuses_what_is_not_a_principal():
    from click.testing import CliRunner

    from ragstream.cli import cli

    r = CliRunner().invoke(cli, ["search", "q", "--as", "group:x|public", "--as", "user:a b"])
    assert r.exit_code != 0
    assert "--as 'group:x|public', 'user:a b': not a principal" in r.output
