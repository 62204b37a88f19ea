"""What the local Milvus' token check costs a search: milvus-lite's own server against the
stack's (infra/milvus_server.py, the same servicer behind a token-checking interceptor).

Both run as separate processes on loopback with identical data (``--rows`` random vectors);
the client alternates between them (so a busy machine slows both alike) and times
``MilvusClient.search`` (limit 10), and a call that does almost nothing
(``has_collection``), where the check's own cost would show. Writes JSON to ``--out``.

    python -m bench.milvus_auth --rows 2000 --queries 400
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(port: int, token: str | None):  # type: ignore[no-untyped-def]
    from pymilvus import MilvusClient

    deadline = time.monotonic() + 60
    while True:
        try:
            c = MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=10, **({"token": token} if token else {}))
            c.list_collections()
            return c
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "milvus_auth.json")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)
    data = rng.standard_normal((args.rows, args.dim)).astype("float32")
    queries = rng.standard_normal((args.queries, args.dim)).astype("float32")
    with tempfile.TemporaryDirectory(prefix="bench-milvus-auth-") as tmp:
        token = secrets.token_urlsafe(32)
        (Path(tmp) / "token").write_text(token)
        (Path(tmp) / "token").chmod(0o600)
        plain_port, checked_port = _free_port(), _free_port()
        procs = [
            subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", f"{tmp}/plain",
                              "--host", "127.0.0.1", "--port", str(plain_port)], stdout=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-m", "infra.milvus_server", "--data-dir", f"{tmp}/checked",
                              "--port", str(checked_port), "--token-file", f"{tmp}/token"], stdout=subprocess.DEVNULL),
        ]
        try:
            clients = {"milvus-lite (no check)": _client(plain_port, None),
                       "with token check": _client(checked_port, token)}
            for c in clients.values():
                c.create_collection("bench", dimension=args.dim, metric_type="IP", consistency_level="Strong")
                for i in range(0, args.rows, 500):
                    c.insert("bench", [{"id": j, "vector": data[j].tolist()} for j in range(i, min(i + 500, args.rows))])
                c.search("bench", [queries[0].tolist()], limit=10)  # warm
            times: dict[str, list[float]] = {k: [] for k in clients}
            cheap: dict[str, list[float]] = {k: [] for k in clients}
            for q in queries:
                for name, c in clients.items():
                    t0 = time.perf_counter()
                    c.search("bench", [q.tolist()], limit=10)
                    times[name].append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    c.has_collection("bench")
                    cheap[name].append((time.perf_counter() - t0) * 1000)
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
    def summary(series: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        return {name: {"median": round(statistics.median(t), 3), "p95": round(sorted(t)[int(0.95 * len(t)) - 1], 3),
                       "mean": round(statistics.fmean(t), 3)} for name, t in series.items()}

    result: dict = {"rows": args.rows, "dim": args.dim, "queries": args.queries,
                    "search_ms": summary(times), "has_collection_ms": summary(cheap)}
    for kind in ("search_ms", "has_collection_ms"):
        a, b = result[kind]["milvus-lite (no check)"], result[kind]["with token check"]
        result[f"added_median_{kind}"] = round(b["median"] - a["median"], 3)
    result["load_average"] = list(__import__("os").getloadavg())
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
