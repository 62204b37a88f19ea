from datetime import datetime, timezone

import pytest

from ragstream.blobs import BlobStore
from schemas import topics
from schemas.events import Acl, BlobRef, ChangeEvent, DocumentRecord, InlineContent
from schemas.serde import decode
from streams.chunking import Chunker
from streams.stages import ChunkStage, ComplianceStage, Permanent

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc)


def change(**kw):
    base = dict(source="fs", source_kind="filesystem", doc_id="fs:a.md", op="upsert", version=5,
                changed_at=NOW, content=InlineContent.of("# A\n\nSome text here."),
                acl=Acl(principals=("group:eng",)))
    base.update(kw)
    return ChangeEvent(**base)


def test_compliance_passes_clean_documents_through_with_acl_and_version_and_audits(tmp_path):
    stage = ComplianceStage(BlobStore(tmp_path), inline_max_bytes=1_000_000)
    out, audit = stage.process(change())
    assert out.topic == topics.DOCUMENTS and out.key == "fs:a.md"
    assert audit.topic == topics.AUDIT_EVENTS
    doc = decode(DocumentRecord, out.value)
    assert (doc.version, doc.acl.principals, doc.content.text) == (5, ("group:eng",), "# A\n\nSome text here.")
    assert doc.content_hash == InlineContent.of("# A\n\nSome text here.").sha256


def test_a_delete_becomes_a_delete_record_then_a_tombstone(tmp_path):
    outs = ComplianceStage(BlobStore(tmp_path), 1_000_000).process(change(op="delete", content=None, version=9))
    assert [o.value is None for o in outs] == [False, True]
    assert decode(DocumentRecord, outs[0].value).op == "delete"


def test_claim_check_round_trip_and_tampering(tmp_path):
    blobs = BlobStore(tmp_path)
    big = "word " * 5000
    ref = blobs.put(big)
    stage = ComplianceStage(blobs, inline_max_bytes=1024)
    out, _audit = stage.process(change(content=ref))
    doc = decode(DocumentRecord, out.value)
    assert doc.content.kind == "ref"  # still too big to travel inline
    assert blobs.get(doc.content) == big
    path = tmp_path / ref.sha256[:2] / ref.sha256
    path.write_text("tampered")
    with pytest.raises(Permanent, match="altered"):
        stage.process(change(content=ref))
    with pytest.raises(Permanent, match="unsupported blob URI scheme"):
        stage.process(change(content=BlobRef(uri="s3://bucket/x", sha256=ref.sha256, size=1)))


def test_chunk_stage_carries_acl_and_version(tmp_path):
    # sections over half the budget each: two chunks, whatever the cut points
    stage = ChunkStage(Chunker(max_tokens=8, overlap_tokens=0, min_tokens=1), BlobStore(tmp_path))
    doc = DocumentRecord(source="fs", source_kind="filesystem", doc_id="fs:a.md", op="upsert", version=5,
                         changed_at=NOW, content=InlineContent.of("# A\n\nOne two three four.\n\n## B\n\n"
                                                                  "Five six seven eight."),
                         acl=Acl(principals=("user:ann",)))
    [out] = stage.process(doc)
    from schemas.events import ChunkSet

    cs = decode(ChunkSet, out.value)
    assert cs.version == 5 and cs.acl.principals == ("user:ann",)
    assert [c.heading for c in cs.chunks] == ["A", "B"]
