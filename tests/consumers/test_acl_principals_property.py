"""Property: principals with every separator and escape character, from several issuers, never
let a caller see a document whose ACL does not name one of theirs (issue 14).

Principals are ``<kind>:<issuer/>?<name>`` with names drawn from letters and every printable
ASCII punctuation mark a contract allows (all but ``|``; no blanks): LIKE's ``%`` and ``_``,
the escape ``\\``, both quotes, the separators ``,`` ``;`` ``:`` ``/`` ``=``, brackets and
expression characters. Issuers (``corp/``, ``partner/``, ``saml/``, none) qualify the same
name into different principals, as the API makes them. The pool is small, and names are
often near-twins (one character apart, one a prefix of the other), so documents and callers
share, and almost share, principals. Against a real milvus-lite (embedded).
"""

from __future__ import annotations

import string
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from consumers.milvus import MilvusIndex
from schemas.events import PRINCIPAL_RE, Acl, EmbeddedChunk, Op, SourceKind, VectorSet

#: Every printable ASCII punctuation mark except "|" (the contracts refuse it, and blanks).
PUNCTUATION = "".join(c for c in string.punctuation if c != "|")
ISSUERS = ("", "corp/", "partner/", "saml/")
N_DOCS = 24

names = st.text(alphabet=st.sampled_from("ab" + PUNCTUATION + "é"), min_size=1, max_size=6)
principals = st.one_of(
    st.just("public"),
    st.builds(lambda kind, issuer, name: f"{kind}:{issuer}{name}",
              st.sampled_from(("user", "group", "service")), st.sampled_from(ISSUERS), names))


@st.composite
def pools(draw: st.DrawFn) -> list[str]:
    """A few principals and their near-twins (a character added, dropped or changed)."""
    base = draw(st.lists(principals, min_size=2, max_size=6, unique=True))
    twins = []
    for p in base:
        if p == "public":
            continue
        twist = draw(st.sampled_from(("append", "drop", "swap", "issuer")))
        kind, _, rest = p.partition(":")
        if twist == "append":
            twins.append(p + draw(st.sampled_from(PUNCTUATION)))
        elif twist == "drop" and len(rest) > 1:
            twins.append(p[:-1])
        elif twist == "swap":
            twins.append(f"{kind}:{draw(st.sampled_from(PUNCTUATION))}{rest[1:]}")
        else:
            twins.append(f"{kind}:{draw(st.sampled_from(ISSUERS))}{rest.split('/', 1)[-1]}")
    pool = sorted({*base, *twins})
    assert all(PRINCIPAL_RE.match(p) for p in pool)
    return pool


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    idx = MilvusIndex(str(tmp_path_factory.mktemp("principals") / "lite.db"), "principals", 4, timeout=120)
    idx.ensure()
    yield idx
    idx.client.close()


def _vs(i: int, acl: list[str], vector: tuple[float, ...]) -> VectorSet:
    return VectorSet(source="q", source_kind=SourceKind.filesystem, doc_id=f"q:{i}", op=Op.upsert, version=1,
                     changed_at=datetime.now(timezone.utc), acl=Acl(principals=tuple(acl), known=True),
                     chunker="test", model="m", dim=4,
                     chunks=(EmbeddedChunk(chunk_id=f"q-{i}", ordinal=0, text=str(i), tokens=1, vector=vector),))


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_no_principal_reaches_a_document_its_acl_does_not_name(index, data):
    pool = data.draw(pools())
    acls = data.draw(st.lists(st.lists(st.sampled_from(pool), max_size=3), min_size=N_DOCS, max_size=N_DOCS))
    caller = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    for i, acl in enumerate(acls):
        index.apply(_vs(i, acl, (1.0, float(i % 5), 0.5, -0.25)))
    visible = {f"q:{i}" for i, acl in enumerate(acls) if set(acl) & set(caller)}
    hits = index.search([1.0, 0.5, 0.25, 0.0], caller, limit=N_DOCS)
    got = {h.doc_id for h in hits}
    assert got <= visible, f"{sorted(got - visible)} leaked to {caller}"
    assert got == visible, f"{sorted(visible - got)} hidden from {caller}"  # pre-filtered, none lost
