"""The tamper-evident audit chain.

Everything that must be auditable (compliance decisions, blocks, erasures, retention
deletes, admin actions, denials) is published as an :class:`AuditEvent` to
``rag.audit.events``. One writer — the ``audit`` stage, whose input has one partition, so a
consumer group never has two — turns each event into an :class:`AuditRecord` on
``rag.audit`` (one partition, kept seven years): sequence number, the previous record's
hash, and its own hash, sha256 over the RFC 8785 canonical JSON of every other field.

``ragstream audit verify`` walks the chain from offset 0 and reports the first break: a
record whose hash does not match its content (altered), whose ``prev_hash`` is not the
previous record's hash (removed, reordered or inserted), or whose ``seq`` skips.

The writer also appends a checkpoint (seq, hash, HMAC-SHA256 with a key kept outside Kafka,
``<home>/keys/audit-checkpoint.key``) to ``<home>/audit/checkpoints.jsonl`` every
``CHECKPOINT_EVERY`` records and whenever it goes idle. A writer with full access to Kafka
could recompute a whole chain; it cannot forge a checkpoint, so ``verify`` catches that too.

Delivery is at least once: an event re-delivered after a crash is chained again under the
same ``event_id``; ``verify`` counts such repeats but they do not break the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import rfc8785

from ragstream.metrics import AUDIT_RECORDS
from schemas import topics
from schemas.events import AuditEvent, AuditRecord
from schemas.serde import encode
from streams.stages import Output

CHECKPOINT_EVERY = 100


def record_hash(fields: dict[str, Any]) -> str:
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def _json_safe(value: Any) -> Any:
    """RFC 8785 numbers are IEEE doubles: integers past 2**53 (nanosecond versions) become strings."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def chain(event: AuditEvent, seq: int, prev_hash: str | None) -> AuditRecord:
    draft = AuditRecord(seq=seq, event_id=event.event_id, prev_hash=prev_hash, hash="0" * 64, at=event.at,
                        actor=event.actor, action=event.action, target=event.target,
                        details=_json_safe(json.loads(json.dumps(event.details, default=str))))
    # Hash exactly what travels: the record's own JSON serialization, canonicalized.
    return draft.model_copy(update={"hash": record_hash(_fields(draft))})


def _fields(record: AuditRecord | dict[str, Any]) -> dict[str, Any]:
    if isinstance(record, AuditRecord):
        record = json.loads(record.model_dump_json())
    return record


class Checkpoints:
    def __init__(self, home: Path) -> None:
        self.path = home / "audit" / "checkpoints.jsonl"
        self.key_path = home / "keys" / "audit-checkpoint.key"

    def key(self) -> bytes:
        if not self.key_path.exists():
            self.key_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        return self.key_path.read_bytes()

    def _mac(self, seq: int, digest: str) -> str:
        return hmac.new(self.key(), f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()

    def write(self, seq: int, digest: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"seq": seq, "hash": digest, "mac": self._mac(seq, digest)}) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def valid(self, cp: dict[str, Any]) -> bool:
        return hmac.compare_digest(cp.get("mac", ""), self._mac(int(cp["seq"]), str(cp["hash"])))


@dataclass
class Verdict:
    records: int = 0
    repeats: int = 0
    checkpoints_checked: int = 0
    break_at: int | None = None  # position in the chain (0-based)
    seq: int | None = None
    problem: str | None = None
    last_hash: str | None = None
    actions: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(records: Iterable[AuditRecord | dict[str, Any]], checkpoints: Checkpoints | None = None) -> Verdict:
    v = Verdict()
    prev: str | None = None
    seen: set[str] = set()
    by_seq: dict[int, str] = {}
    for pos, rec in enumerate(records):
        f = _fields(rec)
        seq = f.get("seq")
        v.records += 1
        def fail(problem: str) -> Verdict:
            v.break_at, v.seq, v.problem = pos, seq, problem
            return v
        if seq != pos:
            return fail(f"expected seq {pos}, found {seq}: a record was removed, inserted or reordered")
        if f.get("prev_hash") != prev:
            return fail("prev_hash does not match the previous record's hash: the chain was cut or spliced here")
        if record_hash(f) != f.get("hash"):
            return fail("the hash does not match the record's content: this record was altered")
        prev = f["hash"]
        by_seq[seq] = prev
        v.actions[f["action"]] = v.actions.get(f["action"], 0) + 1
        if f["event_id"] in seen:
            v.repeats += 1
        seen.add(f["event_id"])
    v.last_hash = prev
    if checkpoints is not None:
        for cp in checkpoints.read():
            if not checkpoints.valid(cp):
                v.problem = f"checkpoint for seq {cp.get('seq')} has a bad signature: the checkpoint file was edited"
                v.seq = cp.get("seq")
                return v
            seq = int(cp["seq"])
            if seq >= v.records:
                v.problem = (f"a signed checkpoint vouches for seq {seq} but the chain ends at {v.records - 1}: "
                             "records were removed")
                v.seq = seq
                return v
            if by_seq[seq] != cp["hash"]:
                v.problem = (f"record seq {seq} differs from its signed checkpoint: "
                             "the chain was rewritten from here or earlier")
                v.seq = seq
                return v
            v.checkpoints_checked += 1
    return v


class AuditStage:
    """rag.audit.events → rag.audit: the single writer of the chain."""

    name = "audit"
    input_topic = topics.AUDIT_EVENTS
    contract = AuditEvent

    def __init__(self, tail: AuditRecord | None, checkpoints: Checkpoints) -> None:
        self.seq = tail.seq + 1 if tail else 0
        self.prev = tail.hash if tail else None
        self.checkpoints = checkpoints
        self.unchecked = 0

    def process(self, event: AuditEvent) -> list[Output]:
        record = chain(event, self.seq, self.prev)
        self.seq, self.prev = self.seq + 1, record.hash
        self.unchecked += 1
        AUDIT_RECORDS.labels(event.action).inc()
        return [Output(topics.AUDIT, str(record.seq), encode(record))]

    def committed(self) -> None:
        """Called after the records are acknowledged: checkpoint now and then."""
        if self.unchecked >= CHECKPOINT_EVERY:
            self.checkpoint()

    def checkpoint(self) -> None:
        if self.unchecked and self.prev is not None:
            self.checkpoints.write(self.seq - 1, self.prev)
            self.unchecked = 0


def read_chain(settings: Any, timeout: float = 30, last_only: bool = False) -> Iterator[AuditRecord]:
    """Every record of ``rag.audit`` from offset 0, in order (or only the last one)."""
    from confluent_kafka import Consumer, TopicPartition

    from ragstream.kafka import client_config
    from schemas.serde import decode

    consumer = Consumer(client_config(settings, **{"group.id": "ragstream-audit-reader", "enable.auto.commit": False,
                                                   "auto.offset.reset": "earliest"}))
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topics.AUDIT, 0), timeout=timeout)
        if high <= low:
            return
        offset = high - 1 if last_only else low
        consumer.assign([TopicPartition(topics.AUDIT, 0, offset)])
        while offset < high:
            msg = consumer.poll(timeout)
            if msg is None:
                raise TimeoutError(f"no audit record arrived within {timeout} s (at offset {offset} of {high})")
            if msg.error():
                raise RuntimeError(f"reading {topics.AUDIT}: {msg.error()}")
            offset = msg.offset() + 1
            yield decode(AuditRecord, msg.value())
    finally:
        consumer.close()


def tail(settings: Any) -> AuditRecord | None:
    return next(iter(read_chain(settings, last_only=True)), None)
