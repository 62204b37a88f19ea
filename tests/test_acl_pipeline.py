"""Permission-only changes: a chmod at the source reaches Milvus through ``rag.acl`` within
seconds, without re-embedding or re-chunking anything (counted from the workers' metrics
and from ``rag.chunks``), on the session's private pipeline with the watcher running."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from consumers.milvus import MilvusIndex
from producers.filesystem import FilesystemSource, group_name, user_name
from ragstream.admin import wait_drained
from ragstream.consumer import scan_topic
from schemas import topics
from streams.embedding import make_embedder, model_dim
from tests.test_pipeline import metric

pytestmark = pytest.mark.integration


def visible(index: MilvusIndex, vector: list[float], principal: str, doc_id: str) -> bool:
    return any(h.doc_id == doc_id for h in index.search(vector, [principal], limit=50))


def chunk_messages(pipeline, doc_id: str) -> int:
    return sum(1 for m in scan_topic(pipeline, topics.CHUNKS) if m.key() == doc_id.encode())


def test_revoking_a_permission_hides_the_document_within_seconds_without_reembedding(pipeline, tmp_path):
    folder = tmp_path / "perm"
    folder.mkdir()
    doc = folder / "roadmap.md"
    doc.write_text("# Roadmap\n\nThe storage migration ships in the third quarter, after the audit.\n")
    os.chmod(doc, 0o640)
    source = FilesystemSource(pipeline, folder, source_id=f"perm-{uuid.uuid4().hex[:6]}", debounce_s=0.1)
    stop = threading.Event()
    watcher = threading.Thread(target=source.watch, args=(stop,), daemon=True)
    watcher.start()
    try:
        doc_id = source.doc_id("roadmap.md")
        group = f"group:{group_name(doc.stat().st_gid)}"
        index = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, model_dim(pipeline))
        index.ensure()
        vector = make_embedder(pipeline).embed(["when does the storage migration ship?"])[0]
        deadline = time.monotonic() + 120
        while not visible(index, vector, group, doc_id):
            assert time.monotonic() < deadline, "the document was never indexed"
            time.sleep(0.5)
        assert wait_drained(pipeline, timeout=120)
        embedded = metric(pipeline, "embed", "ragstream_chunks_embedded_total")
        reused = metric(pipeline, "embed", "ragstream_chunks_reused_total")
        chunk_sets = chunk_messages(pipeline, doc_id)

        t0 = time.monotonic()
        os.chmod(doc, 0o600)  # the group may no longer read it
        while visible(index, vector, group, doc_id):
            assert time.monotonic() - t0 < 10, "a revoked permission still shows after 10 s"
            time.sleep(0.2)
        owner = f"user:{user_name(doc.stat().st_uid)}"
        # The owner-only set is new: a searcher learns it within acl_refresh_s.
        while not visible(index, vector, owner, doc_id):
            assert time.monotonic() - t0 < 10 + pipeline.acl_refresh_s, "the owner no longer sees it"
            time.sleep(0.2)

        os.chmod(doc, 0o640)  # and granted back
        t0 = time.monotonic()
        while not visible(index, vector, group, doc_id):
            assert time.monotonic() - t0 < 10, "a granted permission did not show within 10 s"
            time.sleep(0.2)
        assert wait_drained(pipeline, timeout=120)
        assert metric(pipeline, "embed", "ragstream_chunks_embedded_total") == embedded, "nothing re-embedded"
        assert metric(pipeline, "embed", "ragstream_chunks_reused_total") == reused, "nothing even re-read"
        assert chunk_messages(pipeline, doc_id) == chunk_sets, "nothing re-chunked"
        assert metric(pipeline, "index", "ragstream_acl_rows_updated_total") >= 2
    finally:
        stop.set()
        watcher.join(10)
