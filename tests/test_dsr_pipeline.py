"""Data-subject requests and retention, end to end on the session's private pipeline.

One subject, Margaret Holloway, appears in documents of two sources: ``open-*`` keeps
names and emails in clear text, the other pseudonymizes them (GDPR default), so both
forms an erasure must remove are present. The test first proves the subject is findable
everywhere (search, Milvus query, topics), then erases her through ``ragstream dsr erase``
and reads every store again — Milvus rows, a semantic search, and every topic downstream
of compliance from its first offset — and checks the receipt says the same.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from click.testing import CliRunner

from consumers.milvus import MilvusIndex
from producers.filesystem import FilesystemSource
from ragstream.admin import wait_drained
from ragstream.cli import cli
from ragstream.consumer import scan_topic
from schemas import topics
from streams.embedding import make_embedder, model_dim
from streams.policy import KeyRing, subject_ref, subject_tokens

pytestmark = pytest.mark.integration

NAME, EMAIL = "Margaret Holloway", "margaret.holloway@example.org"
OTHER = "Tobias Greene"

OPEN_DOCS = {
    "vendor-review.md": f"""# Vendor review with {NAME}

{NAME} ({EMAIL}) led the vendor review for the Lisbon office.
{OTHER} joined the second meeting and signed off on the revised budget.

## Outcome

The committee accepted the proposal. {NAME} will send the minutes.
""",
    "canteen.md": "# Canteen menu\n\nLentil soup on Monday, grilled fish on Friday. Coffee is free.\n",
}
PSEUDO_DOCS = {
    "onboarding.txt": f"""Onboarding checklist prepared by {NAME}.

