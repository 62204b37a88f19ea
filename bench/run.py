"""Run the whole benchmark suite, then write the report and its plots.

    ./dev bench [--docs 200] [--quick] [--only NAME,NAME]      # ~40 min on 2 cores

Each benchmark is its own script (``bench/<name>.py``, rerunnable alone) run in a fresh
process one after another — never side by side, so they do not share the two cores — and
writes ``bench/results/<name>.json``. bench/report.py then draws the PNGs and writes
``bench/results/REPORT.md`` from whatever JSON is there. ``--quick`` shrinks every size
(for checking the suite works, not for numbers: it overwrites the results, so do not commit
them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def suite(docs: int, quick: bool) -> dict[str, tuple[str, list[str]]]:
    """name → (script, arguments); each writes bench/results/<name>.json."""
    small, big = (20, 40) if quick else (docs, max(docs, 1000))
    results = ROOT / "bench" / "results"
    return {
        "pipeline": ("pipeline", ["--docs", str(small)]),
        "peer_langchain": ("peer_langchain", ["--docs", str(small)]),
        # incremental cost grows with the corpus for the peer, not for ragstream: once more, bigger
        "pipeline_1000": ("pipeline", ["--docs", str(big), "--workers", "1", "--out", str(results / "pipeline_1000.json")]),
        "peer_langchain_1000": ("peer_langchain", ["--docs", str(big), "--out", str(results / "peer_langchain_1000.json")]),
        # real package documentation: three multi-megabyte files among many small ones
        "pipeline_realworld": ("pipeline", ["--docs", str(small), "--workers", "1", "--corpus", "realworld",
                                            "--out", str(results / "pipeline_realworld.json")]),
        "wire_sizes": ("wire_sizes", ["--docs", "20" if quick else "60", "--large", "0"]),
        "search_quality": ("search_quality", ["--docs", "40" if quick else "220"]),
        "search_latency": ("search_latency", ["--rows", "5000" if quick else "100000"]),
        "freshness": ("freshness", ["--n", "5" if quick else "30"]),
        "freshness_load": ("freshness", ["--n", "5" if quick else "30", "--load"]),
        "embedding_runtime": ("embedding_runtime", ["--docs", "10"] if quick else []),
        "acl_search": ("acl_search", ["--rows", "5000", "--queries", "30"] if quick else []),
        "compliance": ("compliance", []),
        "foundation": ("foundation", []),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200, help="corpus size for the pipeline and the peer (100-10,000)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that the suite runs")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    args = ap.parse_args()
    runs = suite(args.docs, args.quick)
    wanted = [n for n in args.only.split(",") if n] or list(runs)
    unknown = set(wanted) - set(runs)
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: {', '.join(runs)}")
    failed = []
    for name in wanted:
        script, extra = runs[name]
        cmd = [sys.executable, str(ROOT / "bench" / f"{script}.py"), *extra]
        print(f"==> {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
        print(f"==> {name}: {'FAILED' if name in failed else 'done'} in {time.monotonic() - t0:.0f} s", flush=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / "report.py")], cwd=ROOT, check=True)
    if failed:
        sys.exit(f"benchmark(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
