"""Scaling a stage during a load: ``ragstream scale embed 3`` while the initial load runs.

    .venv/bin/python bench/scale.py [--docs 60] [--to 3]      # writes bench/results/scale.json

Two runs, each on a fresh private stack (own broker, milvus-lite, the stage workers; free
ports, temporary home; 6 partitions per stage topic), on the same corpus (bench/corpus.py):

1. **baseline**: one embed worker throughout;
2. **scaled**: the corpus is published, then ``ragstream scale embed N`` starts N - 1 more
   embed workers in the group while the load is in flight (the group rebalances under load).

Each run is timed from the first publish until every stage has caught up (``wait_drained``),
and checked: no duplicate rows (rows = distinct chunk ids), every document indexed,
``verify`` drift 0. The embed throughput is chunks / elapsed. On a 2-core machine the
model already uses both cores, so more workers mostly show that rebalancing under load
keeps the index exact, not a speed-up; on a machine with cores to spare they add throughput
up to the partition count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import generate  # noqa: E402
from consumers.milvus import MilvusIndex, escape_literal  # noqa: E402
from infra.stack import isolated_settings, running_pipeline, running_replicas, settings_env, Stack  # noqa: E402
from producers.filesystem import FilesystemSource  # noqa: E402
from ragstream.admin import wait_drained  # noqa: E402
from ragstream.reindex import verify_collection  # noqa: E402
from streams.embedding import model_dim  # noqa: E402


def run(docs: int, to: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        generate(folder, docs)
        s = isolated_settings(Path(tmp) / "home", start_timeout_s=240)
        with running_pipeline(s):
            try:
                src = FilesystemSource(s, folder, source_id="bench")
                t0 = time.monotonic()
                stats = src.sync()
                published = time.monotonic() - t0
                scaled_at = None
                if to > 1:
                    res = subprocess.run([sys.executable, "-m", "ragstream.cli", "--home", str(s.home), "scale",
                                          "embed", str(to)], env=settings_env(s), capture_output=True, text=True,
                                         timeout=600)
                    assert res.returncode == 0, res.stderr
                    scaled_at = time.monotonic() - t0
                assert wait_drained(s, timeout=3600), "the pipeline did not catch up"
                elapsed = time.monotonic() - t0
                index = MilvusIndex(s.resolved_milvus_uri, s.collection, model_dim(s))
                rows = index.rows(f'source == "{escape_literal(src.source_id)}"', ["chunk_id", "doc_id"])
                drift, listed, where = verify_collection(s, index.behind_alias(), [src.source_id])
                return {
                    "embed_workers": to, "docs": stats.added + stats.changed, "chunks": len(rows),
                    "duplicate_rows": len(rows) - len({r["chunk_id"] for r in rows}),
                    "documents_indexed": len({r["doc_id"] for r in rows}), "listed": listed.get(src.source_id),
                    "drift": drift, "drift_examples": where[:3],
                    "published_s": round(published, 1),
                    "scaled_at_s": None if scaled_at is None else round(scaled_at, 1),
                    "elapsed_s": round(elapsed, 1), "chunks_per_s": round(len(rows) / elapsed, 2),
                }
            finally:
                if running_replicas(s):
                    Stack(s, running_replicas(s)).down()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=60)
    ap.add_argument("--to", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = ap.parse_args()
    runs = [run(args.docs, 1), run(args.docs, args.to)]
    out = {"machine": {"cpus": os.cpu_count(), "load_avg": [round(x, 1) for x in os.getloadavg()]},
           "runs": runs,
           "speedup": round(runs[1]["chunks_per_s"] / runs[0]["chunks_per_s"], 2) if runs[0]["chunks_per_s"] else None}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
