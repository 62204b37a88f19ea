"""Access and portability (GDPR Art. 15, 20): an export of what is indexed about a subject."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any
from schemas.events import DsrRequest, utcnow


class AccessMixin:
    """Art. 15 and 20: what is indexed about a subject, exported."""

    def access(self, req: DsrRequest) -> dict[str, Any]:
        """Art. 15 / Art. 20: everything indexed that references the subject, as JSON."""
        refs = frozenset(req.subject_refs)
        docs = self.referencing(refs)
        rows = self.milvus_rows(refs)
        per_doc: dict[str, int] = {}
        for r in rows:
            per_doc[r["doc_id"]] = per_doc.get(r["doc_id"], 0) + 1
        export = {
            "request_id": req.request_id, "kind": req.kind.value, "framework": req.framework,
            "generated_at": utcnow().isoformat(), "subject_refs": list(req.subject_refs),
            "purpose": "enterprise search and retrieval-augmented generation over the listed sources",
            "documents": [{
                "doc_id": d.doc_id, "source": d.source, "source_kind": str(d.source_kind),
                "title": d.metadata.title, "uri": d.metadata.uri, "changed_at": d.changed_at.isoformat(),
                "classification": d.classification.value, "frameworks": list(d.frameworks),
                "actions_applied": list(d.actions),
                "retain_until": d.retain_until.isoformat() if d.retain_until else None,
                "chunks_indexed": per_doc.get(d.doc_id, 0), "text": self._text(d),
            } for d in sorted(docs, key=lambda d: d.doc_id)],
        }
        data = json.dumps(export, indent=2, ensure_ascii=False).encode("utf-8")
        path = self.settings.home / "dsr" / f"{req.request_id}.{req.kind.value}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return {"documents": len(docs), "milvus_rows": len(rows), "export": str(path),
                "export_sha256": hashlib.sha256(data).hexdigest()}
