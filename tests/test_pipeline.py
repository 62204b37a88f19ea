"""The ingestion pipeline end to end: real broker, real milvus-lite, real model, real workers.

One private stack per module (own broker, Milvus, stage workers, home and ports). After each
step the test waits until every stage's consumer group has caught up, then compares what
Milvus holds with what the folder says it should hold — chunk ids included.
"""

from __future__ import annotations

import functools
import re
import shutil
import threading
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from consumers.milvus import MilvusIndex, escape_literal
from infra.stack import WORKERS, Stack, isolated_settings, running_pipeline
from producers.extract import content_type_for, extract
from producers.filesystem import FilesystemSource
from ragstream.publisher import Publisher
from ragstream.admin import wait_drained
from ragstream.dlq import list_letters, replay
from ragstream.settings import Settings
from schemas import topics
from schemas.events import ChangeEvent, InlineContent
from streams.chunking import Chunker
from streams.embedding import LocalEmbedder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedder():
    return LocalEmbedder()


@pytest.fixture(scope="module")
def index(pipeline, embedder):
    idx = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, embedder.dim)
    idx.ensure()
    return idx


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / f"docs-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    return d


def drained(settings: Settings) -> None:
    assert wait_drained(settings, timeout=300), "the pipeline did not catch up"


def expected(source: FilesystemSource, embedder, settings: Settings) -> dict[str, set[str]]:
    """doc_id → the chunk ids the folder's current content should produce."""
    chunker = Chunker(count=embedder.count_tokens, max_tokens=settings.chunk_max_tokens,
                      overlap_tokens=settings.chunk_overlap_tokens)
    out = {}
    for rel in source.listing():
        ctype = content_type_for(rel)
        if ctype is None:
            continue
        try:
            text = extract((source.root / rel).read_bytes(), ctype)
        except Exception:  # noqa: BLE001 - unreadable files are expected to be absent
            continue
        out[source.doc_id(rel)] = {c.chunk_id for c in chunker.chunk(source.doc_id(rel), compliant(settings, source, text))}
    return out


def compliant(settings: Settings, source: FilesystemSource, text: str) -> str:
    """The text as the compliance stage passes it on under the pipeline's policy."""
    from streams.pii import Detector
    from streams.policy import KeyRing, decide, load_policy

    policy = load_policy(settings.policy_file).for_source(source.source_id)
    key = KeyRing(settings.home / "keys").key(policy.tenant)
    return decide(text, _detector().analyze(text), policy, key).text


@functools.lru_cache(maxsize=1)
def _detector():
    from streams.pii import Detector

    return Detector()


def indexed(index: MilvusIndex, source_id: str) -> dict[str, set[str]]:
    rows = index.rows(f'source == "{escape_literal(source_id)}"', ["chunk_id", "doc_id"])
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["doc_id"], set()).add(r["chunk_id"])
    assert len(rows) == sum(len(v) for v in out.values())
    return out


def paragraphs(seed: int, n: int, words: int = 70) -> str:
    import random

    rng = random.Random(seed)
    vocab = ("invoice ledger audit payroll vendor contract budget forecast revenue expense approval "
             "policy quarter region customer renewal churn pipeline margin hiring travel").split()
    paras = []
    for i in range(n):
        ws = [rng.choice(vocab) for _ in range(words)]
        paras.append(f"Paragraph {i} says " + " ".join(ws) + ".")
    return "\n\n".join(paras)


def metric(settings: Settings, stage: str, name: str) -> float:
    from streams.registry import metrics_port

    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(settings, stage)}/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", body, re.M))


# ----------------------------------------------------------------------------------------

def test_create_modify_rename_delete(pipeline, index, embedder, folder):
    src = FilesystemSource(pipeline, folder)
    (folder / "a.md").write_text("# Alpha\n\n" + paragraphs(1, 6))
    (folder / "sub").mkdir()
    (folder / "sub" / "b.txt").write_text(paragraphs(2, 3))
    (folder / "c.html").write_text("<h1>Gamma</h1><p>" + paragraphs(3, 2) + "</p>")
    for step in ("create", "modify", "rename", "delete"):
        if step == "modify":
            (folder / "a.md").write_text("# Alpha\n\n" + paragraphs(1, 6).replace("Paragraph 3", "Paragraph three"))
        elif step == "rename":
            (folder / "sub" / "b.txt").rename(folder / "b-renamed.txt")
        elif step == "delete":
            (folder / "c.html").unlink()
        src.sync()
        drained(pipeline)
        assert indexed(index, src.source_id) == expected(src, embedder, pipeline), f"after {step}"
    assert set(indexed(index, src.source_id)) == {src.doc_id("a.md"), src.doc_id("b-renamed.txt")}


