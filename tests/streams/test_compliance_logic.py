"""PII detection, policy and the audit chain as plain code (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.events import AuditEvent, Classification
from streams.audit import Checkpoints, chain, verify
from streams.pii import Detector, luhn_valid, vin_valid
from streams.pii_eval import evaluate, load
from streams.policy import (
    KeyRing,
    PolicyConfig,
    PolicyError,
    SourcePolicy,
    decide,
    erase_subjects,
    load_policy,
    subject_ref,
    subject_tokens,
)

EVAL_SET = Path(__file__).parents[2] / "bench" / "data" / "pii_eval.jsonl"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


def test_labelled_set_meets_the_targets(detector):
    summary = evaluate(load(EVAL_SET), detector).summary()
    assert summary["structured"]["recall"] >= 0.95, summary["per_type"]
    assert summary["person"]["recall"] >= 0.85, summary["person"]
    assert summary["overall"]["precision"] >= 0.90, summary["per_type"]


def test_the_eval_set_is_reproducible(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "again.jsonl"
    # A fresh process, as a user runs it (the generator fixes string hashing for Faker).
    subprocess.run([sys.executable, "-m", "bench.pii_evalset", "--out", str(out)], check=True,
                   cwd=EVAL_SET.parents[2], capture_output=True)
    assert out.read_bytes() == EVAL_SET.read_bytes(), "bench/data/pii_eval.jsonl is stale: run `python -m bench.pii_evalset`"


def found(detector: Detector, text: str) -> list[tuple[str, str]]:
    return [(f.entity_type, text[f.start:f.end]) for f in detector.analyze(text)]


def test_checksums_decide_structured_identifiers(detector):
    assert ("IP_ADDRESS", "203.0.113.77") in found(detector, "login came from 203.0.113.77.")
    assert ("CREDIT_CARD", "4111 1111 1111 1111") in found(detector, "card 4111 1111 1111 1111 on file")
    assert not any(t == "CREDIT_CARD" for t, _ in found(detector, "card 4111 1111 1111 1112 on file"))
    assert ("IBAN_CODE", "GB82 WEST 1234 5698 7654 32") in found(detector, "IBAN GB82 WEST 1234 5698 7654 32.")
    assert not any(t == "IBAN_CODE" for t, _ in found(detector, "IBAN GB83 WEST 1234 5698 7654 32."))
    assert vin_valid("1HGCM82633A004352") and not vin_valid("1HGCM82634A004352")
    assert luhn_valid("378282246310005") and not luhn_valid("378282246310006")


def test_finding_types_cover_hipaa_cues(detector):
    text = "Patient aged 93, MRN: 00482913, Member ID: XGH448812993, lives at 12 Oak Street, Boston, MA 02110."
    types = {t for t, _ in found(detector, text)}
    assert {"AGE", "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_ID", "STREET_ADDRESS", "ZIP_CODE"} <= types
    # Ages in context are found at any value; HIPAA hides only those over 89 (see the policy tests).
    assert ("AGE", "45") in found(detector, "aged 45, stable")
    assert not any(t == "AGE" for t, _ in found(detector, "Dosage 45 mg, stable"))


def test_a_7mb_text_takes_seconds(detector):
    import time

    text = ("Contact Jane Roe at jane.roe@example.com or 415-555-0132. " + "Plain quarterly text. " * 40 + "\n") * 7000
    t0 = time.perf_counter()
    detector.analyze(text)
    # Not a speed goal (bench/compliance.py measures MB/s): a guard against minutes, issue #1461-style.
    assert time.perf_counter() - t0 < 60


def test_pseudonyms_are_stable_per_tenant_and_differ_across_tenants(tmp_path, detector):
    keys = KeyRing(tmp_path)
    policy = SourcePolicy(frameworks=("GDPR",))
    a = decide("Mail from Dear Jane Roe", detector.analyze("Mail from Dear Jane Roe"), policy, keys.key("acme"))
    b = decide("Dear Jane Roe, hello", detector.analyze("Dear Jane Roe, hello"), policy, keys.key("acme"))
    c = decide("Dear Jane Roe, hello", detector.analyze("Dear Jane Roe, hello"), policy, keys.key("other"))
    assert "Jane Roe" not in a.text + b.text + c.text
    assert a.subject_refs == b.subject_refs != c.subject_refs
    token = a.text.split("[PERSON:")[1].split("]")[0]
    assert token in b.text and token not in c.text
    assert (tmp_path / "pseudonym-acme.key").stat().st_mode & 0o777 == 0o600


def test_hipaa_keeps_the_year_and_three_zip_digits_and_redacts_names(detector, tmp_path):
    text = "Dr. Alan Turing saw the patient on 2023-03-04 in Boston, MA 02110; email alan@example.org."
    d = decide(text, detector.analyze(text), SourcePolicy(frameworks=("HIPAA",)), KeyRing(tmp_path).key("t"))
    assert "Alan Turing" not in d.text and "alan@example.org" not in d.text
    assert "2023" in d.text and "03-04" not in d.text
    assert "021XX" in d.text
    assert d.compliant == {"HIPAA": False} and d.classification is Classification.confidential


def test_block_and_override_and_erased_subjects(detector, tmp_path):
    key = KeyRing(tmp_path).key("t")
    text = "Employee SSN: 536-22-8714. Contact Dear Jane Roe."
    blocked = decide(text, detector.analyze(text), SourcePolicy(block_entities=("US_SSN",)), key)
    assert blocked.blocked and "US_SSN" in blocked.blocked
    allow = SourcePolicy(frameworks=("SOX",), actions={"PERSON": "allow"}, retention_days=30)
    kept = decide(text, detector.analyze(text), allow, key)
    assert "Jane Roe" in kept.text and kept.retention_days == 7 * 365  # SOX keeps financial records 7 years
    erased = frozenset(kept.subject_refs)
    gone = decide(text, detector.analyze(text), allow, key, erased=erased)
    assert "Jane Roe" not in gone.text and "[PERSON]" in gone.text
    assert not set(gone.subject_refs) & erased, "an erased subject is no longer referenced"


def test_erasure_removes_clear_values_and_pseudonym_tokens_of_the_subject_only(detector, tmp_path):
    key = KeyRing(tmp_path).key("t")
    text = "Minutes by Margaret Holloway (margaret.holloway@example.org); Tobias Greene agreed."
    subject = frozenset({subject_ref(key, "PERSON", "margaret  HOLLOWAY"),
                         subject_ref(key, "EMAIL_ADDRESS", "Margaret.Holloway@example.org")})
    clear, n = erase_subjects(text, detector.analyze(text), key, subject)
    assert n == 2 and clear == "Minutes by [PERSON] ([EMAIL_ADDRESS]); Tobias Greene agreed."
    pseudo = decide(text, detector.analyze(text), SourcePolicy(), key).text  # GDPR: pseudonymize
    assert all(t in pseudo for t in subject_tokens(subject))
    erased, n = erase_subjects(pseudo, detector.analyze(pseudo), key, subject)
    assert n == 2 and not any(t in erased for t in subject_tokens(subject))
    assert erased.count("[PERSON:") == 1, "the other person's pseudonym stays"


def test_dsr_requests_carry_pseudonyms_never_raw_values():
    from datetime import datetime, timezone

    from pydantic import ValidationError

    from schemas.events import DsrRequest

    due = datetime(2030, 1, 1, tzinfo=timezone.utc)
    ok = DsrRequest(kind="erasure", subject_refs=("person:0123456789abcdef",), due_at=due, requested_by="user:x")
    assert ok.framework == "GDPR"
    for bad in (("Jane Roe",), ("email_address:jane@example.org",), ()):
        with pytest.raises(ValidationError):
            DsrRequest(kind="erasure", subject_refs=bad, due_at=due, requested_by="user:x")


def test_classification_levels(detector, tmp_path):
    key = KeyRing(tmp_path).key("t")
    policy = SourcePolicy()
    def level(text: str, public: bool = False) -> Classification:
        return decide(text, detector.analyze(text), policy, key, public_acl=public).classification
    assert level("The cafeteria opens at nine.", public=True) is Classification.public
    assert level("The cafeteria opens at nine.") is Classification.internal
    assert level("CONFIDENTIAL: the merger plan.") is Classification.confidential
    assert level("Card 4111 1111 1111 1111 was charged.") is Classification.restricted
    floor = SourcePolicy(classification_floor=Classification.confidential)
    assert decide("hello", [], floor, key).classification is Classification.confidential


def test_policy_file_errors_say_what_is_wrong(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('[default]\nframeworks = ["GDPR", "PCI"]\n')
    with pytest.raises(PolicyError, match="unknown framework.*PCI"):
        load_policy(bad)
    bad.write_text('[sources.x]\nactions = { NAME = "redact" }\n')
    with pytest.raises(PolicyError, match="unknown entity type.*NAME"):
        load_policy(bad)
    bad.write_text('[default]\nframeworks = [\n')
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "missing.toml")
    good = tmp_path / "ok.toml"
    good.write_text('[sources."hr-*"]\nframeworks = ["HIPAA"]\n')
    cfg = load_policy(good)
    assert cfg.for_source("hr-files").frameworks == ("HIPAA",) and cfg.for_source("wiki") == PolicyConfig().default


def _chain(n: int) -> list[dict]:
    records, prev = [], None
    for i in range(n):
        r = chain(AuditEvent(actor="stage:test", action="compliance.decision", target=f"doc-{i}",
                             details={"n": i, "ratio": 0.5, "version": 1795508955807368761}), i, prev)
        prev = r.hash
        records.append(json.loads(r.model_dump_json()))
    return records


def test_audit_chain_verifies_and_catches_each_kind_of_tampering(tmp_path):
    records = _chain(10)
    assert verify(records).ok
    altered = [dict(r) for r in records]
    altered[4] = {**altered[4], "details": {"n": 999, "ratio": 0.5}}
    v = verify(altered)
    assert not v.ok and v.seq == 4 and "altered" in v.problem
    removed = records[:3] + records[4:]
    v = verify(removed)
    assert not v.ok and v.break_at == 3
    rehashed = [dict(r) for r in records]  # an attacker recomputes the chain after the edit
    rehashed[4] = {**rehashed[4], "details": {"n": 999, "ratio": 0.5}}
    from streams.audit import record_hash
    for i in range(4, 10):
        if i > 4:
            rehashed[i] = {**rehashed[i], "prev_hash": rehashed[i - 1]["hash"]}
        rehashed[i] = {**rehashed[i], "hash": record_hash(rehashed[i])}
    assert verify(rehashed).ok  # the chain alone cannot see a full rewrite...
    cps = Checkpoints(tmp_path)
    cps.write(9, records[9]["hash"])
    v = verify(rehashed, cps)  # ...a checkpoint signed outside Kafka can
    assert not v.ok and v.seq == 9 and "rewritten" in v.problem
    assert verify(records, cps).ok
