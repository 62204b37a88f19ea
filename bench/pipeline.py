"""The pipeline end to end: initial load against the embedding ceiling, incremental edits,
deletes at scale, and 1 vs 2 embed workers — one command, one JSON.

    .venv/bin/python bench/pipeline.py [--docs 200] [--workers 1,2]
                                                    # writes bench/results/pipeline.json

For each embed-worker count, on a fresh private stack (own broker, milvus-lite, the stage
workers; extra embed workers join the same consumer group with ``ragstream worker embed
--metrics-port``):

1. **Initial load**: the corpus (bench/corpus.py: md/html/pdf/docx/txt, some PII, varied
   ACLs) is published by the file-system producer; timed from the first publish until every
   stage has caught up. Each stage's busy time comes from the workers'
   ``ragstream_stage_processing_seconds_sum``, each worker's peak RSS from /proc.
2. **Ceiling**: after the stack stops, the very chunk texts Milvus holds are embedded again
   by the same runtime in this process (no Kafka, no other stage): the embedding ceiling.
3. **Incremental** (first worker count only): one paragraph edited in 10% of the documents
   (``corpus.edit_tenth``: the text formats; the peer makes the same edits), then one sync;
   timed until the index has applied every edited document's new version (and, apart,
   until every stage is idle), with the chunks re-embedded counted by
   ``ragstream_chunks_embedded_total``.
4. **Deletes** (first worker count only): 10% of the documents deleted, one sync; timed
   until none of their rows is left in Milvus.

Scaling compares the worker counts' initial loads, and checks the results are the same
index: identical chunk ids, vectors equal to float32 rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import edit_tenth, generate  # noqa: E402
from consumers.milvus import MilvusIndex, escape_literal  # noqa: E402
from infra.service import free_port, rss_bytes, settings_env  # noqa: E402
from infra.stack import INFRA, WORKERS, isolated_settings, running_pipeline  # noqa: E402
from producers.filesystem import FilesystemSource  # noqa: E402
from ragstream.admin import wait_drained  # noqa: E402
from streams.embedding import make_embedder, model_dim  # noqa: E402
from streams.registry import PIPELINE as STAGES, metrics_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "pipeline.json"


def metric(port: int, name: str, labels: str = "") -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}{{[^}}]*{labels}[^}}]*}} ([0-9.e+-]+)$", body, re.M))


def start_extra_embed_worker(settings, home: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**settings_env(settings), "RAGSTREAM_LOG_FORMAT": "json"}
    log = open(home / "logs" / f"worker-embed-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "ragstream.cli", "--home", str(home), "worker", "embed",
                             "--metrics-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return proc, port
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the extra embed worker did not start"
            time.sleep(0.5)


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and every live descendant (a worker runs under
    its supervisor; Kafka and milvus-lite are one process each), plus what waited-for
    children used, from /proc. For this process itself, only its own threads (the services
    it started are its children and are counted under their own names)."""
    if root == os.getpid():
        t = os.times()
        return t.user + t.system
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # after "(comm)": state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state
            stats[int(d.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo += [p for p, (ppid, _) in stats.items() if ppid == pid]
    return total


def rows_left(index: MilvusIndex, doc_ids: list[str]) -> int:
    left = 0
    for i in range(0, len(doc_ids), 200):
        ids = ", ".join(f'"{escape_literal(d)}"' for d in doc_ids[i:i + 200])
        left += len(index.client.query(collection_name=index.alias, filter=f"doc_id in [{ids}]",
                                       output_fields=["chunk_id"], limit=16384, consistency_level="Strong"))
    return left


def run(docs: int, embed_workers: int, phases: bool, corpus: str = "synthetic") -> tuple[dict, dict[str, np.ndarray]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        manifest = None
        if corpus == "realworld":  # real package documentation: a few very large files among many small
            from bench.realworld import assemble

            manifest = assemble(folder, small=docs, large=3)
            paths = [folder / m["path"] for m in manifest]
        else:
            paths = generate(folder, docs)
        s = isolated_settings(Path(tmp) / "home", start_timeout_s=180)
        extra: list[tuple[subprocess.Popen, int]] = []
        with running_pipeline(s) as stack:
            try:
                extra = [start_extra_embed_worker(s, s.home) for _ in range(embed_workers - 1)]
                embed_ports = [metrics_port(s, "embed"), *(p for _, p in extra)]
                peaks = {w: 0 for w in WORKERS}
                sampling = threading.Event()

                def sample() -> None:
                    while not sampling.is_set():
                        for w in WORKERS:
                            # the worker itself, not the supervisor it runs under
                            pid = stack[w].child_pid() or stack[w].pid()
                            if pid:
                                peaks[w] = max(peaks[w], rss_bytes(pid) or 0)
                        time.sleep(0.5)

                threading.Thread(target=sample, daemon=True).start()
                src = FilesystemSource(s, folder, source_id="bench")  # the same doc ids in every run
                accounted = {name: stack[name].pid() for name in (*INFRA, *WORKERS)}
                accounted.update({f"worker-embed-{i + 2}": proc.pid for i, (proc, _) in enumerate(extra)})
                accounted["producer (this process)"] = os.getpid()
                cpu0 = {n: cpu_seconds(pid) for n, pid in accounted.items() if pid}
                t0 = time.monotonic()
                stats = src.sync()
                assert wait_drained(s, timeout=3600), "the pipeline did not catch up"
                load_s = time.monotonic() - t0
                cpu = {n.removeprefix("worker-"): cpu_seconds(accounted[n]) - c for n, c in cpu0.items()}
                sampling.set()
                busy = {st: round(metric(metrics_port(s, st), "ragstream_stage_processing_seconds_sum"), 2)
                        for st in STAGES if st != "embed"}
                busy["embed"] = round(sum(metric(p, "ragstream_stage_processing_seconds_sum") for p in embed_ports), 2)
                index = MilvusIndex(s.resolved_milvus_uri, s.collection, model_dim(s))
                index.ensure()
                rows = index.rows(fields=["chunk_id", "text", "vector"])
                snapshot = {r["chunk_id"]: np.asarray(r["vector"], dtype=np.float32) for r in rows}
                texts = [r["text"] for r in rows]
                result: dict = {
                    "corpus": corpus, "corpus_bytes": sum(p.stat().st_size for p in paths),
                    "largest_files_bytes": sorted((p.stat().st_size for p in paths), reverse=True)[:3],
                    "embed_workers": embed_workers, "docs": stats.added + stats.changed, "chunks": len(rows),
                    "skipped": stats.skipped, "dead_lettered": stats.failed,
                    "initial_load": {"seconds": round(load_s, 1), "docs_per_s": round((stats.added + stats.changed) / load_s, 2),
                                     "chunks_per_s": round(len(rows) / load_s, 1)},
                    "stage_busy_seconds": busy,
                    "worker_peak_rss_mib": {w.removeprefix("worker-"): round(v / 2**20) for w, v in peaks.items()},
                    # CPU seconds per 1,000 chunks during the initial load, per process (the
                    # producer's figure includes this script's own sampling threads).
                    "cpu_seconds_per_1000_chunks": {n: round(c * 1000 / max(len(rows), 1), 1)
                                                    for n, c in sorted(cpu.items(), key=lambda kv: -kv[1])},
                    "cpu_seconds_total": round(sum(cpu.values()), 1), "cpu_cores_busy": round(sum(cpu.values()) / load_s, 2),
                }
                if manifest is not None:
                    result["manifest"] = manifest
                if phases:
                    result["incremental"] = incremental(s, src, paths, index, embed_ports)
                    result["deletes"] = deletes(s, src, paths, index)
            finally:
                for proc, _ in extra:
                    proc.terminate()
                    proc.wait(30)
    embedder = make_embedder(s)
    embedder.embed(texts[:64])  # warm-up
    t0, c0 = time.monotonic(), time.process_time()
    embedder.embed(texts)
    ceiling_s, ceiling_cpu = time.monotonic() - t0, time.process_time() - c0
    result["embedding_ceiling"] = {"runtime": s.embed_backend, "seconds": round(ceiling_s, 1),
                                   "chunks_per_s": round(len(texts) / ceiling_s, 1),
                                   "cpu_seconds_per_1000_chunks": round(ceiling_cpu * 1000 / max(len(texts), 1), 1)}
    result["ratio_to_ceiling"] = round(ceiling_s / load_s, 3)
    return result, snapshot


def incremental(s, src: FilesystemSource, paths: list[Path], index: MilvusIndex, embed_ports: list[int]) -> dict:
    edited = edit_tenth(paths)
    doc_ids = [src.doc_id(src.rel(p)) for p in edited]
    chunks_of_edited = sum(len(index.chunk_ids_of(d)) for d in doc_ids)
    before = sum(metric(p, "ragstream_chunks_embedded_total") for p in embed_ports)
    t0 = time.monotonic()
    stats = src.sync()
    want = {src.doc_id(rel): st["version"] for rel, st in src.files.items() if src.doc_id(rel) in doc_ids}
    ids = ", ".join(f'"{escape_literal(d)}"' for d in want)
    while True:  # converged: the index applied every edited document's new version
        applied = {r["doc_id"]: r["version"] for r in index.client.query(
            collection_name=f"{index.collection}_docs", filter=f"doc_id in [{ids}]", output_fields=["doc_id", "version"],
            consistency_level="Strong")}
        if all(applied.get(d, -1) >= v for d, v in want.items()):
            break
        assert time.monotonic() - t0 < 600, "the edits were not indexed within 10 minutes"
        time.sleep(0.05)
    searchable_s = time.monotonic() - t0
    assert wait_drained(s, timeout=3600)
    drained_s = time.monotonic() - t0
    embedded = sum(metric(p, "ragstream_chunks_embedded_total") for p in embed_ports) - before
    return {"docs_edited": len(edited), "docs_published": stats.added + stats.changed, "chunks_in_edited_docs": chunks_of_edited,
            "chunks_reembedded": int(embedded), "seconds_to_converge": round(searchable_s, 2),
            "seconds_until_every_stage_idle": round(drained_s, 2)}


def deletes(s, src: FilesystemSource, paths: list[Path], index: MilvusIndex) -> dict:
    rng = random.Random(8)
    chosen = rng.sample([p for p in paths if p.exists()], max(1, len(paths) // 10))
    doc_ids = [src.doc_id(src.rel(p)) for p in chosen]
    present = [d for d in doc_ids if index.chunk_ids_of(d)]
    for p in chosen:
        p.unlink()
    t0 = time.monotonic()
    stats = src.sync()
    while rows_left(index, doc_ids):
        assert time.monotonic() - t0 < 600, "deleted documents are still in Milvus after 10 minutes"
        time.sleep(0.05)
    return {"docs_deleted": stats.deleted, "docs_that_had_rows": len(present),
            "seconds_until_all_gone": round(time.monotonic() - t0, 2)}


def same_index(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict:
    common = a.keys() & b.keys()
    worst = min((float(a[c] @ b[c] / (np.linalg.norm(a[c]) * np.linalg.norm(b[c]))) for c in common), default=1.0)
    return {"same_chunk_ids": a.keys() == b.keys(), "only_in_first": len(a.keys() - b.keys()),
            "only_in_second": len(b.keys() - a.keys()), "min_cosine_same_chunk": round(worst, 6)}


def main() -> None:
    # One pseudonymization key for every run: redacted text, and so chunk ids, must not
    # differ between the runs the scaling comparison sets side by side.
    os.environ.setdefault("RAGSTREAM_PSEUDONYM_KEY_DEFAULT", "5a" * 32)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--workers", default="1,2", help="embed worker counts to compare (default 1,2)")
    ap.add_argument("--corpus", choices=("synthetic", "realworld"), default="synthetic",
                    help="synthetic (bench/corpus.py) or realworld (this machine's /usr/share/doc: the 3 largest "
                         "readable files among --docs small ones; bench/realworld.py); realworld skips the "
                         "incremental and delete phases")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS.name})")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    runs, snapshots = [], []
    for i, n in enumerate(counts):
        print(f"-- {args.docs} documents, {n} embed worker(s)", flush=True)
        result, snap = run(args.docs, n, phases=(i == 0 and args.corpus == "synthetic"), corpus=args.corpus)
        print(json.dumps(result, indent=2), flush=True)
        runs.append(result)
        snapshots.append(snap)
    out = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "docs": args.docs,
           "corpus": args.corpus, "runs": runs}
    if len(runs) > 1:
        out["scaling"] = {
            "chunks_per_s": {str(r["embed_workers"]): r["initial_load"]["chunks_per_s"] for r in runs},
            "speedup": round(runs[1]["initial_load"]["chunks_per_s"] / runs[0]["initial_load"]["chunks_per_s"], 2),
            "identical_result": same_index(snapshots[0], snapshots[1]),
        }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out.get("scaling", {}), indent=2))


if __name__ == "__main__":
    main()
