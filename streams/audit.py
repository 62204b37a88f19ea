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

The audit worker also verifies the chain as it grows (:class:`ChainVerifier`, every
:data:`VERIFY_EVERY_S`), for the metrics and alerts of docs/operations.md.

Delivery is at least once: an event re-delivered after a crash is chained again under the
same ``event_id``; ``verify`` counts such repeats but they do not break the chain.

**One writer, fenced.** Appending is a Kafka transaction of a producer with the fixed
``transactional.id`` :data:`WRITER_ID` (:class:`ChainWriter`). A worker becomes the writer
lazily, when it first has an event to chain (i.e. when it holds ``rag.audit.events``' one
partition): ``init_transactions`` fences any earlier writer and aborts its open
transaction, and only then is the chain's committed tail read. A writer that was fenced
(a standby took over during a rebalance, a second worker was started) cannot commit
another record: its next commit fails, and the worker exits without acknowledging
(:class:`WriterFenced`); restarted, it would again read the tail first. So two writers
started at once, or a stale standby, never fork the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import rfc8785

from ragstream.failures import Transient
from ragstream.metrics import AUDIT_RECORDS
from schemas import topics
from schemas.events import AuditEvent, AuditRecord
from schemas.serde import encode
from streams.stages import Output

CHECKPOINT_EVERY = 100
#: How often the audit worker verifies what was appended to the chain (:class:`ChainVerifier`).
VERIFY_EVERY_S = 60.0
#: The audit chain's one writer identity: a producer initialising it fences the previous one.
WRITER_ID = "ragstream-audit-chain-writer"


class WriterFenced(BaseException):
    """Another worker became the chain's writer: this one must stop at once, acknowledging
    nothing (a BaseException, so no handler of ordinary failures dead-letters the event)."""


