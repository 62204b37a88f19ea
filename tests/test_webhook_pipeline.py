"""A signed push becomes searchable through the real pipeline (issue 17)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from consumers.milvus import MilvusIndex
from producers.webhook import sign
from ragstream.admin import wait_drained
from ragstream.api import create_app
from schemas.events import InlineContent
from streams.embedding import model_dim

pytestmark = pytest.mark.integration
SECRET = "pipeline-webhook-secret-0123456789"


def test_a_signed_push_is_indexed_and_a_refused_one_is_not(pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    sources = tmp_path / "sources.toml"
    sources.write_text('[sources.hook]\nkind = "webhook"\nsecret_env = "HOOK_SECRET"\n')
    s = pipeline.model_copy(update={"sources_file": sources})

    def push(doc: str, text: str, secret: str = SECRET) -> int:
        body = json.dumps({"schema_version": 1, "source": "hook", "source_kind": "webhook", "doc_id": doc,
                           "op": "upsert", "version": 1, "changed_at": "2026-11-20T10:00:00Z",
                           "content": InlineContent.of(text).model_dump(mode="json"),
                           "acl": {"principals": ["group:support"]}}).encode()
        ts = int(time.time())
        return client.post("/v1/webhooks/hook", content=body, headers={
            "X-Ragstream-Timestamp": str(ts), "X-Ragstream-Signature": sign(secret.encode(), ts, body)}).status_code

    with TestClient(create_app(s)) as client:
        assert push("hook:ticket-1", "The printer on floor three jams on duplex jobs.") == 202
        assert push("hook:ticket-2", "Forged ticket.", secret="not-the-shared-secret-at-all") == 401
    assert wait_drained(s, timeout=300)
    index = MilvusIndex(s.resolved_milvus_uri, s.collection, model_dim(s))
    index.ensure()
    assert index.chunk_ids_of("hook:ticket-1")
    assert index.doc_state("hook:ticket-2") is None
