"""Rectification (GDPR Art. 16): re-read the subject's documents through their connectors."""

from __future__ import annotations

from typing import Any
from schemas.events import DsrRequest
from ragstream.logging import get_logger

log = get_logger(__name__)


class RectificationMixin:
    """Art. 16: the subject's documents read again from their sources."""

    def rectify(self, req: DsrRequest) -> dict[str, Any]:
        """Art. 16: re-read the subject's documents from their (corrected) sources, each
        through its connector (:mod:`ragstream.connector`); a source that cannot be opened
        here is reported as pending at the source."""
        from ragstream.admin import wait_drained
        from ragstream.connector import open_source

        refs = frozenset(req.subject_refs)
        by_source: dict[str, list[str]] = {}
        for d in self.referencing(refs):
            by_source.setdefault(d.source, []).append(d.doc_id)
        pending: dict[str, int] = {}
        reread = 0
        for source, doc_ids in by_source.items():
            try:
                open_source(self.settings, source).reread(doc_ids)
                reread += len(doc_ids)
            except Exception as exc:  # noqa: BLE001 - any source's failure: that source is pending, not the request
                log.warning("cannot re-read a source for rectification", source=source, error=str(exc))
                pending[source] = pending.get(source, 0) + len(doc_ids)
        drained = wait_drained(self.settings, timeout=600, stages=("compliance", "chunk", "embed", "index"))
        return {"documents_reread": reread, "pending_at_source": pending, "applied": drained,
                "verified": drained and not pending}
