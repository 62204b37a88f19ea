"""`ragstream verify` against the real pipeline, and what `ragstream up` prints.

verify is the oracle of the other end-to-end tests, so here it is shown to find each kind
of drift made on purpose — in the index (rows and registry entries removed, a wrong ACL, a
document the source never had) and at the source (a change not published yet) — and to
report nothing after a normal load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from consumers.milvus import MilvusIndex, escape_literal
from infra.stack import Stack, settings_env
from producers.filesystem import FilesystemSource
from ragstream.publisher import Publisher
from ragstream.admin import wait_drained
from ragstream.settings import Settings
from schemas import topics
from schemas.events import ChangeEvent, InlineContent
from streams.embedding import model_dim

pytestmark = pytest.mark.integration


def paragraphs(seed: int, n: int, words: int = 60) -> str:
    import random

    rng = random.Random(seed)
    vocab = ("invoice ledger audit payroll vendor contract budget forecast revenue expense approval "
             "policy quarter region customer renewal churn pipeline margin hiring travel").split()
    return "\n\n".join(f"Paragraph {i} says " + " ".join(rng.choice(vocab) for _ in range(words)) + "."
                       for i in range(n))


def verify(settings: Settings, monkeypatch, *args: str) -> tuple[int, dict]:
    from ragstream.cli import cli
    from ragstream.settings import get_settings

    for k, v in settings_env(settings).items():
        if k.startswith("RAGSTREAM_"):
            monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["verify", *args, "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def findings(report: dict) -> dict[str, tuple[str, str]]:
    return {f["doc_id"]: (f["kind"], f["reason"]) for f in report["sources"][0]["findings"]}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / f"docs-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    return d


def test_verify_finds_no_drift_after_a_load_and_each_kind_of_drift_made_on_purpose(pipeline, folder, monkeypatch):
    src = FilesystemSource(pipeline, folder)
    for name in "abcdef":
        (folder / f"{name}.md").write_text(f"# {name.upper()}\n\n" + paragraphs(ord(name), 4))
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n1 0 obj not a pdf at all\n")  # dead-lettered at ingestion
    (folder / "photo.png").write_bytes(bytes(range(256)))  # not a document: skipped
    with open(folder / "huge.txt", "wb") as f:  # sparse: above the 64 MiB limit without using the disk
        f.truncate(pipeline.max_document_bytes + 1)
    stats = src.sync()
    assert (stats.added, stats.failed, stats.skipped_by_reason) == (6, 1, {"too_large": 1, "unsupported": 1})
    assert wait_drained(pipeline, timeout=300)

    code, report = verify(pipeline, monkeypatch, src.source_id)
    assert code == 0, report
    assert report["drift"] == 0
    counts = report["sources"][0]["counts"]
    assert (counts["skipped"], counts["dead_lettered"], report["sources"][0]["listed"]) == (2, 1, 6)
    assert "cannot read PDF" in findings(report)[src.doc_id("report.pdf")][1]
    assert "RAGSTREAM_MAX_DOCUMENT_BYTES" in findings(report)[src.doc_id("huge.txt")][1]

    # Drift, made on purpose.
    index = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, model_dim(pipeline))
    collection = index.ensure()

    def where(rel: str) -> str:
        return f'doc_id == "{escape_literal(src.doc_id(rel))}"'

    index.client.delete(collection_name=collection, filter=where("a.md"))  # a: gone from the index
    index.client.delete(collection_name=f"{collection}_docs", filter=where("a.md"))
    one_row = index.rows(where("b.md"), ["chunk_id"])[0]["chunk_id"]  # b: one chunk lost
    index.client.delete(collection_name=collection, filter=f'chunk_id == "{one_row}"')
    index.set_acl(src.doc_id("c.md"), "|user:mallory|")  # c: somebody else may read it
    (folder / "d.md").write_text("# D\n\nRewritten while nobody published it.")  # d: changed, not synced
    ghost = ChangeEvent(source=src.source_id, source_kind="filesystem", doc_id=src.doc_id("ghost.md"), op="upsert",
                        version=1, changed_at=datetime.now(timezone.utc),
                        content=InlineContent.of("A document the folder never had."), acl={"principals": ["group:x"]})
    with Publisher(pipeline) as pub:
        pub.publish(topics.CHANGES, ghost)  # ghost: in the index, not in the source
    assert wait_drained(pipeline, timeout=300)

    code, report = verify(pipeline, monkeypatch, src.source_id)
    assert code == 1
    got = {d: kind for d, (kind, _) in findings(report).items()}
    assert got == {src.doc_id("a.md"): "missing", src.doc_id("b.md"): "stale", src.doc_id("c.md"): "stale",
                   src.doc_id("d.md"): "stale", src.doc_id("ghost.md"): "orphan",
                   src.doc_id("report.pdf"): "dead_lettered", src.doc_id("photo.png"): "skipped",
                   src.doc_id("huge.txt"): "skipped"}
    reasons = findings(report)
    assert "chunk ids differ: 1 missing" in reasons[src.doc_id("b.md")][1]
    assert "|user:mallory|" in reasons[src.doc_id("c.md")][1]
    assert "changed at the source" in reasons[src.doc_id("d.md")][1]
    assert report["drift"] == 5
    assert report["sources"][0]["counts"] == {"missing": 1, "stale": 3, "orphan": 1, "skipped": 2,
                                                    "dead_lettered": 1, "blocked": 0}
    prom = (pipeline.home / "metrics" / "verify.prom").read_text()
    assert f'ragstream_verify_drift_documents{{kind="stale",source="{src.source_id}"}} 3.0' in prom

    # Publishing the changed file mends d (the rest needs a replay or a re-sync by hand).
    src.sync()
    assert wait_drained(pipeline, timeout=300)
    _, report = verify(pipeline, monkeypatch, str(folder))  # by folder this time
    assert src.doc_id("d.md") not in findings(report)
    assert report["drift"] == 4


def test_verify_says_which_sources_exist_when_given_an_unknown_one(pipeline, monkeypatch):
    from ragstream.cli import cli
    from ragstream.settings import get_settings

    for k, v in settings_env(pipeline).items():
        if k.startswith("RAGSTREAM_"):
            monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["verify", "fs-nothing-000000"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "no source 'fs-nothing-000000' is known here" in result.output and "known sources:" in result.output


def run_up(settings: Settings, folder, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "RAGSTREAM_LOG_FORMAT": "console"}
    return subprocess.run([sys.executable, "-m", "ragstream.cli", "up", str(folder), "--no-watch",
                           "--progress-interval", "1", *extra],
                          capture_output=True, text=True, env=env, timeout=900, stdin=subprocess.DEVNULL)


def test_up_prints_progress_lines_not_per_file_lines_when_not_on_a_terminal(pipeline, folder, tmp_path):
    for i in range(30):
        (folder / f"note{i:02d}.md").write_text(f"# Note {i}\n\n" + paragraphs(500 + i, 3))
    (folder / "logo.png").write_bytes(bytes(range(256)))
    src = FilesystemSource(pipeline, folder)
    log = pipeline.home / "logs" / "up.log"
    log_before = log.read_text() if log.exists() else ""
    try:
        quiet = run_up(pipeline, folder)
        assert quiet.returncode == 0, quiet.stderr[-3000:]
        out = quiet.stdout + quiet.stderr
        progress = [line for line in out.splitlines() if line.startswith("progress: ")]
        assert progress, out
        assert "30 published, 30/30 documents indexed" in progress[-1]
        assert "1 skipped (1 unsupported)" in out
        assert "indexed 30 of 30 document(s)" in out
        assert "verify: the index holds the source's 30 document(s), no drift; 1 skipped" in out
        assert "change published" not in out and "document skipped" not in out  # per-item lines: the log file only
        logged = log.read_text()[len(log_before):]
        assert logged.count('"change published"') == 30 and '"document skipped"' in logged
        assert "\r" not in out and "\x1b[" not in out  # no terminal control codes in a log

        other = tmp_path / "verbose"
        other.mkdir()
        (other / "one.md").write_text("# One\n\n" + paragraphs(900, 2))
        loud = run_up(pipeline, other, "--verbose")
        assert loud.returncode == 0, loud.stderr[-3000:]
        assert "change published" in loud.stdout + loud.stderr
    finally:
        Stack(pipeline, ("api",)).down()  # `up` started the API; the pipeline fixture does not stop it
    assert src.source_id in quiet.stderr