def test_changes_made_while_stopped_converge_on_start(pipeline, index, embedder, folder):
    first = FilesystemSource(pipeline, folder)
    for i in range(4):
        (folder / f"d{i}.md").write_text(paragraphs(10 + i, 3))
    first.sync()
    drained(pipeline)
    # ragstream is "down": the folder changes behind its back
    (folder / "d0.md").unlink()
    (folder / "d1.md").write_text(paragraphs(99, 4))
    (folder / "d2.md").rename(folder / "d2-moved.md")
    (folder / "new.txt").write_text(paragraphs(42, 2))
    restarted = FilesystemSource(pipeline, folder)  # a new process: state comes from disk
    stats = restarted.sync()
    assert (stats.added, stats.changed, stats.deleted) == (2, 1, 2)
    drained(pipeline)
    assert indexed(index, restarted.source_id) == expected(restarted, embedder, pipeline)


def test_watcher_publishes_live_changes(pipeline, index, folder):
    src = FilesystemSource(pipeline, folder, debounce_s=0.2)
    stop = threading.Event()
    watcher = threading.Thread(target=src.watch, args=(stop,), daemon=True)
    watcher.start()
    try:
        time.sleep(0.5)
        target = folder / "live.md"
        for i in range(5):  # an editor's burst of saves
            target.write_text(f"# Live\n\nDraft {i}. " + paragraphs(7, 1))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and src.doc_id("live.md") not in indexed(index, src.source_id):
            time.sleep(0.2)
        assert src.doc_id("live.md") in indexed(index, src.source_id)
        target.unlink()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and src.doc_id("live.md") in indexed(index, src.source_id):
            time.sleep(0.2)
        assert src.doc_id("live.md") not in indexed(index, src.source_id)
    finally:
        stop.set()
        watcher.join(10)
    drained(pipeline)
    rows = index.rows(f'doc_id == "{escape_literal(src.doc_id("live.md"))}"')
    assert rows == []


def test_kill_9_of_embed_and_index_workers_mid_stream(pipeline, index, embedder, folder):
    src = FilesystemSource(pipeline, folder)
    for i in range(40):
        (folder / f"bulk{i:02d}.md").write_text(paragraphs(100 + i, 8))
    src.sync()
    stack = Stack(pipeline, WORKERS)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not indexed(index, src.source_id):
        time.sleep(0.1)
    from ragstream.admin import stage_lag

    lag = stage_lag(pipeline)
    stack["worker-embed"].kill()
    stack["worker-index"].kill()
    assert lag["embed"] + lag["index"] > 0, "work had already finished before the kill: nothing was proven"
    stack.up()
    drained(pipeline)
    assert indexed(index, src.source_id) == expected(src, embedder, pipeline)


def test_corrupt_pdf_and_binary_file_do_not_stop_the_pipeline(pipeline, index, embedder, folder):
    src = FilesystemSource(pipeline, folder)
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage that is not a PDF\n")
    (folder / "photo.png").write_bytes(bytes(range(256)) * 10)
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02 not text")
    (folder / "fine.md").write_text(paragraphs(5, 2))
    stats = src.sync()
    assert (stats.added, stats.skipped, stats.failed) == (1, 2, 1)
    drained(pipeline)
    assert set(indexed(index, src.source_id)) == {src.doc_id("fine.md")}

    letters = [lt for lt in list_letters(pipeline, "ingest") if lt.key == src.doc_id("report.pdf")]
    assert len(letters) == 1
    assert "cannot read PDF" in letters[0].letter.error_message

    # The PDF is fixed at its source; replaying the dead letter indexes it.
    (folder / "report.pdf").write_bytes(make_pdf(["Quarterly revenue grew in every region.",
                                                  "Travel expenses fell after the new approval policy."]))
    replayed, _ = replay(pipeline, "ingest")
    assert replayed >= 1
    drained(pipeline)
    got = indexed(index, src.source_id)
    assert src.doc_id("report.pdf") in got
    assert got == expected(src, embedder, pipeline)
    # Replayed once, not again. (Letters of other tests' sources that cannot be opened any more
    # stay in the shared DLQ and count as not replayed.)
    assert replay(pipeline, "ingest")[0] == 0


def make_pdf(lines: list[str]) -> bytes:
    import io

    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    for i, line in enumerate(lines):
        c.drawString(72, 750 - 20 * i, line)
    c.save()
    return buf.getvalue()


