"""``ragstream reindex`` end to end, on a pipeline of this module's own (a reindex replays whole
topics; the session's shared pipeline holds every earlier module's documents): a new chunk size while a
writer edits one file per second and a reader searches without pause; then ``--rollback``,
``--since`` and ``--gc``.

The test leaves the pipeline as it found it (the alias on a collection of the default
settings, the workers running them): the rollback is part of it.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from consumers.milvus import MilvusIndex, escape_literal
from producers.filesystem import FilesystemSource
from ragstream import reindex as ri
from ragstream.admin import wait_drained
from streams.embedding import LocalEmbedder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(own_pipeline):
    return own_pipeline


def text(seed: int, n: int = 6) -> str:
    import random

    rng = random.Random(seed)
    vocab = ("invoice ledger audit payroll vendor contract budget forecast revenue expense approval "
             "policy quarter region customer renewal churn pipeline margin hiring travel").split()
    return "\n\n".join(f"Paragraph {i} of file {seed} says " + " ".join(rng.choice(vocab) for _ in range(70)) + "."
                       for i in range(n))


def rows_of(index: MilvusIndex, source_id: str, collection: str) -> list[dict]:
    view = MilvusIndex(index.uri, index.alias, index.dim, collection=collection)
    return view.client.query(collection_name=collection, filter=f'source == "{escape_literal(source_id)}"',
                             output_fields=["chunk_id", "doc_id", "text", "acl"], limit=16384,
                             consistency_level="Strong")


def test_reindex_with_another_chunk_size_while_editing(pipeline, tmp_path):
    folder = tmp_path / "reindex-docs"
    folder.mkdir()
    files = [folder / f"f{i:02d}.md" for i in range(8)]
    for i, f in enumerate(files):
        f.write_text(f"# File {i}\n\n" + text(i))
    src = FilesystemSource(pipeline, folder)
    src.sync()
    assert wait_drained(pipeline, timeout=300)
    embedder = LocalEmbedder()
    reader = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, embedder.dim, acl_refresh_s=1.0)
    before = reader.behind_alias()
    assert before is not None
    old_ids = {r["chunk_id"] for r in rows_of(reader, src.source_id, before)}
    principals = sorted(decode_acl_str(rows_of(reader, src.source_id, before)[0]["acl"]))
    query = "invoice ledger audit payroll"
    vector = embedder.embed([query])[0]

    stop_writer, stop_reader = threading.Event(), threading.Event()
    edits: list[tuple[int, str]] = []  # (file, marker) of every edit published
    searches, empty, failed = [0], [0], []
    swapped_at: list[float] = []
    after_swap_hits: list[str] = []

    def writer() -> None:
        n = 0
        while not stop_writer.is_set():
            i, marker = n % len(files), f"zqmark{n:04d}"
            with files[i].open("a") as fh:
                fh.write(f"\n\nEdit {n} adds {marker} to the ledger.\n")
            src.sync()
            edits.append((i, marker))
            n += 1
            stop_writer.wait(1.0)

    def searcher() -> None:
        while not stop_reader.is_set():
            try:
                hits = reader.search(vector, principals, 5, query=query, mode="hybrid")
                searches[0] += 1
                if not hits:
                    empty[0] += 1
                elif swapped_at and time.monotonic() > swapped_at[0] + 2:
                    after_swap_hits.extend(h.chunk_id for h in hits)
            except Exception as exc:  # noqa: BLE001 - what the test counts
                failed.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)

    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=searcher, daemon=True)]
    for t in threads:
        t.start()
    lines: list[str] = []
    try:
        time.sleep(3)  # edits before the reindex starts, too
        out = ri.reindex(pipeline, {"chunk_max_tokens": 96, "chunk_overlap_tokens": 12},
                         say=lines.append, source_ids=[src.source_id], verify_timeout=240,
                         stall_timeout=600, before_swap=None)
        swapped_at.append(time.monotonic())
        time.sleep(4)  # edits after the swap go on reaching the new collection
    finally:
        stop_writer.set()
        threads[0].join(30)
    print("\n".join(lines))
    new = ri.with_profile(pipeline, {"chunk_max_tokens": 96, "chunk_overlap_tokens": 12})
    try:
        assert out.before == before and out.after != before
        assert reader.behind_alias() == out.after
        assert wait_drained(new, timeout=300)
        # Every edit — before, during and after the swap — is in the new collection.
        rows = rows_of(reader, src.source_id, out.after)
        indexed = " ".join(r["text"] for r in rows)
        assert len(edits) >= 5, edits
        missing = [m for _i, m in edits if m not in indexed]
        assert not missing, f"edits missing from {out.after}: {missing}"
        # With the new chunker's ids, nothing drifts; searches read the new collection.
        drift, listed, where = ri.verify_collection(new, out.after, [src.source_id])
        assert drift == 0, where
        assert listed[src.source_id] == len(files)
        new_ids = {r["chunk_id"] for r in rows}
        assert new_ids - old_ids, "the new collection has the new chunk size's chunks"
        time.sleep(2)
        assert after_swap_hits and set(after_swap_hits) <= new_ids | _other_sources(reader, src.source_id, out.after)
    finally:
        stop_reader.set()
        threads[1].join(30)
    assert not failed, failed[:5]
    assert empty[0] == 0, f"{empty[0]} of {searches[0]} searches came back empty"
    assert searches[0] > 20

    # --rollback: back to the old collection (with the edits made since the swap), default settings.
    with (folder / files[0].name).open("a") as fh:
        fh.write("\n\nAfter the reindex: zqrollback.\n")
    src.sync()
    assert wait_drained(new, timeout=300)
    back = ri.rollback(pipeline, say=lines.append, source_ids=[src.source_id], verify_timeout=240)
    assert back.after == before and reader.behind_alias() == before
    assert wait_drained(pipeline, timeout=300)
    assert "zqrollback" in " ".join(r["text"] for r in rows_of(reader, src.source_id, before))
    drift, _listed, where = ri.verify_collection(pipeline, before, [src.source_id])
    assert drift == 0, where

    # --since: a replay of the last minutes into the current collection changes nothing (guards).
    stats = ri.repair_since(pipeline, datetime.now(timezone.utc) - timedelta(minutes=5), say=lines.append)
    assert stats.documents > 0
    assert ri.verify_collection(pipeline, before, [src.source_id])[0] == 0

    # --gc: the replaced collection goes, the live one stays.
    dropped = ri.gc(pipeline, say=lines.append)
    assert out.after in dropped and before not in dropped
    assert reader.behind_alias() == before
    assert reader.search(vector, principals, 5, query=query, mode="hybrid")


def decode_acl_str(stored: str) -> set[str]:
    return {p for p in stored.strip("|").split("|") if p}


def _other_sources(reader: MilvusIndex, source_id: str, collection: str) -> set[str]:
    """Chunk ids of other test modules' documents in the collection (the session's pipeline is shared)."""
    rows = reader.client.query(collection_name=collection, filter=f'source != "{escape_literal(source_id)}"',
                               output_fields=["chunk_id"], limit=16384, consistency_level="Strong")
    return {r["chunk_id"] for r in rows}


def test_reindex_from_chunks_with_the_command(pipeline, tmp_path):
    """`ragstream reindex --from chunks` (re-embed the chunks as they are), `--rollback`, `--gc`."""
    from click.testing import CliRunner

    from infra.stack import settings_env
    from ragstream.cli import cli

    def run(*args: str):
        res = CliRunner().invoke(cli, ["--home", str(pipeline.home), *args], env=settings_env(pipeline))
        assert res.exit_code == 0, res.output
        return res.output

    folder = tmp_path / "from-chunks"
    folder.mkdir()
    for i in range(4):
        (folder / f"c{i}.md").write_text(f"# Chunks {i}\n\n" + text(100 + i, 4))
    src = FilesystemSource(pipeline, folder)
    src.sync()
    assert wait_drained(pipeline, timeout=300)
    reader = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, 384)
    before = reader.behind_alias()
    old = {r["chunk_id"] for r in rows_of(reader, src.source_id, before)}
    from infra.stack import running_replicas

    run("scale", "embed", "2")  # the handover restarts the extra worker with the stage's
    try:
        out = run("reindex", "--from", "chunks", "--source-id", src.source_id, "--progress-interval", "2",
                  "--stall-timeout", "600")
        assert "ETA" in out and "alias" in out, out
        assert "worker-embed-2" in out.split("handed over:")[1].splitlines()[0], out
        assert running_replicas(pipeline, ("embed",)) == ("worker-embed-2",)
    finally:
        run("scale", "embed", "1")
    after = reader.behind_alias()
    assert after != before
    assert {r["chunk_id"] for r in rows_of(reader, src.source_id, after)} == old  # the same chunks, re-embedded
    assert ri.verify_collection(pipeline, after, [src.source_id])[0] == 0
    run("reindex", "--rollback", "--source-id", src.source_id)
    assert reader.behind_alias() == before
    assert after in run("reindex", "--gc")
    assert ri.verify_collection(pipeline, before, [src.source_id])[0] == 0
