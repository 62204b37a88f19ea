"""Compliance-stage speed: MB of text per second on one core, and one large file.

    .venv/bin/python bench/compliance.py            # writes bench/results/compliance.json

Runs the compliance stage's own logic (:class:`streams.stages.ComplianceStage.process`:
resolve, detect, apply the policy, build the record and the audit event) in this process
on one thread, with no broker, so the figure is the stage's CPU cost per core:

* ``corpus``: the labelled evaluation documents (bench/data/pii_eval.jsonl), many small
  PII-dense texts, processed one by one as the stage sees them;
* ``large``: a single 7 MB text file (enterprise prose with PII every few lines), the case
  Presidio users report taking 7-10 minutes (presidio issue #1461).

Also reports the detection accuracy on the labelled set (``ragstream pii eval``) so speed
and quality are read side by side.
"""

from __future__ import annotations

import json
import random
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


def main() -> None:
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="ragstream-bench-compliance-"))
    policy = PolicyConfig(default=SourcePolicy(frameworks=("GDPR", "HIPAA")))
    stage = ComplianceStage(BlobStore(home / "blobs"), inline_max_bytes=16_000_000, policy=policy,
                            keys=KeyRing(home / "keys"))
    stage.process(event("bench:warm", "warm up Dear Jane Roe"))

    docs = load(ROOT / "bench" / "data" / "pii_eval.jsonl")
    texts = [d["text"] for d in docs] * 5
    size = sum(len(t.encode()) for t in texts)
    t0 = time.perf_counter()
    for i, t in enumerate(texts):
        stage.process(event(f"bench:{i}", t))
    corpus_s = time.perf_counter() - t0

    big = large_text(7_000_000)
    big_size = len(big.encode())
    t0 = time.perf_counter()
    out = stage.process(event("bench:large", big))
    large_s = time.perf_counter() - t0
    assert out and out[0].value is not None

    summary = evaluate(docs).summary()
    result = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "frameworks": ["GDPR", "HIPAA"],
        "corpus": {"documents": len(texts), "bytes": size, "seconds": round(corpus_s, 2),
                   "mb_per_s": round(size / 1e6 / corpus_s, 3)},
        "large": {"bytes": big_size, "seconds": round(large_s, 2), "mb_per_s": round(big_size / 1e6 / large_s, 3)},
        "accuracy": {k: summary[k] for k in ("structured", "person", "overall")},
        "goal_mb_per_s_per_core": 1.0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
