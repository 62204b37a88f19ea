from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from schemas.events import (
    Acl,
    BlobRef,
    ChangeEvent,
    EmbeddedChunk,
    InlineContent,
    Op,
    SourceKind,
    VectorSet,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def change(**kw):
    base = dict(source="fs-docs", source_kind=SourceKind.filesystem, doc_id="fs-docs:/a/b.md",
                op=Op.upsert, version=3, changed_at=NOW, content=InlineContent.of("hello"))
    base.update(kw)
    return ChangeEvent(**base)


def test_doc_id_must_belong_to_its_source():
    with pytest.raises(ValidationError, match="must start with its source id 'fs-docs:'"):
        change(doc_id="other:/a/b.md")


def test_upsert_needs_content_and_delete_carries_none():
    with pytest.raises(ValidationError, match="an upsert needs content"):
        change(content=None)
    with pytest.raises(ValidationError, match="a delete carries no content"):
        change(op=Op.delete)
    assert change(op=Op.delete, content=None).content is None


def test_inline_content_hash_is_checked():
    with pytest.raises(ValidationError, match="sha256 does not match"):
        InlineContent(text="hello", sha256="0" * 64)


def test_content_by_reference():
    ref = BlobRef(uri="file:///blobs/x", sha256="a" * 64, size=10_000_000)
    assert change(content=ref).content.kind == "ref"


def test_acl_defaults_to_unknown_which_is_private():
    event = change()
    assert event.acl.known is False
    assert event.acl.principals == ()
    assert not event.acl.allows({"user:alice", "public"})


def test_acl_principals_are_validated_and_normalised():
    acl = Acl(principals=("group:eng", "user:alice", "group:eng"))
    assert acl.principals == ("group:eng", "user:alice")
    assert acl.allows({"user:alice"})
    assert not acl.allows({"user:bob"})
    assert not acl.allows(set())
    with pytest.raises(ValidationError, match="use 'user:<id>', 'group:<id>', 'service:<id>' or 'public'"):
        Acl(principals=("alice",))
    # '|' separates principals in the index's ACL encoding: 'group:x|public' must not make a
    # document public.
    with pytest.raises(ValidationError, match="no blanks or '|'"):
        Acl(principals=("group:x|public",))
    assert Acl(principals=("service:etl",)).allows({"service:etl"})
    with pytest.raises(ValidationError, match="unknown ACL carries no principals"):
        Acl(principals=("public",), known=False)


def test_changed_at_must_carry_a_timezone():
    with pytest.raises(ValidationError):
        change(changed_at=datetime(2026, 1, 1))


def test_vector_dims_are_checked():
    common = dict(source="fs", source_kind="filesystem", doc_id="fs:x", op="upsert", version=1,
                  chunker="structural-v1", model="all-MiniLM-L6-v2", dim=3)
    ok = EmbeddedChunk(chunk_id="c1", ordinal=0, text="t", tokens=1, vector=(0.1, 0.2, 0.3))
    assert VectorSet(**common, chunks=(ok,)).dim == 3
    bad = EmbeddedChunk(chunk_id="c2", ordinal=1, text="t", tokens=1, vector=(0.1,))
    with pytest.raises(ValidationError, match=r"\['c2'\] do not have dim=3"):
        VectorSet(**common, chunks=(ok, bad))


def test_events_are_immutable():
    event = change()
    with pytest.raises(ValidationError):
        event.version = 4
