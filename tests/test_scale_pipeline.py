"""``ragstream scale``: several workers of a stage in one consumer group, on the session's
private pipeline (3 partitions per stage topic)."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from consumers.milvus import MilvusIndex, escape_literal
from infra.stack import Stack, running_replicas, settings_env
from producers.filesystem import FilesystemSource
from ragstream.admin import wait_drained
from ragstream.cli import cli
from ragstream.reindex import verify_collection
from streams.registry import replica_port

pytestmark = pytest.mark.integration


def run(pipeline, *args: str):
    return CliRunner().invoke(cli, ["--home", str(pipeline.home), *args], env=settings_env(pipeline))


def test_scale_refuses_more_workers_than_partitions(pipeline):
    res = run(pipeline, "scale", "embed", "4")
    assert res.exit_code == 1
    assert "rag.chunks has 3 partition(s)" in res.output and "at most 3" in res.output, res.output
    assert running_replicas(pipeline, ("embed",)) == ()
    res = run(pipeline, "scale", "audit", "2")  # one partition: a second audit worker would only stand by
    assert res.exit_code == 1 and "at most 1" in res.output, res.output


def test_embed_1_to_3_workers_during_a_load(pipeline, tmp_path):
    import random

    folder = tmp_path / "scale-docs"
    folder.mkdir()
    rng = random.Random(7)
    vocab = "invoice ledger audit payroll vendor contract budget forecast revenue expense approval".split()
    for i in range(24):
        (folder / f"d{i:02d}.md").write_text(f"# Doc {i}\n\n" + "\n\n".join(
            " ".join(rng.choice(vocab) for _ in range(90)) + "." for _ in range(8)))
    src = FilesystemSource(pipeline, folder)
    t0 = time.monotonic()
    src.sync()
    res = run(pipeline, "scale", "embed", "3")  # while the load is in flight
    assert res.exit_code == 0, res.output
    try:
        assert running_replicas(pipeline, ("embed",)) == ("worker-embed-2", "worker-embed-3")
        for i in (2, 3):
            assert Stack(pipeline, (f"worker-embed-{i}",)).services[0].port == replica_port(pipeline, "embed", i)
        from ragstream.status import collect

        [embed] = collect(pipeline, window_s=0.5, stages=("embed",)).stages
        assert embed.workers == 3 and embed.health in ("ok", "degraded"), embed
        assert wait_drained(pipeline, timeout=600)
        elapsed = time.monotonic() - t0
        index = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, 384)
        rows = index.rows(f'source == "{escape_literal(src.source_id)}"', ["chunk_id", "doc_id"])
        assert rows and len(rows) == len({r["chunk_id"] for r in rows}), "duplicate rows"
        assert {r["doc_id"] for r in rows} == {src.doc_id(f"d{i:02d}.md") for i in range(24)}
        drift, _listed, where = verify_collection(pipeline, index.behind_alias(), [src.source_id])
        assert drift == 0, where
        print(f"24 documents, {len(rows)} chunks indexed in {elapsed:.1f}s with embed scaled 1 → 3 during the load")
    finally:
        res = run(pipeline, "scale", "embed", "1")
    assert res.exit_code == 0, res.output
    assert running_replicas(pipeline, ("embed",)) == ()
