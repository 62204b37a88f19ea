"""Filing data-subject requests and reading their receipts (the API and CLI side)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Callable, Iterable
from schemas import topics
from schemas.events import AuditEvent, DsrKind, DsrRequest, utcnow
from schemas.serde import SerdeError, decode, encode
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragstream.settings import Settings
    from streams.policy import KeyRing


IDENTIFIERS = {"name": "PERSON", "email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "ssn": "US_SSN",
               "mrn": "MEDICAL_RECORD_NUMBER"}


class UnknownTenant(ValueError):
    """A request names a tenant that neither the policy nor any key knows (a typo would
    otherwise get a fresh key, match nothing, and still report "verified")."""


def subject_refs_for(keys: "KeyRing", tenant: str, identifiers: dict[str, list[str]],
                     tenants: Iterable[str] = ("default",)) -> tuple[str, ...]:
    """Pseudonymous refs of the identifiers a requester gave (``{"name": ["Jane Roe"]}``).
    ``tenants``: those the policy names; any other tenant must already have a key."""
    from streams.policy import subject_ref

    known = set(tenants)
    if tenant not in known and not keys.known(tenant):
        raise UnknownTenant(f"unknown tenant {tenant!r}: no policy names it and it has no pseudonym key, so no "
                            f"document can reference this subject under it. Tenants: {', '.join(sorted(known))}")
    key = keys.key(tenant)
    refs = {subject_ref(key, IDENTIFIERS[kind], value) for kind, values in identifiers.items() for value in values}
    return tuple(sorted(refs))


def submit(settings: "Settings", kind: DsrKind, refs: tuple[str, ...], *, framework: str = "GDPR",
           tenant: str = "default", actor: str) -> DsrRequest:
    """Publish a request to ``rag.dsr`` and record its receipt (``dsr.<kind>.received``)."""
    from ragstream.publisher import Publisher
    from schemas.events import DSR_DEADLINE_DAYS

    received = utcnow()
    req = DsrRequest(kind=kind, framework=framework, tenant=tenant, subject_refs=refs, received_at=received,
                     due_at=received + timedelta(days=DSR_DEADLINE_DAYS[framework]), requested_by=actor)
    audit = AuditEvent(actor=actor, action=f"dsr.{kind.value}.received", target=req.request_id,
                       details={"kind": kind.value, "framework": framework, "tenant": tenant,
                                "subjects": list(req.subject_refs), "due_at": req.due_at.isoformat()})
    with Publisher(settings, client_id="ragstream-dsr-client") as pub:
        pub.publish(topics.DSR, req, key=req.request_id)
        pub.publish_raw(topics.AUDIT_EVENTS, audit.event_id, encode(audit))
        pub.flush()
    return req


def requests(settings: "Settings") -> list[DsrRequest]:
    from ragstream.consumer import scan_topic

    out = []
    for msg in scan_topic(settings, topics.DSR):
        try:
            out.append(decode(DsrRequest, msg.value()))
        except SerdeError:
            continue
    return out


def receipts(settings: "Settings") -> dict[str, dict[str, Any]]:
    """Completed requests, from the audit chain: request id → receipt details (+ ``seq``)."""
    from streams.audit import read_chain

    return {r.target: {**r.details, "seq": r.seq} for r in read_chain(settings)
            if r.action.startswith("dsr.") and r.action.endswith(".completed")}


def wait_receipt(settings: "Settings", request_id: str, timeout: float,
                 tick: Callable[[], None] | None = None) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = receipts(settings).get(request_id)
        if found is not None:
            return found
        if tick:
            tick()
        time.sleep(2)
    return None
