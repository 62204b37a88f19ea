"""`ragstream pii`, `audit`, `dsr`: PII scans, the audit chain, data-subject requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ragstream.cli.app import cli, friendly, say, settings, UserError
from ragstream.settings import PROJECT_ROOT


# --------------------------------------------------------------------------------- pii
@cli.group()
def pii() -> None:
    """PII detection: check what the compliance stage would find and do, before turning a policy on."""


@pii.command("scan")
@click.argument("file", type=click.File("r", encoding="utf-8", errors="replace"))
@click.option("--source", default="scan", show_default=True,
              help="Apply the policy of this source id (RAGSTREAM_POLICY_FILE).")
@click.option("--show-text", is_flag=True, help="Also print the matched text (it is PII: mind your terminal).")
@friendly
def pii_scan(file: Any, source: str, show_text: bool) -> None:
    """Print the PII found in FILE (or - for stdin) as JSON lines.

    One line per finding: entity_type, start, end, score, recognizer and the action the
    policy would take (allow, pseudonymize, mask, redact, block). A last line sums it up,
    with the document's classification.
    """
    import json

    from streams.pii import Detector
    from streams.policy import Action, classify, load_policy, required_actions

    s = settings()
    policy_config = load_policy(s.policy_file)
    policy = policy_config.for_source(source)
    text = file.read()
    findings = Detector(threshold=policy_config.threshold).analyze(text)
    needed, results = required_actions(policy, {f.entity_type for f in findings})
    for f in findings:
        row = {"entity_type": f.entity_type, "start": f.start, "end": f.end, "score": f.score,
               "recognizer": f.recognizer, "action": needed.get(f.entity_type, Action.allow).value}
        if show_text:
            row["text"] = text[f.start:f.end]
        click.echo(json.dumps(row))
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.entity_type] = counts.get(f.entity_type, 0) + 1
    click.echo(json.dumps({"summary": {"findings": len(findings), "by_type": counts,
                                       "classification": classify(findings, text, False, policy.classification_floor).value,
                                       "frameworks": list(policy.frameworks),
                                       "compliant_as_found": {r.framework: r.compliant for r in results}}}))


@pii.command("eval")
@click.argument("labelled", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@friendly
def pii_eval(labelled: str | None, as_json: bool) -> None:
    """Score detection on a labelled set: precision, recall and F2 per entity type.

    LABELLED is a JSON-lines file, one document per line:
    {"text": "...", "spans": [{"start": 0, "end": 8, "entity_type": "PERSON"}]}.
    Default: the repository's generated set, bench/data/pii_eval.jsonl (regenerate with
    `python -m bench.pii_evalset`).
    """
    import json

    from streams.pii_eval import evaluate, format_table, load

    path = Path(labelled) if labelled else PROJECT_ROOT / "bench" / "data" / "pii_eval.jsonl"
    try:
        docs = load(path)
    except ValueError as exc:
        raise UserError(f"ragstream: {exc}") from None
    summary = evaluate(docs).summary()
    click.echo(json.dumps(summary, indent=2) if as_json else format_table(summary))


# ------------------------------------------------------------------------------- audit
@cli.group()
def audit() -> None:
    """The tamper-evident audit log (rag.audit): verify and export the hash chain."""


@audit.command("verify")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False),
              help="Verify an exported chain (JSON lines) instead of the topic.")
@friendly
def audit_verify(path: str | None) -> None:
    """Walk the chain from the first record; report the first break and exit 1 if there is one.

    Also checks the signed checkpoints the audit writer keeps outside Kafka
    (<home>/audit/checkpoints.jsonl), which catch a chain rewritten as a whole.
    """
    import json

    from streams.audit import Checkpoints, read_chain, verify

    s = settings()
    records: Any = ([json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
                    if path else read_chain(s))
    verdict = verify(records, Checkpoints(s.home))
    if verdict.ok:
        say(f"audit chain OK: {verdict.records} record(s), {verdict.checkpoints_checked} signed checkpoint(s) "
            f"matched, {verdict.repeats} re-delivered event(s); head {verdict.last_hash}")
        return
    where = f"record #{verdict.break_at} (seq {verdict.seq})" if verdict.break_at is not None else f"seq {verdict.seq}"
    raise UserError(f"audit chain BROKEN at {where}: {verdict.problem}")


@audit.command("export")
@friendly
def audit_export() -> None:
    """Print every audit record as JSON lines, oldest first (for archives and `verify --file`)."""
    from streams.audit import read_chain

    for record in read_chain(settings()):
        click.echo(record.model_dump_json())


# --------------------------------------------------------------------------------- dsr
@cli.group()
def dsr() -> None:
    """Data-subject requests (GDPR Art. 15-20, CCPA): access, erase, rectify, export.

    The subject is named by what identifies them in documents (--name, --email, ...). Only
    pseudonyms of those values (keyed HMAC, the tenant's key) leave this command; the dsr
    worker carries the request out and writes a receipt into the audit chain. Deadlines:
    GDPR one month, CCPA 45 days, tracked by `ragstream dsr list`.
    """


def _subject_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--name", multiple=True, help="A name the subject appears under (repeatable)."),
        click.option("--email", multiple=True, help="An email address of the subject (repeatable)."),
        click.option("--phone", multiple=True, help="A phone number of the subject (repeatable)."),
        click.option("--ssn", multiple=True, help="A US social security number of the subject."),
        click.option("--mrn", multiple=True, help="A medical record number of the subject."),
        click.option("--ref", "refs", multiple=True, metavar="TYPE:HEX",
                     help="A pseudonymous subject ref already known (e.g. from an access export)."),
        click.option("--framework", type=click.Choice(["GDPR", "CCPA"]), default="GDPR", show_default=True,
                     help="Sets the deadline: GDPR one month, CCPA 45 days."),
        click.option("--tenant", default="default", show_default=True, help="Whose pseudonym key to use."),
        click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the receipt."),
        click.option("--timeout", default=1800.0, show_default=True, help="Seconds to wait for the receipt."),
    ]):
        fn = opt(fn)
    return fn


def _file_dsr(kind: str, name: tuple[str, ...], email: tuple[str, ...], phone: tuple[str, ...],
              ssn: tuple[str, ...], mrn: tuple[str, ...], refs: tuple[str, ...], framework: str, tenant: str,
              wait: bool, timeout: float) -> None:
    import getpass
    import json

    from pydantic import ValidationError

    from schemas.events import DsrKind
    from streams.dsr import submit, subject_refs_for, wait_receipt
    from streams.policy import KeyRing

    s = settings()
    given = {"name": list(name), "email": list(email), "phone": list(phone), "ssn": list(ssn), "mrn": list(mrn)}
    from streams.dsr import UnknownTenant
    from streams.policy import load_policy

    try:
        mine = subject_refs_for(KeyRing(s.home / "keys"), tenant, given, tenants=load_policy(s.policy_file).tenants)
    except UnknownTenant as exc:
        raise UserError(str(exc)) from None
    all_refs = tuple(sorted(set(mine) | set(refs)))
    if not all_refs:
        raise UserError("name the subject: give at least one of --name, --email, --phone, --ssn, --mrn or --ref")
    try:
        req = submit(s, DsrKind(kind), all_refs, framework=framework, tenant=tenant, actor=f"user:{getpass.getuser()}")
    except ValidationError as exc:
        raise UserError("; ".join(e["msg"] for e in exc.errors())) from None
    say(f"request {req.request_id}: {kind} for {len(req.subject_refs)} subject ref(s); "
        f"due {req.due_at:%Y-%m-%d} ({framework})")
    if not wait:
        say(f"follow it with: ragstream dsr show {req.request_id}")
        return
    say("waiting for the dsr worker's receipt (an erasure waits for compaction; see --timeout)...")
    receipt = wait_receipt(s, req.request_id, timeout)
    if receipt is None:
        raise UserError(f"no receipt for {req.request_id} within {timeout:.0f} s; is `ragstream worker dsr` running? "
                        f"Check later with `ragstream dsr show {req.request_id}`.")
    click.echo(json.dumps(receipt, indent=2, sort_keys=True))
    if receipt.get("verified") is False:
        raise UserError(f"request {req.request_id} is not verified yet: see 'remaining' above")


@dsr.command("access", short_help="Right of access: export what is indexed about a subject.")
@_subject_options
@friendly
def dsr_access(**kw: Any) -> None:
    """Right of access (GDPR Art. 15, CCPA right to know): a JSON export of everything
    indexed that references the subject, written by the dsr worker (mode 0600)."""
    _file_dsr("access", **kw)


@dsr.command("export", short_help="Data portability: a machine-readable export of a subject's data.")
@_subject_options
@friendly
def dsr_export(**kw: Any) -> None:
    """Right to data portability (GDPR Art. 20): the same structured, machine-readable export."""
    _file_dsr("portability", **kw)


@dsr.command("erase", short_help="Right to erasure: remove a subject from every store.")
@_subject_options
@friendly
def dsr_erase(**kw: Any) -> None:
    """Right to erasure (GDPR Art. 17, CCPA right to delete).

    Removes the subject from Milvus, rag.documents (rewritten, then compacted), rag.chunks and
    rag.vectors (truncated), and keeps them out of later versions. Documents under a legal
    hold or SOX leave the index instead. The receipt gives per-store counts and whether a
    re-read of every store found nothing.
    """
    _file_dsr("erasure", **kw)


@dsr.command("rectify", short_help="Rectification: reprocess a subject's documents from source.")
@_subject_options
@friendly
def dsr_rectify(**kw: Any) -> None:
    """Right to rectification (GDPR Art. 16): once the data is corrected at the source,
    re-read the subject's documents from it and reprocess them."""
    _file_dsr("rectification", **kw)


@dsr.command("list")
@friendly
def dsr_list() -> None:
    """Every request with its deadline and status (open, done, overdue, not verified)."""
    from schemas.events import utcnow
    from streams.dsr import receipts, requests

    s = settings()
    done = receipts(s)
    reqs = requests(s)
    if not reqs:
        say("no data-subject requests")
        return
    now = utcnow()
    click.echo(f"{'request':<34}{'kind':<15}{'fw':<6}{'received':<18}{'due':<12}status")
    for r in sorted(reqs, key=lambda r: r.received_at):
        rc = done.get(r.request_id)
        if rc is None:
            status = "OVERDUE" if now > r.due_at else "open"
        elif rc.get("verified") is False:
            status = "done, not verified: " + ", ".join(k for k, v in rc.get("remaining", {}).items() if v)
        else:
            status = "done" + ("" if rc.get("deadline_met", True) else " (late)")
        click.echo(f"{r.request_id:<34}{r.kind.value:<15}{r.framework:<6}{r.received_at:%Y-%m-%d %H:%M}  "
                   f"{r.due_at:%Y-%m-%d}  {status}")


@dsr.command("show")
@click.argument("request_id")
@friendly
def dsr_show(request_id: str) -> None:
    """Print a request's receipt (from the audit chain)."""
    import json

    from streams.dsr import receipts

    receipt = receipts(settings()).get(request_id)
    if receipt is None:
        raise UserError(f"no receipt for {request_id} yet: it is still open, or the id is wrong "
                        "(see `ragstream dsr list`)")
    click.echo(json.dumps(receipt, indent=2, sort_keys=True))
