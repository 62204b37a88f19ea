"""The topic catalog: the one place that names ragstream's topics and how they are kept.

``ragstream topics ensure`` applies it idempotently (see :mod:`ragstream.topics`).
Choices worth knowing:

* Stage topics share one partition count (``RAGSTREAM_PARTITIONS``) and are keyed by
  ``doc_id``, so every event of a document stays in order through every stage.
* Topics that hold unredacted source content (``rag.changes`` and the dead letters of the
  stages that read it) keep it only for ``RAGSTREAM_RAW_RETENTION_DAYS``: Kafka forgets raw
  PII by retention.
* ``rag.documents`` and ``rag.acl`` are compacted: the latest version of each document, the
  replay source for reindexing. ``max.compaction.lag.ms`` bounds how long an erased value can
  survive; ``segment.ms`` rolls the active segment, which compaction never touches.
* ``rag.dsr.erased`` is compacted and never tombstoned: the suppression list of erased
  subjects (pseudonyms only), so an erased person stays out of later versions.
* ``rag.audit`` has one partition (one total order for the hash chain) and keeps 7 years
  (SOX).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from schemas.events import (
    AclChange,
    AuditEvent,
    AuditRecord,
    ChangeEvent,
    ChunkSet,
    Contract,
    DocumentRecord,
    DsrRequest,
    ErasedSubject,
    VectorSet,
)

if TYPE_CHECKING:
    from ragstream.settings import Settings

DAY_MS = 24 * 3600 * 1000
#: Bytes a topic accepts beyond RAGSTREAM_MAX_MESSAGE_BYTES: key, headers, batch overhead.
MESSAGE_HEADROOM = 65_536

CHANGES = "rag.changes"
DOCUMENTS = "rag.documents"
CHUNKS = "rag.chunks"
VECTORS = "rag.vectors"
ACL = "rag.acl"
DSR = "rag.dsr"
DSR_ERASED = "rag.dsr.erased"
AUDIT = "rag.audit"
AUDIT_EVENTS = "rag.audit.events"
SELFTEST = "rag.selftest"

#: Stages that dead-letter; ``rag.dlq.<stage>`` exists for each.
STAGES = ("ingest", "normalize", "compliance", "chunk", "embed", "index", "graph", "dsr", "audit")
#: Stages whose input is raw (not yet redacted) content. ``ingest`` is the producers' own:
#: a source item that could not be read (a corrupt PDF), keyed by doc_id.
RAW_STAGES = frozenset({"ingest", "normalize", "compliance"})


def dlq_topic(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return f"rag.dlq.{stage}"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    contract: type[Contract] | None
    description: str
    key: str = "doc_id"
    replication_factor: int = 1


def catalog(settings: "Settings") -> tuple[TopicSpec, ...]:
    p = settings.partitions
    rf = settings.replication_factor
    raw_ms = str(int(settings.raw_retention_days * DAY_MS))
    lag_ms = str(int(settings.compaction_lag_hours * 3600 * 1000))
    derived = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
    compacted = {
        "cleanup.policy": "compact",
        "max.compaction.lag.ms": lag_ms,
        "segment.ms": lag_ms,
        "delete.retention.ms": str(DAY_MS),
        "min.cleanable.dirty.ratio": "0.1",
    }
    specs = [
        TopicSpec(CHANGES, p, {"cleanup.policy": "delete", "retention.ms": raw_ms}, ChangeEvent,
                  "normalized change events from every producer; raw content, short retention"),
        TopicSpec(DOCUMENTS, p, dict(compacted), DocumentRecord,
                  "latest compliant (redacted) version of every document; the replay source"),
        TopicSpec(CHUNKS, p, dict(derived), ChunkSet, "all chunks of one document version per message"),
        TopicSpec(VECTORS, p, dict(derived), VectorSet, "chunks with their vectors, per document version"),
        TopicSpec(ACL, p, dict(compacted), AclChange, "permission-only changes, applied without re-embedding"),
        # CCPA: request records are kept 24 months.
        TopicSpec(DSR, 1, {"cleanup.policy": "delete", "retention.ms": str(731 * DAY_MS)}, DsrRequest,
                  "data-subject requests (access, erasure, rectification, portability); pseudonyms only",
                  key="request_id"),
        TopicSpec(DSR_ERASED, 1, {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.5"}, ErasedSubject,
                  "erased subjects (pseudonymous refs): the suppression list compliance reads", key="ref"),
        TopicSpec(AUDIT, 1, {"cleanup.policy": "delete", "retention.ms": str(2557 * DAY_MS)}, AuditRecord,
                  "append-only, hash-chained audit log; one partition", key="seq"),
        TopicSpec(AUDIT_EVENTS, 1, {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)}, AuditEvent,
                  "audit events from every stage and admin action, before the writer chains them", key="event_id"),
        TopicSpec(SELFTEST, p, {"cleanup.policy": "delete", "retention.ms": str(3600 * 1000)}, ChangeEvent,
                  "round trips of `ragstream check`; synthetic events, kept one hour"),
    ]
    for stage in STAGES:
        retention = raw_ms if stage in RAW_STAGES else str(30 * DAY_MS)
        specs.append(TopicSpec(dlq_topic(stage), p, {"cleanup.policy": "delete", "retention.ms": retention},
                               None, f"dead letters of the {stage} stage: original payload, reason in headers"))
    # Every message ragstream writes fits (larger payloads go by claim check); the headroom
    # covers key, headers and the record batch's own overhead.
    max_bytes = str(settings.max_message_bytes + MESSAGE_HEADROOM)
    return tuple(replace(s, replication_factor=rf, config={**s.config, "max.message.bytes": max_bytes})
                 for s in specs)