def test_editing_one_paragraph_of_a_50_chunk_document_re_embeds_at_most_2(pipeline, index, embedder, folder):
    src = FilesystemSource(pipeline, folder)
    text = paragraphs(77, 50, words=120)
    (folder / "long.md").write_text(text)
    src.sync()
    drained(pipeline)
    assert len(indexed(index, src.source_id)[src.doc_id("long.md")]) == 50
    before = metric(pipeline, "embed", "ragstream_chunks_embedded_total")
    reused_before = metric(pipeline, "embed", "ragstream_chunks_reused_total")
    (folder / "long.md").write_text(text.replace("Paragraph 25 says", "Paragraph 25 now says"))
    src.sync()
    drained(pipeline)
    embedded = metric(pipeline, "embed", "ragstream_chunks_embedded_total") - before
    reused = metric(pipeline, "embed", "ragstream_chunks_reused_total") - reused_before
    assert embedded in (1, 2)  # the edited chunk, and its successor through the overlap
    assert embedded + reused == 50
    assert indexed(index, src.source_id) == expected(src, embedder, pipeline)


def test_out_of_order_versions_leave_the_newer_indexed(pipeline, index):
    doc_id = f"ooo:{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)

    def event(version: int, text: str) -> ChangeEvent:
        return ChangeEvent(source="ooo", source_kind="webhook", doc_id=doc_id, op="upsert", version=version,
                           changed_at=now, content=InlineContent.of(text), acl={"principals": ["group:qa"]})

    with Publisher(pipeline) as pub:
        pub.publish(topics.CHANGES, event(200, "The newer text about invoices."))
        pub.publish(topics.CHANGES, event(100, "The older text about payroll."))
    drained(pipeline)
    rows = index.rows(f'doc_id == "{doc_id}"', ["text", "version"])
    assert [r["version"] for r in rows] == [200]
    assert "newer" in rows[0]["text"]


def test_milvus_restart_mid_stream_loses_nothing(pipeline, index, embedder, folder):
    """Milvus goes away while documents are in flight; the stages retry, then converge."""
    src = FilesystemSource(pipeline, folder)
    milvus = Stack(pipeline, ("milvus",))
    milvus["milvus"].stop()
    for i in range(5):
        (folder / f"m{i}.md").write_text(paragraphs(300 + i, 3))
    src.sync()
    time.sleep(3)  # the embed and index stages are now failing and retrying
    milvus.up()
    drained(pipeline)
    index.ensure()
    assert indexed(index, src.source_id) == expected(src, embedder, pipeline)


def test_search_command_filters_by_acl(pipeline, index, folder, monkeypatch):
    from click.testing import CliRunner

    from infra.stack import settings_env
    from ragstream.cli import cli
    from ragstream.settings import get_settings

    src = FilesystemSource(pipeline, folder)
    secret = folder / "salaries.md"
    secret.write_text("# Salaries\n\nThe payroll budget for the platform team is confidential.")
    secret.chmod(0o600)
    src.sync()
    drained(pipeline)
    for k, v in settings_env(pipeline).items():
        if k.startswith("RAGSTREAM_"):
            monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        me = runner.invoke(cli, ["search", "confidential salaries of the platform team", "-n", "10"])
        # Narrowing to a principal of one's own is allowed; naming someone else needs an admin key.
        public = runner.invoke(cli, ["search", "confidential salaries of the platform team", "--as", "public"])
        other = runner.invoke(cli, ["search", "confidential salaries of the platform team", "--as", "user:somebody-else"])
    finally:
        get_settings.cache_clear()
    assert me.exit_code == 0, me.output
    assert "Salaries" in me.output and secret.as_uri() in me.output
    assert public.exit_code == 0 and "Salaries" not in public.output, public.output
    assert other.exit_code != 0 and "Salaries" not in other.output
    assert "admin API key" in other.output


def test_every_worker_serves_health_and_metrics(pipeline):
    import json as _json

    from streams.registry import PIPELINE as STAGES, metrics_port

    for stage in STAGES:
        port = metrics_port(pipeline, stage)
        health = _json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())
        assert health["stage"] == stage and health["status"] == "ok"
        assert isinstance(health["partitions"], list)  # per assigned partition: waiting, seconds since progress
        names = ("ragstream_stage_events_in_total", "ragstream_stage_processing_seconds_bucket",
                 "ragstream_stage_seconds_since_progress")  # from start (the last once partitions are assigned)
        deadline = time.monotonic() + 120
        while True:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            missing = [n for n in names if f'{n}{{' not in body]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert not missing and f'stage="{stage}"' in body, f"{stage} lacks {missing}"
        assert "# TYPE ragstream_consumer_lag_messages gauge" in body  # per partition once its end is known
        assert "doc_id=" not in body  # no per-document label: bounded cardinality, no personal data
