"""verify's comparison, pure: what counts as drift in the rows of a document."""

from __future__ import annotations

from consumers.milvus import stored_acl
from ragstream.connector import ListedDocument
from ragstream.verify import Compliant, IndexedDocument, compare
from schemas.events import Acl

ACL = stored_acl(Acl(principals=("group:team",)))


def rows(version: int, *ids: str) -> list[dict]:
    return [{"chunk_id": c, "version": version, "acl": ACL} for c in ids]


def check(indexed: IndexedDocument):
    listing = [ListedDocument("s:a", 7, ("group:team",))]
    return compare("s", listing, {"s:a": indexed}, {"s:a": Compliant(7, False, "text")}, {},
                   lambda doc_id, text: {"c1", "c2"})


def test_rows_written_at_an_earlier_version_are_current_when_their_chunks_did_not_change():
    """An identical republish (a forced re-read, a lost cursor) or an edit that touched other
    chunks leaves unchanged rows at the version they were written at."""
    report = check(IndexedDocument(7, 0, False, rows(3, "c1") + rows(7, "c2")))
    assert report.findings == []
    assert check(IndexedDocument(7, 0, False, rows(5, "c1", "c2"))).findings == []


def test_a_row_newer_than_the_applied_version_is_drift():
    [finding] = check(IndexedDocument(7, 0, False, rows(7, "c1") + rows(9, "c2"))).findings
    assert finding.kind == "stale" and "above the applied version 7" in finding.reason


def test_a_leftover_chunk_of_an_old_version_is_drift():
    [finding] = check(IndexedDocument(7, 0, False, rows(7, "c1", "c2") + rows(3, "c0"))).findings
    assert finding.kind == "stale" and "chunk ids differ" in finding.reason
    assert "none in common" not in finding.reason  # an edit left behind, not another chunker


def test_no_chunk_id_in_common_points_at_a_reindex():
    """After a chunker upgrade (structural-v1 -> v2) every document's ids differ entirely."""
    [finding] = check(IndexedDocument(7, 0, False, rows(7, "old1", "old2", "old3"))).findings
    assert finding.kind == "stale" and "none in common" in finding.reason and "ragstream reindex" in finding.reason
