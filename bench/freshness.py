"""Freshness: time from a file change to the change being in the index, idle or under load.

    .venv/bin/python bench/freshness.py [--n 30]          # writes bench/results/freshness.json
    .venv/bin/python bench/freshness.py --n 30 --load     # writes bench/results/freshness_load.json

Starts a private stack (own broker, milvus-lite, the four workers; free ports, temporary
home), watches a temporary folder with the file-system producer, and for each of N files
measures: write → its rows are in Milvus (a Strong-consistency query by doc_id, which is
what search sees), then delete → its rows are gone. Reports p50/p95/p99 and the maximum.
The watcher's debounce (0.3 s by default) is part of what is measured: it is part of what a
user waits for.

``--load``: meanwhile a background writer rewrites one paragraph of a corpus document
(bench/corpus.py, 100 of them indexed first) every ``1 / --load-rate`` seconds (default 1
document/s, ~10 chunks each: about a sixth of what the embedding model can do on 2 cores),
through the same watcher. The measured notes queue behind that work, as a user's would.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import edit_paragraph, generate  # noqa: E402
from consumers.milvus import MilvusIndex, escape_literal  # noqa: E402
from infra.stack import isolated_settings, running_pipeline  # noqa: E402
from producers.filesystem import FilesystemSource  # noqa: E402
from ragstream.admin import wait_drained  # noqa: E402
from streams.embedding import model_dim  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def wait_rows(index: MilvusIndex, doc_id: str, present: bool, timeout: float = 60) -> float:
    t0 = time.monotonic()
    expr = f'doc_id == "{escape_literal(doc_id)}"'
    while time.monotonic() - t0 < timeout:
        rows = index.client.query(collection_name=index.alias, filter=expr, output_fields=["chunk_id"],
                                  limit=1, consistency_level="Strong")
        if bool(rows) == present:
            return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError(f"{doc_id} not {'indexed' if present else 'removed'} within {timeout}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--load", action="store_true", help="measure under a background load of edits")
    ap.add_argument("--load-rate", type=float, default=1.0, help="background edits per second (with --load)")
    args = ap.parse_args()
    import random
    with tempfile.TemporaryDirectory() as tmp:
        s = isolated_settings(Path(tmp) / "home", start_timeout_s=180)
        with running_pipeline(s):
            index = MilvusIndex(s.resolved_milvus_uri, s.collection, model_dim(s))
            index.ensure()
            folder = Path(tmp) / "docs"
            folder.mkdir()
            src = FilesystemSource(s, folder)
            stop = threading.Event()
            watcher = threading.Thread(target=src.watch, args=(stop,), daemon=True)
            watcher.start()
            background = generate(folder / "background", 100) if args.load else []
            # warm-up: the first document pays for connections and model warm-up
            (folder / "warmup.md").write_text("# Warm up\n\nFirst document through the pipeline.")
            wait_rows(index, src.doc_id("warmup.md"), True, timeout=180)
            assert wait_drained(s, timeout=1800)
            edits = 0

            def load() -> None:
                nonlocal edits
                rng = random.Random(3)
                editable = [p for p in background if p.suffix in (".md", ".txt", ".html")]
                while not stop.is_set():
                    if edit_paragraph(rng.choice(editable), rng):
                        edits += 1
                    stop.wait(1 / args.load_rate)

            loader = threading.Thread(target=load, daemon=True)
            if args.load:
                loader.start()
                time.sleep(5)  # let the load reach a steady state
            t_load, edits_before = time.monotonic(), edits
            add, delete = [], []
            for i in range(args.n):
                name = f"doc{i:03d}.md"
                t0 = time.monotonic()
                (folder / name).write_text(f"# Note {i}\n\nA short note about invoice {i} and its approval.")
                add.append(wait_rows(index, src.doc_id(name), True) - t0)
                t0 = time.monotonic()
                (folder / name).unlink()
                delete.append(wait_rows(index, src.doc_id(name), False) - t0)
                time.sleep(0.2)
            stop.set()
            load_s = time.monotonic() - t_load
    result = {
        "n": args.n,
        "debounce_s": 0.3,
        "background_edits_per_s": round((edits - edits_before) / load_s, 2) if args.load else 0,
        "change_to_indexed_s": {"p50": round(pct(add, 50), 3), "p95": round(pct(add, 95), 3),
                                "p99": round(pct(add, 99), 3), "max": round(max(add), 3)},
        "delete_to_gone_s": {"p50": round(pct(delete, 50), 3), "p95": round(pct(delete, 95), 3),
                             "p99": round(pct(delete, 99), 3), "max": round(max(delete), 3)},
    }
    out = ROOT / "bench" / "results" / ("freshness_load.json" if args.load else "freshness.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
