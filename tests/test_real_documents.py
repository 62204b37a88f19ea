"""Real-world shapes end to end: nothing stalls, nothing goes silent, the index converges.

Runs on the session's private pipeline (broker, milvus-lite, real model, stage workers as
processes). Each test ends by comparing Milvus with what the source says it should hold
(chunk ids included), and by accounting for every file: indexed, dead-lettered or skipped,
each with a reason.
"""

from __future__ import annotations

import io
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import numpy as np
import pytest

from consumers.milvus import MilvusIndex
from infra.stack import Stack
from producers.filesystem import FilesystemSource
from ragstream.publisher import CLAIM_HEADER, Publisher
from ragstream.admin import wait_drained
from ragstream.consumer import scan_topic
from ragstream.dlq import list_letters
from ragstream.settings import Settings
from schemas import topics
from schemas.events import EmbeddedChunk, VectorSet
from schemas.serde import encode
from streams.registry import metrics_port
from tests.test_pipeline import expected, indexed, metric, paragraphs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def embedder():
    from streams.embedding import LocalEmbedder

    return LocalEmbedder()


@pytest.fixture(scope="module")
def index(pipeline, embedder):
    idx = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, embedder.dim)
    idx.ensure()
    return idx


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / f"real-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    return d


def drained(settings: Settings, timeout: float = 1500) -> None:
    assert wait_drained(settings, timeout=timeout), "the pipeline did not catch up"


def prose(seed: int, size: int) -> str:
    """Varied paragraphs (~150 tokens each) up to ``size`` bytes."""
    rng = random.Random(seed)
    vocab = ("invoice ledger audit payroll vendor contract budget forecast revenue expense approval policy "
             "quarter region customer renewal churn pipeline margin hiring travel warehouse freight tariff "
             "compliance retention subsidiary treasury liquidity covenant amortisation depreciation").split()
    out, n, i = [], 0, 0
    while n < size:
        para = f"Section {i}: " + " ".join(rng.choice(vocab) for _ in range(110)) + "."
        out.append(para)
        n += len(para) + 2
        i += 1
    return "\n\n".join(out)


def pdf_of(pages: int) -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    for p in range(pages):
        c.drawString(72, 750, f"Page {p + 1} of the annual maintenance manual.")
        c.drawString(72, 730, f"Valve {p} must be inspected every {p % 12 + 1} months by a certified engineer.")
        c.showPage()
    c.save()
    return buf.getvalue()


def health(settings: Settings, stage: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(settings, stage)}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def dead_letter_keys(settings: Settings) -> dict[str, str]:
    """doc_id → reason, over every stage's dead letters."""
    out = {}
    for stage in topics.STAGES:
        for letter in list_letters(settings, stage, timeout=10):
            out[letter.key] = f"{stage}: {letter.letter.error_message if letter.letter else '?'}"
    return out


# ----------------------------------------------------------------------------------------