class ChainWriter:
    """Appends records to ``rag.audit`` in transactions of the fenced writer identity."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._producer: Any = None

    def start(self) -> "AuditRecord | None":
        """Become the writer (fencing the previous one), then read the committed tail."""
        from confluent_kafka import KafkaException, Producer

        from ragstream.kafka import client_config

        producer = Producer(client_config(self.settings, **{
            "transactional.id": WRITER_ID, "enable.idempotence": True, "acks": "all",
            "compression.type": "zstd", "transaction.timeout.ms": 60_000}))
        try:
            producer.init_transactions(60)
        except KafkaException as exc:
            raise Transient(f"cannot become the audit chain's writer: {exc.args[0].str()}") from None
        self._producer = producer
        return tail(self.settings)

    @property
    def started(self) -> bool:
        return self._producer is not None

    def append(self, record: AuditRecord) -> None:
        from confluent_kafka import KafkaException

        p = self._producer
        try:
            p.begin_transaction()
            p.produce(topics.AUDIT, key=str(record.seq).encode(), value=encode(record))
            p.commit_transaction(60)
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal() or err.name() in ("_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"):
                raise WriterFenced(f"the audit chain has another writer now: {err.str()}") from None
            if err.txn_requires_abort():
                try:
                    p.abort_transaction(60)
                except KafkaException:
                    self._producer = None  # start over: fence, re-read the tail
            else:
                self._producer = None
            raise Transient(f"audit record seq {record.seq} not committed: {err.str()}") from None


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


class ChainVerifier:
    """The audit worker's own watch on the chain, as it grows (the metrics
    ``ragstream_audit_chain_*`` and the alert ``RagstreamAuditChainBroken``).

    Each :meth:`step` reads what was appended since the previous one (from the Kafka offset it
    stopped at; ``max_records`` at a time, for at most ``step_s`` seconds, so the writer, which
    shares the stage's thread, is never held up for long) and checks what ``ragstream audit
    verify`` checks: consecutive ``seq``, ``prev_hash`` links, each record's own hash, and
    every signed checkpoint against the hash it vouches for. A record that cannot be read or
    canonicalized is a break, never skipped. Once the end is reached, a signed checkpoint
    beyond it means records were removed. The hashes of the last ``keep_hashes`` records are
    kept for checkpoints written after the verifier passed their record. A break is reported
    once, logged with its position, and sticks until the worker restarts (the first steps
    after a start walk the whole chain again). A chain whose oldest records were removed by
    retention is verified from its first kept record."""

    def __init__(self, settings: Any, checkpoints: Checkpoints, *, max_records: int = 20_000,
                 keep_hashes: int = 50_000, step_s: float = 10.0) -> None:
        from ragstream.metrics import AUDIT_CHAIN_VERIFIED_AT

        self.settings, self.checkpoints = settings, checkpoints
        self.max_records, self.keep_hashes, self.step_s = max_records, max(keep_hashes, max_records), step_s
        self.offset: int | None = None  # next Kafka offset to read
        self.seq, self.prev = 0, None  # the next record's expected seq and prev_hash
        self.recent: dict[int, str] = {}  # seq → hash of the last ``keep_hashes`` records
        self.checked: set[int] = set()  # checkpoint seqs already matched
        self.problem: str | None = None
        # Until the first walk reaches the end, "last verified" is the start of the watch: the
        # alert for a chain not verified within an hour counts from here.
        AUDIT_CHAIN_VERIFIED_AT.set(time.time())

    def step(self) -> Verdict:
        """Verify what was appended since the last step; return the verdict so far."""
        from ragstream.logging import get_logger
        from ragstream.metrics import AUDIT_CHAIN_BROKEN, AUDIT_CHAIN_VERIFIED, AUDIT_CHAIN_VERIFIED_AT

        if self.problem is None:
            deadline = time.monotonic() + self.step_s
            at_end = self._read()
            while self.problem is None and not at_end and time.monotonic() < deadline:
                self._checkpoints()
                at_end = self.problem is None and self._read()
            if self.problem is None:
                self._checkpoints(at_end=at_end)
            if self.problem is not None:
                AUDIT_CHAIN_BROKEN.set(1)
                get_logger(__name__).critical("the audit chain is broken", seq=self.seq, problem=self.problem)
            elif at_end:
                AUDIT_CHAIN_VERIFIED_AT.set(time.time())
        AUDIT_CHAIN_VERIFIED.set(self.seq)
        return Verdict(records=self.seq, seq=self.seq if self.problem else None, problem=self.problem,
                       last_hash=self.prev, checkpoints_checked=len(self.checked))

    def _high(self) -> tuple[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        from ragstream.kafka import client_config

        consumer = Consumer(client_config(self.settings, **{"group.id": "ragstream-audit-reader",
                                                            "enable.auto.commit": False}))
        try:
            return consumer.get_watermark_offsets(TopicPartition(topics.AUDIT, 0), timeout=30)
        finally:
            consumer.close()

    def _read(self) -> bool:
        """Read and check up to ``max_records`` new records; True when the end was reached."""
        from confluent_kafka import Consumer, TopicPartition

        from ragstream.kafka import client_config
        from schemas.serde import decode

        consumer = Consumer(client_config(self.settings, **{
            "group.id": "ragstream-audit-reader", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed"}))
        tp = TopicPartition(topics.AUDIT, 0)
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=30)
            if self.offset is not None and self.offset > high:
                self.problem = (f"rag.audit ends at offset {high} but {self.offset} offsets were verified: "
                                "records were removed or the topic was recreated")
                return False
            first = self.offset is None
            start = low if first else max(self.offset, low)
            if start >= high:
                self.offset = start
                return True
            consumer.assign([TopicPartition(topics.AUDIT, 0, start)])
            read, deadline = 0, time.monotonic() + 30
            while read < self.max_records:
                msg = consumer.poll(0.5)
                if msg is None:
                    if consumer.position([tp])[0].offset >= high:
                        break  # only transaction markers (or nothing) up to the end
                    if time.monotonic() > deadline:
                        raise Transient(f"reading {topics.AUDIT}: stuck before offset {high}")
                    continue
                if msg.error():
                    raise Transient(f"reading {topics.AUDIT}: {msg.error()}")
                deadline = time.monotonic() + 30
                read += 1
                try:
                    f = _fields(decode(AuditRecord, msg.value()))
                    digest = record_hash(f)
                except Exception as exc:  # noqa: BLE001 - unreadable or not canonicalizable: a break, never skipped
                    self.problem = f"offset {msg.offset()} is not a verifiable audit record: {exc}"
                    return False
                if first and low > 0 and self.seq == 0 and self.prev is None:
                    # Retention removed the oldest records: verify from the first one kept.
                    self.seq, self.prev = f.get("seq"), f.get("prev_hash")
                first = False
                if f.get("seq") != self.seq:
                    self.problem = (f"expected seq {self.seq}, found {f.get('seq')}: a record was removed, inserted "
                                    "or reordered")
                elif f.get("prev_hash") != self.prev:
                    self.problem = "prev_hash does not match the previous record's hash: the chain was cut or spliced here"
                elif digest != f.get("hash"):
                    self.problem = "the hash does not match the record's content: this record was altered"
                if self.problem is not None:
                    return False
                self.offset = msg.offset() + 1  # only past a record that passed
                self.seq, self.prev = self.seq + 1, f["hash"]
                self.recent[f["seq"]] = f["hash"]
                if len(self.recent) > self.keep_hashes:
                    self.recent.pop(next(iter(self.recent)))
                if msg.offset() >= high - 1:
                    break
            position = consumer.position([tp])[0].offset
            if read == 0 or msg is None:  # the rest up to ``high`` were markers
                self.offset = max(self.offset or start, position)
            return (self.offset or start) >= high
        finally:
            consumer.close()

    def _checkpoints(self, at_end: bool = False) -> None:
        """Match the signed checkpoints against the hashes read. At the end of the chain, a
        valid checkpoint beyond it means records were removed: checked only when the topic
        still ends where the verifier stopped after the checkpoints were read (a checkpoint
        vouches for a record committed before it was written)."""
        pending: list[int] = []
        for cp in self.checkpoints.read():
            seq = int(cp["seq"])
            if seq in self.checked:
                continue
            if not self.checkpoints.valid(cp):
                self.problem = f"checkpoint for seq {seq} has a bad signature: the checkpoint file was edited"
            elif seq < self.seq and seq in self.recent and self.recent[seq] != cp["hash"]:
                self.problem = f"record seq {seq} differs from its signed checkpoint: the chain was rewritten"
            if self.problem is not None:
                return
            if seq in self.recent and seq < self.seq:
                self.checked.add(seq)
            elif seq >= self.seq:
                pending.append(seq)
        if at_end and pending and self.offset is not None and self._high()[1] <= self.offset:
            self.problem = (f"a signed checkpoint vouches for seq {max(pending)} but the chain ends at seq "
                            f"{self.seq - 1}: records were removed")


class AuditStage:
    """rag.audit.events → rag.audit: the single, fenced writer of the chain.

    With a :class:`ChainWriter` (the worker's case) records are appended in its transactions
    and ``process`` returns nothing to publish; without one (unit tests) the records are
    returned as outputs, chained from ``tail``."""

    name = "audit"
    input_topic = topics.AUDIT_EVENTS
    contract = AuditEvent

    def __init__(self, tail: AuditRecord | None, checkpoints: Checkpoints, writer: ChainWriter | None = None,
                 verifier: ChainVerifier | None = None) -> None:
        self._restart(tail)
        self.checkpoints = checkpoints
        self.unchecked = 0
        self.writer = writer
        self.verifier = verifier

    def _restart(self, tail: AuditRecord | None) -> None:
        self.seq = tail.seq + 1 if tail else 0
        self.prev = tail.hash if tail else None

    def process(self, event: AuditEvent) -> list[Output]:
        if self.writer is not None and not self.writer.started:
            self._restart(self.writer.start())  # fence the previous writer, then read the committed tail
        record = chain(event, self.seq, self.prev)
        if self.writer is not None:
            self.writer.append(record)  # raises before anything below if not committed
        self.seq, self.prev = self.seq + 1, record.hash
        self.unchecked += 1
        AUDIT_RECORDS.labels(event.action).inc()
        return [] if self.writer is not None else [Output(topics.AUDIT, str(record.seq), encode(record))]

    def after_publish(self, _event: Any = None) -> None:
        self.committed()

    def timers(self) -> list[tuple[float, Any]]:
        timers: list[tuple[float, Any]] = [(5.0, self.checkpoint)]  # only acknowledged records are vouched for
        if self.verifier is not None:
            timers.append((VERIFY_EVERY_S, self.verify_chain))
        return timers

    def verify_chain(self) -> None:
        """A timer's work: verify what was appended since the last time (nothing to publish)."""
        if self.verifier is not None:
            self.verifier.step()

    def committed(self) -> None:
        """Called after the records are acknowledged: checkpoint now and then."""
        if self.unchecked >= CHECKPOINT_EVERY:
            self.checkpoint()

    def checkpoint(self) -> None:
        if self.unchecked and self.prev is not None:
            self.checkpoints.write(self.seq - 1, self.prev)
            self.unchecked = 0


def read_chain(settings: Any, timeout: float = 30, last_only: bool = False) -> Iterator[AuditRecord]:
    """Every committed record of ``rag.audit`` from offset 0, in order (or only the last one).

    The topic is written in transactions, so offsets also hold commit markers and aborted
    records (never delivered with ``read_committed``): the end is found by the consumer's
    position, not by counting records."""
    from confluent_kafka import Consumer, TopicPartition

    from ragstream.kafka import client_config
    from schemas.serde import decode

    consumer = Consumer(client_config(settings, **{"group.id": "ragstream-audit-reader", "enable.auto.commit": False,
                                                   "auto.offset.reset": "earliest",
                                                   "isolation.level": "read_committed"}))
    tp = TopicPartition(topics.AUDIT, 0)
    try:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        if high <= low:
            return
        window = 64
        while True:
            start = max(low, high - window) if last_only else low
            consumer.assign([TopicPartition(topics.AUDIT, 0, start)])
            last: AuditRecord | None = None
            deadline = time.monotonic() + timeout
            while True:
                msg = consumer.poll(0.5)
                if msg is None:
                    position = consumer.position([tp])[0].offset
                    if position >= high:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"reading {topics.AUDIT}: stuck at offset {position} of {high} "
                                           f"for {timeout} s")
                    continue
                if msg.error():
                    raise RuntimeError(f"reading {topics.AUDIT}: {msg.error()}")
                deadline = time.monotonic() + timeout
                record = decode(AuditRecord, msg.value())
                if last_only:
                    last = record
                else:
                    yield record
                if msg.offset() >= high - 1:
                    break
            if not last_only:
                return
            if last is not None or start == low:
                if last is not None:
                    yield last
                return
            window *= 4  # only markers and aborted records in the window: look further back
    finally:
        consumer.close()


def tail(settings: Any) -> AuditRecord | None:
    return next(iter(read_chain(settings, last_only=True)), None)
