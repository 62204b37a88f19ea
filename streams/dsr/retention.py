"""The retention sweep: documents past their retain-until date leave every store."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from ragstream.metrics import RETENTION_DELETED, RETENTION_HELD
from schemas import topics
from schemas.events import AuditEvent, DocumentRecord, Op, new_event_id
from schemas.serde import encode
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.stages import Output
from ragstream.logging import get_logger

log = get_logger(__name__)


class RetentionMixin:
    """Retention: documents past their retain-until date are deleted everywhere."""

    def timers(self) -> list[tuple[float, Any]]:
        return [(self.settings.retention_sweep_s, self.sweep_retention)]

    def sweep_retention(self) -> list["Output"]:
        """Deletes for documents past ``retain_until`` (not under a legal hold), audited."""
        from streams.stages import Output

        now = datetime.now(timezone.utc)
        rows = self.index.first_rows(f"retain_until > 0 and retain_until <= {int(now.timestamp())}",
                                     ["doc_id", "source", "source_kind", "version", "retain_until"])
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["doc_id"] not in latest or r["version"] > latest[r["doc_id"]]["version"]:
                latest[r["doc_id"]] = r
        out: list[Output] = []
        held = 0
        for doc_id, r in sorted(latest.items()):
            if self.policy.for_source(r["source"]).legal_hold:
                held += 1
                continue
            if self._swept.get(doc_id) == r["version"]:
                continue  # sent already; the index has not applied it yet
            state = self.index.doc_state(doc_id)
            gone = DocumentRecord(event_id=new_event_id(), source=r["source"], source_kind=r["source_kind"],
                                  doc_id=doc_id, op=Op.delete, version=r["version"],
                                  revision=(state["revision"] if state else 0) + 1, changed_at=now)
            until = datetime.fromtimestamp(r["retain_until"], timezone.utc).isoformat()
            audit = AuditEvent(actor="stage:dsr", action="retention.delete", target=doc_id,
                               details={"source": r["source"], "version": r["version"], "retain_until": until})
            out += [Output.of(topics.DOCUMENTS, gone), Output(topics.DOCUMENTS, doc_id, None),
                    Output(topics.AUDIT_EVENTS, audit.event_id, encode(audit))]
            self._swept[doc_id] = r["version"]
            RETENTION_DELETED.inc()
        RETENTION_HELD.set(held)
        if out or held:
            log.info("retention sweep", deleted=len(out) // 3, held=held)
        return out



#: CLI option → the entity type whose pseudonym identifies the subject.
