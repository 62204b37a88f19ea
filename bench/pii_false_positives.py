"""What the detector finds in text that is mostly free of PII: package documentation.

    .venv/bin/python bench/pii_false_positives.py [--root /usr/share/doc] [--budget 1000000]
        [--out bench/results/pii_false_positives.json] [--sample 40]

Reads the README/.txt/.md files under ``--root`` (sorted by path, the first 20 kB of each,
until ``--budget`` characters), runs the detector and writes findings per type and per
100 kB. Such text is not PII-free: maintainers sign README.Debian files with their names
and e-mail addresses, and docs name real places and companies. So the counts are an upper
bound on false positives, and ``--sample`` prints N random findings per named-entity type
with their context (to stdout only, never to the results file) for a person to judge.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.pii import Detector  # noqa: E402


def texts(root: Path, budget: int, per_file: int = 20_000) -> list[tuple[str, str]]:
    out, total = [], 0
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".gz")
                   and (p.name.upper().startswith("README") or p.suffix in (".txt", ".md")))
    for p in files:
        try:
            t = p.read_text(encoding="utf-8")[:per_file]
        except (UnicodeDecodeError, OSError):
            continue
        if len(t) < 200:
            continue
        out.append((str(p.relative_to(root)), t))
        total += len(t)
        if total >= budget:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/usr/share/doc"))
    ap.add_argument("--budget", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pii_false_positives.json")
    ap.add_argument("--sample", type=int, default=0)
    args = ap.parse_args()
    docs = texts(args.root, args.budget)
    chars = sum(len(t) for _, t in docs)
    d = Detector()
    counts: Counter[str] = Counter()
    by_type: dict[str, list[str]] = {}
    t0 = time.perf_counter()
    for name, t in docs:
        for f in d.analyze(t):
            counts[f.entity_type] += 1
            ctx = t[max(0, f.start - 40):f.end + 30].replace("\n", " ")
            by_type.setdefault(f.entity_type, []).append(f"{name}: [{t[f.start:f.end]}] … {ctx}")
    seconds = time.perf_counter() - t0
    result = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "root": str(args.root), "files": len(docs), "chars": chars, "seconds": round(seconds, 2),
        "findings": dict(counts.most_common()),
        "per_100kb": {k: round(v * 100_000 / chars, 2) for k, v in counts.most_common()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    rng = random.Random(1)
    for kind in ("PERSON", "LOCATION", "ORGANIZATION", "NRP", "PHONE_NUMBER", "DATE_TIME", "AGE", "STREET_ADDRESS"):
        rows = by_type.get(kind, [])
        for row in rng.sample(rows, min(args.sample, len(rows))):
            print(kind, "|", row)


if __name__ == "__main__":
    main()
