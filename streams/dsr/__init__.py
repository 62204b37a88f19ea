"""Data-subject requests (GDPR Art. 15-20, CCPA) and retention: the ``dsr`` worker.

Requests arrive on ``rag.dsr`` (one partition, keyed by request id) from ``ragstream dsr``.
They name the subject only by pseudonymous refs (``person:<hmac>``, the same refs the
compliance stage records in ``DocumentRecord.subject_refs`` and Milvus' ``subjects``
field), so no raw identifier travels through Kafka. Every request ends in a receipt, an
``AuditEvent`` ``dsr.<kind>.completed`` chained into ``rag.audit``, with per-store counts,
the deadline (GDPR one month, CCPA 45 days) and whether it was met.

Erasure, in order (each step is idempotent, so a redelivered request is harmless):

1. the refs go on ``rag.dsr.erased`` (compacted, the suppression list): every compliance
   worker reads it and redacts these subjects in every later version of every document;
2. wait until compliance has consumed ``rag.changes``: anything it published before it saw
   the list is now on ``rag.documents``;
3. every latest document on ``rag.documents`` that references the subject is re-published
   with a higher version and the subject removed from text and title (an allowed value
   becomes ``[PERSON]``, a pseudonym token ``[PERSON:ab12…]`` too). Under a legal hold or
   SOX the document is *restricted* instead: dropped from the index (a delete record and a
   tombstone), kept at its source. Old redacted blobs are deleted;
4. wait until chunk, embed and index have applied that: Milvus rows of the old versions
   are gone (Strong-consistency query);
5. ``rag.chunks`` and ``rag.vectors`` (derived, replayable from ``rag.documents``) are
   truncated up to the offsets their consumers committed (Kafka ``DeleteRecords``);
6. old values on the compacted ``rag.documents`` disappear by compaction: the topic rolls
   its segments after ``segment.ms`` (= ``max.compaction.lag.ms``) — when nothing else is
   written, the worker appends a tombstone per partition so the roll happens — and the
   cleaner removes the superseded values. The worker re-reads every downstream topic from
   its first offset until the subject is found nowhere, or ``erasure_verify_timeout_s``
   passes (then the receipt says ``verified: false`` and what remains).

``rag.changes`` holds raw content for ``raw_retention_days`` and forgets it by retention;
the receipt gives that date. Rectification re-reads the subject's documents from their
source (file-system sources; others are listed as pending). Access and portability write
a JSON export (mode 0600) under ``<home>/dsr/`` and record its sha256.

Retention: every ``retention_sweep_s`` the worker asks Milvus for rows whose
``retain_until`` has passed and publishes a delete for each such document (not under a
legal hold), with a ``retention.delete`` audit record.

    filing.py         filing requests and reading receipts (the API and CLI side)
    stage.py          DsrStage: one request at a time, dispatched by kind
    access.py         access and portability (Art. 15, 20)
    rectification.py  rectification (Art. 16), through the connector contract
    erasure.py        erasure (Art. 17) and the erased-subjects list
    retention.py      the retention sweep
"""

from streams.dsr.erasure import DERIVED, DOWNSTREAM, ErasedSubjects
from streams.dsr.filing import IDENTIFIERS, UnknownTenant, receipts, requests, subject_refs_for, submit, wait_receipt
from streams.dsr.stage import DsrStage, latest_documents

__all__ = ["DERIVED", "DOWNSTREAM", "DsrStage", "ErasedSubjects", "IDENTIFIERS", "UnknownTenant", "latest_documents",
           "receipts", "requests", "subject_refs_for", "submit", "wait_receipt"]