Questions go to {EMAIL}. Laptops are handed out on the first morning; badges at reception.
""",
}

#: Downstream of compliance: what an erasure must leave clean (rag.changes is raw, upstream,
#: and forgets by retention).
DOWNSTREAM = [topics.DOCUMENTS, topics.CHUNKS, topics.VECTORS, topics.AUDIT, topics.AUDIT_EVENTS, topics.DSR,
              topics.DSR_ERASED] + [topics.dlq_topic(s) for s in ("chunk", "embed", "index", "audit", "dsr")]


def run(pipeline, *args: str):
    env = {"RAGSTREAM_KAFKA_BOOTSTRAP": pipeline.kafka_bootstrap}
    return CliRunner().invoke(cli, ["--home", str(pipeline.home), *args], env=env)


def topic_hits(pipeline, needles: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    raw = [n.encode() for n in needles]
    for topic in DOWNSTREAM:
        n = sum(1 for m in scan_topic(pipeline, topic)
                if any(x in (m.key() or b"") + b"\x00" + (m.value() or b"") for x in raw))
        if n:
            out[topic] = n
    return out


@pytest.fixture(scope="module")
def subject(pipeline, tmp_path_factory):
    sources = []
    for prefix, docs in (("open", OPEN_DOCS), ("pseudo", PSEUDO_DOCS)):
        folder = tmp_path_factory.mktemp(prefix)
        for name, text in docs.items():
            (folder / name).write_text(text, encoding="utf-8")
        src = FilesystemSource(pipeline, folder, source_id=f"{prefix}-{uuid.uuid4().hex[:6]}")
        src.sync()
        sources.append(src)
    assert wait_drained(pipeline, timeout=300)
    key = KeyRing(pipeline.home / "keys").key("default")
    refs = [subject_ref(key, "PERSON", NAME), subject_ref(key, "EMAIL_ADDRESS", EMAIL)]
    index = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, model_dim(pipeline))
    index.ensure()
    return sources, refs, index


def rows_of(index, sources) -> list[dict]:
    expr = " or ".join(f'source == "{s.source_id}"' for s in sources)
    return index.rows(expr, ["doc_id", "text", "title", "heading", "subjects"])


def test_access_then_erasure_across_two_sources(pipeline, subject):
    sources, refs, index = subject
    tokens = subject_tokens(refs)
    clear = [NAME, EMAIL]

    # -- before: the subject is findable in both forms, in both sources --------------------
    rows = rows_of(index, sources)
    texts = " ".join(r["text"] + r["title"] for r in rows)
    assert NAME in texts and EMAIL in texts, "open source keeps the name in clear text"
    assert any(t in texts for t in tokens), "the other source holds her pseudonym token"
    assert {r["doc_id"].split(":")[0] for r in rows if refs[0] in r["subjects"]} == {s.source_id for s in sources}
    embedder = make_embedder(pipeline)
    hits = index.search(embedder.embed([f"who led the vendor review? {NAME}"])[0], ["public", "user:" + _me()], 10)
    assert any(NAME in h.text for h in hits), "search finds her before the erasure"
    before = topic_hits(pipeline, clear + tokens)
    assert topics.DOCUMENTS in before and topics.CHUNKS in before and topics.VECTORS in before

    # -- access: an export of every document that references her ------------------------
    res = run(pipeline, "dsr", "access", "--name", NAME, "--email", EMAIL, "--timeout", "300")
    assert res.exit_code == 0, res.output
    receipt = json.loads(res.output[res.output.index("{"):])
    assert receipt["documents"] == 2 and receipt["milvus_rows"] >= 2
    export = json.loads(open(receipt["export"], encoding="utf-8").read())
    assert sorted(d["doc_id"].split(":")[1] for d in export["documents"]) == ["onboarding.txt", "vendor-review.md"]
    assert os.stat(receipt["export"]).st_mode & 0o077 == 0, "the export is readable by its owner only"

    # -- erasure -----------------------------------------------------------------------------
    res = run(pipeline, "dsr", "erase", "--name", NAME, "--email", EMAIL, "--timeout", "400")
    assert res.exit_code == 0, res.output
    receipt = json.loads(res.output[res.output.index("{"):])
    assert receipt["verified"] is True, receipt
    assert receipt["documents_rewritten"] == 2 and receipt["documents_restricted"] == 0
    assert receipt["milvus_rows_before"] >= 2 and receipt["milvus_rows_after"] == 0
    assert receipt["records_truncated"][topics.CHUNKS] > 0 and receipt["records_truncated"][topics.VECTORS] > 0
    assert not any(receipt["remaining"].values()) and receipt["deadline_met"] is True

    # -- after: nothing anywhere downstream; other people and documents untouched ----------
    rows = rows_of(index, sources)
    texts = " ".join(r["text"] + r["title"] + r["heading"] for r in rows)
    assert not any(x in texts for x in clear + tokens)
    assert not any(ref in r["subjects"] for r in rows for ref in refs)
    assert OTHER in texts and "Lentil soup" in texts and "[PERSON]" in texts
    assert len({r["doc_id"] for r in rows}) == 3, "erasure removes the subject, not the documents"
    hits = index.search(embedder.embed([f"who led the vendor review? {NAME}"])[0], ["public", "user:" + _me()], 10)
    assert hits and not any(NAME in h.text or EMAIL in h.text for h in hits)
    assert topic_hits(pipeline, clear + tokens) == {}, "read from the first offset, no topic holds her"

    # -- she stays out of later versions (the suppression list) -------------------------------
    doc = sources[0].root / "vendor-review.md"
    doc.write_text(OPEN_DOCS["vendor-review.md"] + f"\nAddendum: {NAME} approved the travel budget.\n")
    sources[0].sync()
    assert wait_drained(pipeline, timeout=300)
    rows = rows_of(index, sources[:1])
    texts = " ".join(r["text"] for r in rows)
    assert "travel budget" in texts and NAME not in texts and OTHER in texts
    assert not any(ref in r["subjects"] for r in rows_of(index, sources) for ref in refs)

    listed = run(pipeline, "dsr", "list")
    assert listed.exit_code == 0, listed.output
    assert "erasure" in listed.output and "access" in listed.output and "OVERDUE" not in listed.output


def test_retention_removes_expired_documents_unless_held(pipeline, tmp_path_factory):
    from streams.audit import read_chain

    index = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, model_dim(pipeline))
    index.ensure()
    srcs = {}
    for prefix in ("expiring", "held"):
        folder = tmp_path_factory.mktemp(prefix)
        (folder / "memo.md").write_text(f"# {prefix} memo\n\nQuarterly figures are in the shared drive.\n")
        srcs[prefix] = FilesystemSource(pipeline, folder, source_id=f"{prefix}-{uuid.uuid4().hex[:6]}")
        srcs[prefix].sync()
    assert wait_drained(pipeline, timeout=300)
    deadline = time.monotonic() + 60
    while index.rows(f'source == "{srcs["expiring"].source_id}"', ["doc_id"]) and time.monotonic() < deadline:
        time.sleep(1)
    assert index.rows(f'source == "{srcs["expiring"].source_id}"', ["doc_id"]) == [], "expired document left"
    assert index.rows(f'source == "{srcs["held"].source_id}"', ["doc_id"]), "legal hold keeps the document"
    deleted = [r for r in read_chain(pipeline) if r.action == "retention.delete"]
    assert any(r.target.startswith(srcs["expiring"].source_id) for r in deleted)
    assert not any(r.target.startswith(srcs["held"].source_id) for r in deleted)


def _me() -> str:
    from producers.filesystem import user_name

    return user_name(os.getuid())
