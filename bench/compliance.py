"""Compliance-stage speed: MB of text per second on one core, and one large file.

    .venv/bin/python bench/compliance.py            # writes bench/results/compliance.json

Runs the compliance stage's own logic (:class:`streams.stages.ComplianceStage.process`:
resolve, detect, apply the policy, build the record and the audit event) in this process
on one thread, with no broker, so the figure is the stage's CPU cost per core:

* ``corpus``: the labelled evaluation documents (bench/data/pii_eval.jsonl), many small
  PII-dense texts, processed one by one as the stage sees them;
* ``bench_corpus``: the pipeline benchmark's documents (bench/corpus.py, seed 42, the
  200 of ``bench/pipeline.py``; its markdown, HTML and text ones, as the stage receives
  them), compared per document with the embed stage's busy time in
  bench/results/pipeline.json: the issue-15 goal is compliance at >= 2x the embed rate;
* ``large``: a single 7 MB text file (enterprise prose with PII every few lines), the case
  Presidio users report taking 7-10 minutes (presidio issue #1461).

Also: the stage's start-up time and the process's peak RSS, and the detection accuracy on
the generated set and on the independent sets (tests/data/pii_independent), so speed and
quality are read side by side. ``--out FILE`` writes elsewhere (e.g. a run of an older
commit for a before/after comparison).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragstream.blobs import BlobStore  # noqa: E402
from schemas.events import Acl, ChangeEvent, InlineContent, Op, SourceKind  # noqa: E402
from streams.pii_eval import evaluate, load  # noqa: E402
from streams.policy import KeyRing, PolicyConfig, SourcePolicy  # noqa: E402
from streams.stages import ComplianceStage  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "compliance.json"


def large_text(size: int, seed: int = 1) -> str:
    from faker import Faker

    Faker.seed(seed)
    f = Faker("en_US")
    rng = random.Random(seed)
    parts, n = [], 0
    while n < size:
        para = f.paragraph(nb_sentences=rng.randint(4, 9))
        if rng.random() < 0.3:
            para += f" Contact {f.name()} at {f.email()} or {f.phone_number()}."
        if rng.random() < 0.05:
            para += f" SSN: {f.ssn()}. Card {f.credit_card_number()}."
        parts.append(para)
        n += len(para) + 2
    return "\n\n".join(parts)


def event(doc_id: str, text: str) -> ChangeEvent:
    return ChangeEvent(source="bench", source_kind=SourceKind.filesystem, doc_id=doc_id, op=Op.upsert, version=1,
                       changed_at=datetime.now(timezone.utc), content=InlineContent.of(text),
                       acl=Acl(principals=("group:bench",)))


def rss_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def bench_corpus_texts(n: int = 200, seed: int = 42) -> list[str]:
    """The text documents of the pipeline benchmark's corpus (PDF and DOCX ones are skipped)."""
    from bench.corpus import document

    rng = random.Random(seed)
    return [body for _, body in (document(rng, i) for i in range(n)) if isinstance(body, str)]


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ragstream-bench-compliance-"))
    policy = PolicyConfig(default=SourcePolicy(frameworks=("GDPR", "HIPAA")))
    t0 = time.perf_counter()
    stage = ComplianceStage(BlobStore(home / "blobs"), inline_max_bytes=16_000_000, policy=policy,
                            keys=KeyRing(home / "keys"))
    stage.process(event("bench:warm", "warm up Dear Jane Roe"))
    startup_s = time.perf_counter() - t0
    rss_after_start = rss_mib()

    docs = load(ROOT / "bench" / "data" / "pii_eval.jsonl")
    texts = [d["text"] for d in docs] * 5
    size = sum(len(t.encode()) for t in texts)
    t0 = time.perf_counter()
    for i, t in enumerate(texts):
        stage.process(event(f"bench:{i}", t))
    corpus_s = time.perf_counter() - t0

    bench_texts = bench_corpus_texts()
    bench_size = sum(len(t.encode()) for t in bench_texts)
    t0 = time.perf_counter()
    for i, t in enumerate(bench_texts):
        stage.process(event(f"bench:corpus:{i}", t))
    bench_s = time.perf_counter() - t0
    pipeline = json.loads((ROOT / "bench" / "results" / "pipeline.json").read_text())["runs"][0]
    embed_s_per_doc = pipeline["stage_busy_seconds"]["embed"] / pipeline["docs"]

    big = large_text(7_000_000)
    big_size = len(big.encode())
    t0 = time.perf_counter()
    out = stage.process(event("bench:large", big))
    large_s = time.perf_counter() - t0
    assert out and out[0].value is not None

    detector = stage.detector
    accuracy = {}
    sets = {"generated": ROOT / "bench" / "data" / "pii_eval.jsonl"}
    sets.update((p.stem, p) for p in sorted((ROOT / "tests" / "data" / "pii_independent").glob("*.jsonl")))
    for name, path in sets.items():
        summary = evaluate(load(path), detector).summary()
        accuracy[name] = {k: summary[k] for k in ("structured", "person", "location_organization", "overall")
                          if k in summary}
    result = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "frameworks": ["GDPR", "HIPAA"],
        "startup_seconds": round(startup_s, 2),
        "corpus": {"documents": len(texts), "bytes": size, "seconds": round(corpus_s, 2),
                   "mb_per_s": round(size / 1e6 / corpus_s, 3)},
        "bench_corpus": {"documents": len(bench_texts), "bytes": bench_size, "seconds": round(bench_s, 2),
                         "mb_per_s": round(bench_size / 1e6 / bench_s, 3),
                         "seconds_per_doc": round(bench_s / len(bench_texts), 4),
                         "embed_seconds_per_doc": round(embed_s_per_doc, 4),
                         "times_embed_rate": round(embed_s_per_doc / (bench_s / len(bench_texts)), 1)},
        "large": {"bytes": big_size, "seconds": round(large_s, 2), "mb_per_s": round(big_size / 1e6 / large_s, 3)},
        "peak_rss_mib": {"after_start": rss_after_start, "end": rss_mib()},
        "accuracy": accuracy,
        "goal": {"times_embed_rate": 2.0, "rss_mib_max": 1024},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
