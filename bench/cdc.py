"""Database CDC: snapshot rate, and row change → searchable, idle and under load.

    .venv/bin/python bench/cdc.py [--rows 2000] [--probes 30] [--load 100] [--load-s 60]
                                                    # writes bench/results/cdc.json

On a fresh private stack (own broker, milvus-lite, the stage workers, PostgreSQL, Kafka
Connect with Debezium, the normalize worker; all in a temporary home on free ports):

1. **Snapshot**: ``--rows`` rows exist before the connector is created; timed from
   ``connect apply`` until every row is in Milvus.
2. **Idle freshness**: ``--probes`` single-row UPDATEs of the text, one at a time; each
   timed from COMMIT until a Strong-consistency Milvus query returns the new text.
3. **Freshness under load**: a writer commits ``--load`` text UPDATEs per second to other
   rows for ``--load-s`` seconds while the probes run again, one after another (a probe
   started during the load is timed to the end, however long the backlog takes). Every
   update changes the text, so each is re-embedded: the load is real work for the embed
   stage, whose capacity on CPU bounds what rate stays fresh.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumers.milvus import MilvusIndex, escape_literal  # noqa: E402
from infra.stack import Stack, free_port, isolated_settings, running_pipeline  # noqa: E402
from streams.embedding import model_dim  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "cdc.json"
SOURCE = "bench-db"
MAPPING = f"""
source = "{SOURCE}"
[[tables]]
table = "public.articles"
text = ["title", "body"]
title = "title"
acl = {{ principals = ["group:staff"] }}
"""
WORDS = ("maintenance window storage cluster quarterly review backup rotation network switch firmware "
         "upgrade capacity planning invoice supplier contract renewal warehouse inventory forecast").split()


def text(i: int, rev: int) -> str:
    rnd = random.Random(i * 104729 + rev)
    return f"Row {i} rev{rev}x covers the " + " ".join(rnd.choice(WORDS) for _ in range(24)) + "."


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 3)


def summary(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50_s": pct(xs, 0.5), "p95_s": pct(xs, 0.95), "max_s": round(max(xs), 3)}


def main() -> None:
    import psycopg

    from infra.cdc import apply_connector, delete_connector, wait_running
    from streams.normalize import load_mapping

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--probes", type=int, default=30)
    ap.add_argument("--load", type=float, default=100.0, help="row changes per second in the load phase")
    ap.add_argument("--load-s", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ragstream-bench-cdc-", dir="/tmp"))
    tmp.chmod(0o711)  # PostgreSQL runs as the postgres user, which must pass through to its data dir
    home = tmp / "home"
    home.mkdir()
    (home / "mapping.toml").write_text(MAPPING)
    s = isolated_settings(home, partitions=3, start_timeout_s=180, postgres_port=free_port(),
                          connect_port=free_port(), cdc_mapping_file=home / "mapping.toml")
    out: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": args.rows}
    cdc = Stack(s, ("postgres", "connect", "worker-normalize"))
    with running_pipeline(s):
        try:
            cdc["postgres"].start()
            conn = psycopg.connect(s.resolved_cdc_dsn, autocommit=True)
            conn.execute("CREATE TABLE articles (id bigint PRIMARY KEY, title text, body text)")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO articles VALUES (%s, %s, %s)",
                                [(i, f"Row {i}", text(i, 0)) for i in range(args.rows)])
            cdc["connect"].start()
            index = MilvusIndex(s.resolved_milvus_uri, s.collection, model_dim(s))
            index.ensure()

            t0 = time.monotonic()
            apply_connector(s, load_mapping(s.cdc_mapping_file))
            wait_running(s)
            cdc["worker-normalize"].start()
            while len({r["doc_id"] for r in index.rows(f'source == "{SOURCE}"', ["doc_id"])}) < args.rows:
                if time.monotonic() - t0 > 1800:
                    raise RuntimeError("the snapshot did not reach Milvus within 30 minutes")
                time.sleep(1)
            snap = time.monotonic() - t0
            out["snapshot"] = {"rows": args.rows, "seconds": round(snap, 1), "rows_per_s": round(args.rows / snap, 1),
                               "note": "connect apply → every row in Milvus (Debezium, normalize, compliance, "
                                       "chunk, embed, index)"}
            print(json.dumps(out["snapshot"]), flush=True)

            def probe(i: int, rev: int) -> float:
                want = f"rev{rev}x"
                t = time.monotonic()
                conn.execute("UPDATE articles SET body = %s WHERE id = %s", (text(i, rev), i))
                expr = f'doc_id == "{escape_literal(f"{SOURCE}:public.articles/{i}")}"'
                while not any(want in r["text"] for r in index.rows(expr, ["text"])):
                    if time.monotonic() - t > 300:
                        raise RuntimeError(f"row {i} rev {rev} never became searchable")
                    time.sleep(0.05)
                return time.monotonic() - t

            idle = [probe(i, 1) for i in range(args.probes)]
            out["idle"] = summary(idle)
            print(json.dumps({"idle": out["idle"]}), flush=True)

            stop = threading.Event()
            done_writes = {"n": 0}

            def writer() -> None:
                wconn = psycopg.connect(s.resolved_cdc_dsn, autocommit=True)
                rnd = random.Random(1)
                start = time.monotonic()
                while not stop.is_set() and time.monotonic() - start < args.load_s:
                    ahead = start + done_writes["n"] / args.load - time.monotonic()
                    if ahead > 0:
                        time.sleep(min(0.01, ahead))
                        continue
                    i = rnd.randrange(args.probes, args.rows)
                    wconn.execute("UPDATE articles SET body = %s WHERE id = %s", (text(i, 10 + done_writes["n"]), i))
                    done_writes["n"] += 1

            w = threading.Thread(target=writer, daemon=True)
            w.start()
            t_load = time.monotonic()
            time.sleep(5)  # let the load reach its rate
            loaded = []
            rev = 2
            while w.is_alive():  # probes while the load lasts (one in flight finishes)
                loaded.append(probe(len(loaded) % args.probes, rev))
                rev += 1
            stop.set()
            w.join()
            out["under_load"] = {**summary(loaded), "target_changes_per_s": args.load,
                                 "achieved_changes_per_s": round(done_writes["n"] / args.load_s, 1),
                                 "load_seconds": args.load_s, "changes": done_writes["n"],
                                 "probes_done_after_s": round(time.monotonic() - t_load, 1)}
            print(json.dumps({"under_load": out["under_load"]}), flush=True)
        finally:
            try:
                delete_connector(s)
            except Exception:  # noqa: BLE001 - best effort
                pass
            cdc.down()
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
