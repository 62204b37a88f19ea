"""PII detection accuracy on every labelled set, per entity type: writes bench/results/pii_eval_*.json.

    .venv/bin/python -m bench.pii_scores               # overlap matching (streams.pii_eval's default)
    .venv/bin/python -m bench.pii_scores --one-to-one  # the scorer before 2026-11 (files *_one_to_one.json)

Sets: ``presidio`` (tests/data/pii_independent/presidio_evaluator_1500.jsonl) with the
tenant's phone regions (the 30 countries of its records) and with the default ones (US, GB);
``presidio_research`` (tests/data/pii_independent/presidio_research_synth_v2.jsonl, Microsoft's
published set, default regions: held out at first; its address misses (2026-11-26) and
its firm misses (2026-11-27) were read, so for those it is a second sample of set 1's templates); ``opennlp`` (real, human-labelled text, tests/data/pii_independent/opennlp_real.jsonl); and
``generated`` (bench/data/pii_eval.jsonl, our own generator: a regression test, not a judge).
Each run prints the table of ``python -m streams.pii_eval`` and writes the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.pii import Detector  # noqa: E402
from streams.pii_eval import evaluate, format_table, load  # noqa: E402

PRESIDIO_REGIONS = ("CY,EE,ES,DK,NO,TN,IS,AT,US,CH,SI,PL,FI,NL,BE,HU,ZA,SE,CZ,NZ,CA,FR,PT,BR,GB,GL,UY,IT,AU,DE"
                    .split(","))
INDEPENDENT = ROOT / "tests" / "data" / "pii_independent"
SETS = {  # name: (file, phone regions or None for the default)
    "presidio_tenant_regions": (INDEPENDENT / "presidio_evaluator_1500.jsonl", PRESIDIO_REGIONS),
    "presidio_default_regions": (INDEPENDENT / "presidio_evaluator_1500.jsonl", None),
    "presidio_research": (INDEPENDENT / "presidio_research_synth_v2.jsonl", None),
    "opennlp_real": (INDEPENDENT / "opennlp_real.jsonl", None),
    "generated": (ROOT / "bench" / "data" / "pii_eval.jsonl", None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one-to-one", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    match = "one_to_one" if args.one_to_one else "overlap"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, (path, regions) in SETS.items():
        summary = evaluate(load(path), Detector(phone_regions=regions), match=match).summary()
        summary["match"] = match
        out = args.out_dir / f"pii_eval_{name}{'_one_to_one' if args.one_to_one else ''}.json"
        out.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"== {name} ({path.relative_to(ROOT)}, {match}) -> {out}")
        print(format_table(summary), flush=True)


if __name__ == "__main__":
    main()