@pytest.mark.timeout(1800)  # ~4,500 chunks through the real model: minutes on 2 cores
def test_awkward_real_world_files_load_and_every_one_is_accounted_for(pipeline, index, embedder, folder):
    files = {
        "big.txt": prose(1, 3_000_000).encode(),  # 3 MB of text: thousands of chunks
        "manual.pdf": pdf_of(300),
        "minified.txt": "".join(chr(97 + (i * 7) % 26) for i in range(1_000_000)).encode(),  # 1 MB, no spaces
        "latin1.txt": "Caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve r\xe9sum\xe9 for the M\xfcnchen office.".encode("latin-1"),
        "empty.txt": b"",
        "nested.html": (b"<div>" * 20_000) + b"<p>deep inside the quarterly report</p>" + (b"</div>" * 20_000),
        "list-heavy.md": ("# Build\n\n" + "\n".join(f"- step {i}: run `make target-{i}` then check the log"
                                                    for i in range(700))).encode(),
        "new\nline \u00fc.md": b"# Newline\n\nA file name with a newline and an umlaut.",
        "caf\u00e9 \u6771\u4eac.md": "# Tokyo\n\nOffices in \u6771\u4eac and caf\u00e9 culture.".encode(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    src = FilesystemSource(pipeline, folder)
    started = time.monotonic()
    src.sync()
    drained(pipeline)
    took = time.monotonic() - started

    have = indexed(index, src.source_id)
    letters = dead_letter_keys(pipeline)
    skipped = {src.doc_id(rel): info for rel, info in src.skipped_files.items()}
    # Every file is accounted for: indexed, dead-lettered or skipped, the last two with a reason.
    for rel in files:
        doc_id = src.doc_id(rel)
        state = index.doc_state(doc_id)  # an empty file is indexed with no chunks: the registry has it
        registered = state is not None and not state["deleted"]
        assert doc_id in have or registered or doc_id in letters or doc_id in skipped, f"{rel!r} vanished"
        if doc_id in letters:
            assert letters[doc_id].split(": ", 1)[1], rel
        if doc_id in skipped:
            assert skipped[doc_id].get("reason"), rel
    # What should be searchable is, exactly (chunk ids included): drift 0.
    want = {d: ids for d, ids in expected(src, embedder, pipeline).items() if d not in letters and d not in skipped}
    assert {d: ids for d, ids in have.items()} == {d: ids for d, ids in want.items() if ids}
    for name in ("big.txt", "manual.pdf", "minified.txt", "list-heavy.md", "new\nline \u00fc.md",
                 "caf\u00e9 \u6771\u4eac.md", "nested.html", "latin1.txt"):
        assert src.doc_id(name) in have, f"{name!r} is not searchable"
    assert len(have[src.doc_id("big.txt")]) > 2000
    from ragstream.verify import verify_source

    report = verify_source(pipeline, src)  # the reconciler agrees: no missing, stale or orphan document
    assert report.drift == [], report.to_dict()
    # The big document's vectors went by claim check; nothing on the topic is over the limit.
    sizes, claims = [], 0
    for msg in scan_topic(pipeline, topics.VECTORS):
        sizes.append(len(msg.value() or b""))
        claims += any(k == CLAIM_HEADER for k, _ in (msg.headers() or []))
    assert max(sizes) <= pipeline.max_message_bytes and claims >= 1
    # Searchable for real: a passage of the PDF finds the PDF.
    # milvus-lite builds segment indexes in the background after a flush (its describe_index
    # says "Finished" before they are): rows indexed a moment ago may take a few seconds to
    # appear in search results.
    query = "Valve 17 must be inspected every 6 months by a certified engineer."
    vec = embedder.embed([query])[0]
    principals = ["public", *src.acl_for((folder / "manual.pdf").stat()).principals]
    deadline = time.monotonic() + 120
    while True:  # the product's default search (hybrid: words, meaning and identifiers)
        found = {h.doc_id for h in index.search(vec, principals, limit=10, query=query, mode="hybrid")}
        if src.doc_id("manual.pdf") in found or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert src.doc_id("manual.pdf") in found, found
    print(f"awkward folder: {sum(len(v) for v in have.values())} chunks in {took:.0f} s")


def test_a_milvus_validation_error_dead_letters_one_document_and_the_partition_moves_on(pipeline, index):
    """Three VectorSets on one partition: the middle one is invalid for the collection (8-d
    vectors in a 384-d field). It is dead-lettered with Milvus' reason; the others are indexed."""
    src = f"val-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    rng = np.random.default_rng(3)

    def vset(name: str, dim: int) -> VectorSet:
        chunk = EmbeddedChunk(chunk_id=uuid.uuid4().hex, ordinal=0, text=f"{name} text", tokens=2,
                              vector=rng.standard_normal(dim).astype("<f4").tobytes())
        return VectorSet(source=src, doc_id=f"{src}:{name}", op="upsert", version=1, source_kind="webhook",
                         chunker="structural-v1", model=index_model(index), dim=dim, chunks=(chunk,),
                         acl={"principals": ["group:qa"]}, metadata={"title": name})

    docs = [vset("first", 384), vset("broken", 8), vset("last", 384)]
    with Publisher(pipeline) as pub:
        for vs in docs:  # one partition, in this order
            pub.publish_raw(topics.VECTORS, vs.doc_id, encode(vs), partition=0)
    drained(pipeline, timeout=120)
    assert set(indexed(index, src)) == {f"{src}:first", f"{src}:last"}
    letters = [lt for lt in list_letters(pipeline, "index") if lt.key == f"{src}:broken"]
    assert len(letters) == 1
    assert "dim" in letters[0].letter.error_message and letters[0].letter.error_type == "IndexInputError"


def index_model(index: MilvusIndex) -> str:
    rows = index.first_rows('chunk_id != ""', ["model"], limit=1)
    return rows[0]["model"] if rows else "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.timeout(1200)
def test_milvus_down_for_a_minute_under_load_loses_nothing_and_health_tells(pipeline, index, embedder, folder):
    """Milvus stopped for 60 s while documents flow: the index stage retries within its budget,
    /healthz says which partition is stuck and on which document, nothing is dead-lettered,
    and once Milvus is back everything is indexed and health is 200 again."""
    src = FilesystemSource(pipeline, folder)
    before = dead_letter_keys(pipeline)
    milvus = Stack(pipeline, ("milvus",))
    milvus["milvus"].stop()
    try:
        for i in range(30):
            (folder / f"load-{i}.md").write_text(f"# Load {i}\n\n" + paragraphs(500 + i, 4))
        src.sync()
        deadline = time.monotonic() + 60
        seen_stuck = {}
        while time.monotonic() < deadline:
            for stage in ("embed", "index"):  # embed reads Milvus too (vectors to reuse)
                code, body = health(pipeline, stage)
                # The reason names Milvus once a call has failed; a call that hangs until its
                # timeout shows "processing has not finished" first.
                if code == 503 and body.get("status") == "degraded" and \
                        (body.get("doc_id") or "").startswith(src.source_id):
                    seen_stuck[stage] = body
            time.sleep(2)
    finally:
        milvus.up()
    assert seen_stuck, "no worker's /healthz reported the stuck partition"
    for body in seen_stuck.values():
        assert body["doc_id"].startswith(src.source_id), body
    drained(pipeline, timeout=600)
    index.ensure()
    assert indexed(index, src.source_id) == expected(src, embedder, pipeline)
    from ragstream.verify import verify_source

    assert verify_source(pipeline, src).drift == []
    assert dead_letter_keys(pipeline) == before, "something was dead-lettered during a 60 s outage"
    deadline = time.monotonic() + 30
    while {health(pipeline, s)[0] for s in ("embed", "index")} != {200} and time.monotonic() < deadline:
        time.sleep(1)
    assert health(pipeline, "index")[0] == 200 and health(pipeline, "embed")[0] == 200
    assert sum(metric(pipeline, stage, "ragstream_stage_retries_total") for stage in seen_stuck) > 0
