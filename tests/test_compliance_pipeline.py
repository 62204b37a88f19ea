"""Compliance end to end: seeded PII, under a redact policy, appears nowhere downstream.

Uses the session's private pipeline (tests/conftest.py), whose policy redacts every entity
type for sources named ``seeded-*``. After the documents are indexed the test reads every
downstream topic from offset 0, every Milvus row, every worker log and every metrics page,
and looks for each seeded value. ``rag.changes`` (raw, upstream of compliance, short
retention) must still hold them: proof that the scan finds what is there.
"""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from consumers.milvus import MilvusIndex
from producers.filesystem import FilesystemSource
from ragstream.admin import wait_drained
from schemas import topics
from streams.audit import Checkpoints, read_chain, verify
from streams.embedding import model_dim
from streams.registry import PIPELINE as STAGES, metrics_port

pytestmark = pytest.mark.integration

SEEDED = {
    "PERSON": "Marguerite Okonkwo-Baptiste",
    "EMAIL_ADDRESS": "m.okonkwo.baptiste@example.org",
    "PHONE_NUMBER": "(415) 555-0187",
    "US_SSN": "536-22-8714",
    "CREDIT_CARD": "4539 1488 0343 6467",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "MEDICAL_RECORD_NUMBER": "77120943",
    "IP_ADDRESS": "203.0.113.77",
}

DOCS = {
    "intake.md": f"""# Intake for Dr. {SEEDED['PERSON']}

Patient contact: {SEEDED['EMAIL_ADDRESS']}, phone {SEEDED['PHONE_NUMBER']}.
SSN: {SEEDED['US_SSN']}. MRN: {SEEDED['MEDICAL_RECORD_NUMBER']}.

The intake went well; follow-up in six weeks.
""",
    "billing.txt": f"""Billing note for Dear {SEEDED['PERSON']},

Card {SEEDED['CREDIT_CARD']} was charged; refunds go to IBAN {SEEDED['IBAN_CODE']}.
Portal login came from {SEEDED['IP_ADDRESS']}.
""",
}


def read_topic(settings, topic: str) -> list[bytes]:
    """Every message of ``topic`` (key and value). ``scan_topic`` finds each partition's end by
    partition EOF, so commit markers of the transactional rag.audit are no obstacle."""
    from ragstream.consumer import scan_topic

    return [(msg.key() or b"") + b"\x00" + (msg.value() or b"") for msg in scan_topic(settings, topic, timeout=10)]


def leaks(blobs: list[bytes] | list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for b in blobs:
        text = b.decode("utf-8", "replace") if isinstance(b, bytes) else b
        for entity, value in SEEDED.items():
            if value in text or json.dumps(value)[1:-1] in text:
                found[entity] = found.get(entity, 0) + 1
    return found


@pytest.fixture(scope="module")
def seeded(pipeline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeded")
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    source = FilesystemSource(pipeline, folder, source_id=f"seeded-{uuid.uuid4().hex[:6]}")
    source.sync()
    assert wait_drained(pipeline, timeout=300)
    return source


def test_seeded_pii_reaches_no_store_downstream_of_compliance(pipeline, seeded):
    index = MilvusIndex(pipeline.resolved_milvus_uri, pipeline.collection, model_dim(pipeline))
    index.ensure()
    rows = index.rows(f'source == "{seeded.source_id}"', ["text", "title", "heading", "uri", "doc_id"])
    assert len({r["doc_id"] for r in rows}) == len(DOCS), "both seeded documents are indexed"
    assert any("[PERSON]" in r["text"] for r in rows) and any("[CREDIT_CARD]" in r["text"] for r in rows)
    assert leaks([json.dumps(r) for r in rows]) == {}

    raw = read_topic(pipeline, topics.CHANGES)
    assert set(leaks(raw)) == set(SEEDED), "the scan must find the values where they are (raw topic)"
    downstream = [topics.DOCUMENTS, topics.CHUNKS, topics.VECTORS, topics.AUDIT_EVENTS, topics.AUDIT]
    downstream += [topics.dlq_topic(s) for s in ("chunk", "embed", "index", "audit")]
    for topic in downstream:
        assert leaks(read_topic(pipeline, topic)) == {}, topic

    logs = [p.read_text(encoding="utf-8", errors="replace") for p in (pipeline.home / "logs").glob("*.log")]
    assert logs, "the workers write logs"
    assert leaks(logs) == {}

    pages = [urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(pipeline, s)}/metrics", timeout=5).read()
             for s in STAGES]
    assert leaks(pages) == {}
    assert b'ragstream_pii_findings_total{action="redact",entity_type="US_SSN"}' in pages[0]


def test_every_decision_is_audited_and_the_chain_verifies(pipeline, seeded):
    import time

    deadline = time.monotonic() + 30
    while True:  # checkpoints are written when the audit writer goes idle
        records = list(read_chain(pipeline))
        verdict = verify(records, Checkpoints(pipeline.home))
        if verdict.checkpoints_checked or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert verdict.ok, verdict.problem
    assert verdict.checkpoints_checked >= 1
    decisions = [r for r in records if r.action == "compliance.decision" and r.target.startswith(seeded.source_id)]
    assert len({r.target for r in decisions}) == len(DOCS)
    ssn_doc = next(r for r in decisions if r.target.endswith("intake.md"))
    assert ssn_doc.details["actions"]["redact:US_SSN"] == 1
    assert ssn_doc.details["classification"] == "restricted"


def test_audit_verify_command_catches_an_edited_export(pipeline, seeded, tmp_path):
    from click.testing import CliRunner

    from ragstream.cli import cli

    runner = CliRunner()
    env = {"RAGSTREAM_KAFKA_BOOTSTRAP": pipeline.kafka_bootstrap}
    exported = runner.invoke(cli, ["--home", str(pipeline.home), "audit", "export"], env=env)
    assert exported.exit_code == 0, exported.output
    lines = exported.output.strip().splitlines()
    assert len(lines) >= 2
    good = tmp_path / "chain.jsonl"
    good.write_text("\n".join(lines) + "\n")
    ok = runner.invoke(cli, ["--home", str(pipeline.home), "audit", "verify", "--file", str(good)], env=env)
    assert ok.exit_code == 0 and "audit chain OK" in ok.output, ok.output
    # Someone changes what was found in a record (whichever of the earlier tests wrote it).
    i, record = next((i, r) for i, r in enumerate(map(json.loads, lines)) if i and "findings" in r["details"])
    record["details"]["findings"] += 1
    lines[i] = json.dumps(record)
    bad = tmp_path / "tampered.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    broken = runner.invoke(cli, ["--home", str(pipeline.home), "audit", "verify", "--file", str(bad)], env=env)
    assert broken.exit_code == 1
    assert f"BROKEN at record #{i} (seq {record['seq']})" in broken.output and "altered" in broken.output
