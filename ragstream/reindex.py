"""Reindexing: replay a topic into a new Milvus collection, then move the alias (blue-green).

``ragstream reindex`` (docs/operations.md, "Reindexing"):

1. A new collection ``<alias>_<seconds>`` is created next to the one behind the alias
   (``RAGSTREAM_COLLECTION``); searches keep reading the current one.
2. A :class:`Replayer` — in this process, under its own consumer group
   ``ragstream-reindex-<collection>`` — reads the compacted ``rag.documents`` (or
   ``rag.chunks``, ``--from chunks``) from the start, and ``rag.acl``, and applies them with
   the new settings: chunk (with the new chunker), embed (the new model), index — the
   stages' own logic, called inline. It keeps following both topics after it caught up, so
   an edit made during the reindex reaches the new collection like any other.
3. When the group's lag is 0 and ``verify`` finds no drift in the new collection (with the
   new settings' chunk ids), the alias is moved in one Milvus call (``alter_alias``): a
   search reads the old collection or the new one, never neither.
4. Handover (the local stack): the live workers downstream of the replayed topic are
   drained into the old collection, stopped, and started again with the new settings;
   a writer pins the collection it resolved at start (:meth:`MilvusIndex.ensure`), so the
   restarted ones write the new collection, continuing from their own committed offsets.
   The replayer follows the topic until they run, then stops. The dsr worker (it queries
   and erases through the index) is restarted too, and the API when the model changed (its
   query vectors must come from the new model).

Why the replay runs inline rather than as a second set of stage workers: the stage topics
between the workers (``rag.chunks``, ``rag.vectors``) are shared. A second chunk worker would
publish its chunk sets to ``rag.chunks``, where the live embed and index workers would read
them too (and the new ones the live ones'); both collections would end up with a mixture of
chunk sizes decided by which copy of a version arrived first. Inline, nothing the reindex
makes crosses Kafka; the price is that the replay is one process (embedding dominates; it
can be scaled by reindexing per partition range later, not needed yet).

``--rollback`` moves the alias back to the collection it pointed at before the last swap:
the edits made since that swap are replayed into it first (from ``rag.documents`` by time,
as ``--since`` does), then the alias moves and the live workers get that collection's
settings back. ``--gc`` drops the alias's collections the alias does not point at.
``--since TIME`` replays ``rag.documents`` (and ``rag.acl``) from TIME to now into the
current collection with the current settings (repair; the version guards make it harmless).

Each collection's settings (chunker, model) are recorded in ``<home>/index/collections.json``,
with the alias's history, so ``--rollback`` knows what to restore.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from ragstream.logging import get_logger
from ragstream.settings import Settings
from schemas import topics

log = get_logger(__name__)

#: The settings that decide what a collection's rows are (a collection has one of each).
PROFILE_FIELDS = ("chunk_max_tokens", "chunk_overlap_tokens", "embed_backend", "embed_model", "embed_url")

#: The live workers downstream of each replayable topic (in pipeline order), and the ones
#: that hold the index otherwise.
DOWNSTREAM = {topics.DOCUMENTS: ("chunk", "embed", "index"), topics.CHUNKS: ("embed", "index")}
INDEX_HOLDERS = ("dsr",)


class ReindexError(RuntimeError):
    """A reindex that cannot go on; the message says what to do. The alias is unchanged."""


# ----------------------------------------------------------------------- profiles and history
def profile_of(settings: Settings) -> dict[str, Any]:
    return {f: getattr(settings, f) for f in PROFILE_FIELDS}


def with_profile(settings: Settings, profile: dict[str, Any]) -> Settings:
    """``settings`` with a collection's chunker and model; checked like the settings are."""
    s = settings.model_copy(update={k: v for k, v in profile.items() if k in PROFILE_FIELDS})
    if s.chunk_overlap_tokens * 2 >= s.chunk_max_tokens:
        raise ReindexError(f"chunk overlap {s.chunk_overlap_tokens} must be under half of the chunk size "
                           f"{s.chunk_max_tokens}; give --chunk-overlap too")
    if s.embed_backend == "openai" and not (s.embed_url and s.embed_model):
        raise ReindexError("a remote model needs RAGSTREAM_EMBED_URL (the endpoint serving it)")
    return s


class Catalog:
    """``<home>/index/collections.json``: each collection's profile and the alias's moves."""

    def __init__(self, settings: Settings) -> None:
        self.path: Path = settings.home / "index" / "collections.json"
        self.data: dict[str, Any] = {"collections": {}, "swaps": []}
        if self.path.exists():
            self.data = json.loads(self.path.read_text(encoding="utf-8"))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)

    def profile(self, name: str) -> dict[str, Any] | None:
        return self.data["collections"].get(name, {}).get("profile")

    def record(self, name: str, profile: dict[str, Any], origin: str) -> None:
        self.data["collections"].setdefault(name, {"profile": profile, "origin": origin,
                                                   "created": datetime.now(timezone.utc).isoformat()})

    def swapped(self, alias: str, before: str | None, after: str) -> None:
        self.data["swaps"].append({"alias": alias, "from": before, "to": after, "at_ms": int(time.time() * 1000)})

    def last_swap(self, alias: str) -> dict[str, Any] | None:
        return next((s for s in reversed(self.data["swaps"]) if s["alias"] == alias), None)

    def forget(self, name: str) -> None:
        self.data["collections"].pop(name, None)


# ------------------------------------------------------------------------------- the replayer
@dataclass
class ReplayStats:
    documents: int = 0
    acl_changes: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)


class Replayer:
    """Consume ``topic`` and ``rag.acl`` under ``group`` and apply them to collection
    ``target`` with ``settings``' chunker and model, in a thread of this process.

    ``start``: offsets per partition of ``topic`` to begin at (``--since``, rollback);
    otherwise the group's committed offsets, or the start of the topic. ``until_end``: stop
    once the ends as of the start are reached (a repair); otherwise keep following.
    """

    BATCH = 64

    def __init__(self, settings: Settings, target: str, topic: str, group: str, *,
                 start: dict[int, int] | None = None, acl_start: dict[int, int] | None = None,
                 until_end: bool = False) -> None:
        from consumers.milvus import MilvusIndex
        from ragstream.blobs import BlobStore
        from ragstream.consumer import blob_claims
        from streams.chunking import Chunker
        from streams.embedding import make_embedder, token_counter
        from streams.stages import ChunkStage, EmbedStage, IndexStage

        if topic not in DOWNSTREAM:
            raise ReindexError(f"cannot replay {topic}; replayable: {', '.join(DOWNSTREAM)}")
        self.settings, self.target, self.topic, self.group = settings, target, topic, group
        self.start, self.acl_start, self.until_end = start, acl_start, until_end
        self.embedder = make_embedder(settings)
        self.index = MilvusIndex(settings.resolved_milvus_uri, settings.collection, self.embedder.dim,
                                 collection=target)
        self.index.ensure()
        self.chunk = ChunkStage(Chunker(count=token_counter(settings), max_tokens=settings.chunk_max_tokens,
                                        overlap_tokens=settings.chunk_overlap_tokens), BlobStore(settings.blob_dir))
        self.embed = EmbedStage(self.embedder, self.index)
        self.apply = IndexStage(self.index)
        self.claims = blob_claims(settings)
        self.stats = ReplayStats()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._done: dict[tuple[str, int], int] = {}   # next offset to process, per partition
        self._first: dict[tuple[str, int], int] = {}  # where this run began, per partition
        self._ends: dict[tuple[str, int], int] = {}   # high watermarks, refreshed by progress()
        self._assigned = threading.Event()
        self._reader: Any = None
        self._thread = threading.Thread(target=self._run, name=f"replay-{target}", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------
    def begin(self) -> "Replayer":
        self._thread.start()
        return self

    def end(self, timeout: float = 60) -> None:
        self.stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        from ragstream.consumer import make_consumer

        # A batch (chunking and embedding up to BATCH messages) can take minutes on a busy
        # machine: a poll interval longer than Kafka's 5-minute default keeps the member.
        consumer = make_consumer(self.settings, self.group, **{"enable.partition.eof": True,
                                                               "enable.auto.commit": False,
                                                               "max.poll.interval.ms": 1_800_000})
        try:
            topics_ = [self.topic, topics.ACL]
            if self.start is not None:
                parts = [TopicPartition(self.topic, p, o) for p, o in sorted(self.start.items())]
                parts += [TopicPartition(topics.ACL, p, o) for p, o in sorted((self.acl_start or {}).items())]
                consumer.assign(parts)
                for tp in parts:
                    self._done[(tp.topic, tp.partition)] = tp.offset
                    self._first[(tp.topic, tp.partition)] = tp.offset
                self._assigned.set()
            else:
                def assigned(c: Any, parts: list[Any]) -> None:
                    for tp in c.committed(parts, timeout=30):
                        key = (tp.topic, tp.partition)
                        if tp.offset < 0:
                            tp.offset = c.get_watermark_offsets(tp, timeout=30)[0]
                        self._done.setdefault(key, tp.offset)
                        self._first.setdefault(key, tp.offset)
                    self._assigned.set()

                consumer.subscribe(topics_, on_assign=assigned)
            while not self.stop.is_set():
                msgs = consumer.consume(self.BATCH, timeout=0.5)
                todo = []
                for m in msgs:
                    if m.error() is None:
                        todo.append(m)
                    elif m.error().code() == KafkaError._PARTITION_EOF:
                        self._done[(m.topic(), m.partition())] = max(self._done.get((m.topic(), m.partition()), 0),
                                                                     m.offset())
                    elif m.error().fatal():
                        raise RuntimeError(f"Kafka: {m.error().str()}")
                if todo:
                    self._apply(todo)
                    for m in todo:
                        self._done[(m.topic(), m.partition())] = m.offset() + 1
                if todo or msgs:
                    try:
                        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in self._done.items()],
                                        asynchronous=False)
                    except KafkaException as exc:
                        # The group moved on (a rebalance, the member timed out): the consumer
                        # rejoins on its next poll and what it reads again is applied again,
                        # idempotently (the version guard). Anything else ends the replay.
                        if exc.args[0].code() not in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
                                                      KafkaError.ILLEGAL_GENERATION):
                            raise
                        log.warning("replay commit refused; rejoining", error=exc.args[0].str())
                if self.until_end and self._ends and self._caught_up():
                    break
        except BaseException as exc:  # noqa: BLE001 - reported to the orchestrator, which stops
            self.error = exc
            log.error("replay failed", target=self.target, error=f"{type(exc).__name__}: {exc}")
        finally:
            consumer.close()

    # -- applying --------------------------------------------------------------------------
    def _apply(self, msgs: list[Any]) -> None:
        from ragstream.failures import Kind, classify
        from schemas.events import AclChange, ChunkSet, DocumentRecord, VectorSet
        from schemas.serde import decode
        from streams.stages import Permanent

        sets: list[Any] = []
        acls: list[Any] = []
        for m in msgs:
            if m.value() is None:
                continue  # a tombstone after a delete record (which carried the version)
            try:
                if m.topic() == topics.ACL:
                    acls.append(decode(AclChange, m.value(), claims=self.claims))
                elif self.topic == topics.DOCUMENTS:
                    doc = decode(DocumentRecord, m.value(), claims=self.claims)
                    sets += [decode(ChunkSet, o.value) for o in self.chunk.process(doc)]
                else:
                    sets.append(decode(ChunkSet, m.value(), claims=self.claims))
            except Permanent as exc:  # the live stage dead-letters it; verify reports it as dead-lettered
                self.stats.failed += 1
                log.warning("replay skipped a message", topic=m.topic(), offset=m.offset(), error=str(exc))
            except Exception as exc:  # noqa: BLE001 - undecodable (the live stage dead-letters it too)
                self.stats.failed += 1
                log.warning("replay skipped a message", topic=m.topic(), offset=m.offset(),
                            error=f"{type(exc).__name__}: {exc}")
        if sets:
            try:
                vectors = self._retry(lambda: self.embed.process_batch(sets))
            except Exception as exc:  # noqa: BLE001 - one document that breaks the batch: one by one below
                if classify(exc) is not Kind.permanent:
                    raise
                vectors = []
                for one in sets:
                    try:
                        vectors += self._retry(lambda one=one: self.embed.process_batch([one]))
                    except Exception as exc1:  # noqa: BLE001
                        self._skip(exc1, one.doc_id)
            for out in vectors:
                vs = decode(VectorSet, out.value)
                try:
                    self._retry(lambda vs=vs: self.apply.process(vs))
                    self.stats.documents += 1
                except Exception as exc:  # noqa: BLE001
                    self._skip(exc, vs.doc_id)
        for change in acls:
            try:
                self._retry(lambda change=change: self.apply.apply_acl(change))
                self.stats.acl_changes += 1
            except Exception as exc:  # noqa: BLE001
                self._skip(exc, change.doc_id)
        self._retry(self.apply.flush)

    def _skip(self, exc: Exception, doc_id: str) -> None:
        """A document the live stage would dead-letter (invalid input) is skipped and counted,
        not the end of the replay; anything else (the budget spent) still ends it."""
        from ragstream.failures import Kind, classify

        if classify(exc) is not Kind.permanent:
            raise exc
        self.stats.failed += 1
        log.warning("replay skipped a document", doc_id=doc_id, error=f"{type(exc).__name__}: {exc}")

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """Transient failures (Milvus, the model server) retried within the budget; then raised."""
        from ragstream.failures import Kind, RetryBudget, classify

        budget = RetryBudget(self.settings.retry_budget_s)
        while True:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - the one classification decides
                if classify(exc) is Kind.permanent or not budget.spend() or self.stop.is_set():
                    raise
                time.sleep(budget.next_delay())

    # -- progress --------------------------------------------------------------------------
    def progress(self) -> tuple[int, int]:
        """(messages done, messages to do) since this run began, with fresh ends."""
        from confluent_kafka import TopicPartition

        from ragstream.consumer import make_consumer

        if not self._assigned.is_set():
            return 0, 0
        if self._reader is None:  # one client for every look (the orchestrator's thread only)
            self._reader = make_consumer(self.settings, "ragstream-lag-probe")
        for key in list(self._done):
            self._ends[key] = self._reader.get_watermark_offsets(TopicPartition(*key), timeout=10)[1]
        done = sum(max(0, self._done[k] - self._first.get(k, 0)) for k in self._ends)
        total = sum(max(0, self._ends[k] - self._first.get(k, 0)) for k in self._ends)
        return done, total

    def lag(self) -> int | None:
        """Messages not applied yet (None: not assigned yet)."""
        if not self._assigned.is_set():
            return None
        done, total = self.progress()
        return sum(max(0, self._ends[k] - self._done[k]) for k in self._ends)

    def _caught_up(self) -> bool:
        return all(self._done.get(k, 0) >= e for k, e in self._ends.items())


# ------------------------------------------------------------------------------ progress display
class ReplayProgress:
    """A tqdm bar (terminal) or a plain line every ``interval`` seconds: messages applied,
    rate and ETA of the replay."""

    def __init__(self, label: str, *, out: Any = None, tty: bool | None = None, interval: float = 10.0) -> None:
        import sys

        self.out = out or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.interval, self.label = interval, label
        self.t0 = time.monotonic()
        self._last = 0.0
        self._bar: Any = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=0, desc=label, unit="msg", file=self.out, leave=True,
                             bar_format="{desc} {percentage:3.0f}%|{bar:30}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def update(self, done: int, total: int, note: str = "") -> None:
        elapsed = time.monotonic() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 and total > done else (0.0 if total and done >= total else None)
        eta_s = "?" if eta is None else f"{eta:.0f}s"
        if self._bar is not None:
            self._bar.total, self._bar.n = total, done
            self._bar.set_postfix_str(f"{rate:.1f} msg/s, ETA {eta_s}{', ' + note if note else ''}", refresh=False)
            self._bar.refresh()
        elif time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            self.out.write(f"{self.label}: {done}/{total} messages, {rate:.1f}/s, ETA {eta_s}"
                           f"{'; ' + note if note else ''}\n")
            self.out.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ----------------------------------------------------------------------------- orchestration
@dataclass
class Outcome:
    alias: str
    before: str | None
    after: str
    documents: int
    seconds: float
    handover: list[str]
    verified: dict[str, int]  # source id → documents listed


def _index(settings: Settings) -> Any:
    from consumers.milvus import MilvusIndex

    return MilvusIndex(settings.resolved_milvus_uri, settings.collection, 1)  # alias work only: no vectors


def _none_publisher() -> Any:
    class _NoPublisher:  # verify reads; it never publishes
        def flush(self) -> None:
            pass

    return _NoPublisher()


#: How :func:`verify_collection` reports a source it could not open (never "in flight").
UNVERIFIABLE = "unverifiable source"


def verify_collection(settings: Settings, target: str, source_ids: Iterable[str] | None = None
                      ) -> tuple[int, dict[str, int], list[str]]:
    """Drift of every verifiable source (or those named) in collection ``target``, with the
    chunk ids ``settings``' chunker gives: (drift, {source: listed}, the findings)."""
    from ragstream.connector import known_sources, open_source
    from ragstream.verify import IndexView, can_verify, chunker_ids, verify_source

    index, ids = IndexView(settings, collection=target), chunker_ids(settings)
    drift, listed, findings = 0, {}, []
    named = source_ids is not None
    for sid in (list(source_ids) if source_ids is not None else list(known_sources(settings))):
        try:
            src = open_source(settings, sid, publisher=_none_publisher())
        except Exception as exc:  # noqa: BLE001 - a source that cannot be opened cannot be verified
            if named:  # the caller asked for this one: not verified is not "no drift"
                drift += 1
                findings.append(f"{UNVERIFIABLE} {sid}: {type(exc).__name__}: {exc}")
                continue
            # Of all the sources this home knows, skipped with a warning: the cursors remember
            # every source it ever synced, also folders since removed, which would otherwise
            # block every swap.
            log.warning("not verified", source=sid, error=str(exc))
            continue
        if not can_verify(src):
            continue
        report = verify_source(settings, src, index=index, chunk_ids=ids)
        drift += len(report.drift)
        listed[sid] = report.listed
        findings += [f"{f.kind} {f.doc_id}: {f.reason}" for f in report.drift]
    return drift, listed, findings


def settled_drift(check: Callable[[], tuple[int, dict[str, int], list[str]]], timeout: float,
                  pause: float = 1.0) -> tuple[dict[str, int], list[str]]:
    """Verify until no finding repeats: ({source: listed}, findings that stayed).

    While sources change, a document edited a moment ago is on its way (its new version is
    listed, the collection still has the previous one) and shows as drift; the next round
    it is applied, or a newer edit makes the finding a different one. A finding that comes
    back word for word (same document, same versions, same chunk ids) is not in flight: it
    is drift. The swap waits for a round with no finding, or for two rounds in a row that
    share none — unless a source could not be opened in either (its documents were not
    looked at, so nothing about them is "in flight"); it gives up after ``timeout`` seconds,
    returning what stayed."""
    deadline = time.monotonic() + timeout
    previous: set[str] | None = None
    while True:
        drift, listed, findings = check()
        now = set(findings)
        blind = any(f.startswith(UNVERIFIABLE) for f in now | (previous or set()))
        if not now or (previous is not None and not now & previous and not blind):
            return listed, []
        if previous is not None and time.monotonic() > deadline:  # at least two rounds
            return listed, sorted(now & previous) or sorted(now | previous)  # (the latter: blind)
        previous = now
        time.sleep(pause)


def _local_workers(settings: Settings, stages: Iterable[str]) -> list[str]:
    """The services of these stages that run in this home now (the local stack), the extra
    workers of `ragstream scale` included."""
    from infra.stack import SERVICES, Stack, running_replicas

    stages = tuple(stages)
    names = tuple(f"worker-{s}" for s in stages if f"worker-{s}" in SERVICES)
    own = [st.name for st in Stack(settings, names).status() if st.state not in ("stopped",)]
    return own + list(running_replicas(settings, stages))


def switch(settings: Settings, new: Settings, target: str, topic: str, *, say: Callable[[str], None],
           start: dict[int, int] | None = None, acl_start: dict[int, int] | None = None,
           source_ids: Iterable[str] | None = None, verify_timeout: float = 300, stall_timeout: float = 1800,
           progress: ReplayProgress | None = None, group: str | None = None, model_changed: bool = False,
           before_swap: Callable[[], None] | None = None) -> Outcome:
    """Fill ``target`` from ``topic`` with ``new``'s settings, verify it, move the alias, hand
    the live workers over. Raises :class:`ReindexError` (alias untouched) when it cannot.

    The catch-up has no total deadline (a large topic takes as long as it takes); it fails when
    the replay has not moved for ``stall_timeout`` seconds (the replayer's poll interval is 30
    minutes: a batch slower than that loses its consumer-group membership anyway)."""
    t0 = time.monotonic()
    alias_index = _index(settings)
    group = group or f"ragstream-reindex-{target}"
    replayer = Replayer(new, target, topic, group, start=start, acl_start=acl_start).begin()
    progress = progress or ReplayProgress(f"replay {topic} → {target}")
    try:
        # 1. catch up
        zero, last_done, moved = 0, -1, time.monotonic()
        while zero < 2:
            if replayer.error is not None:
                raise ReindexError(f"the replay failed: {type(replayer.error).__name__}: {replayer.error}")
            lag = replayer.lag()
            done, total = replayer.progress() if lag is not None else (0, 0)
            if done != last_done:
                last_done, moved = done, time.monotonic()
            elif time.monotonic() - moved > stall_timeout:
                where = "no partitions were assigned" if lag is None else f"{done}/{total} messages, lag {lag}"
                raise ReindexError(f"the replay made no progress for {stall_timeout:.0f}s ({where}); the alias "
                                   "was not moved. Check the broker and the model and run the command again; "
                                   "`ragstream reindex --gc` drops the unfinished collection.")
            progress.update(done, total, "waiting for partitions" if lag is None else f"lag {lag}")
            zero = zero + 1 if lag == 0 else 0
            time.sleep(0.5)
        progress.close()
        say(f"caught up: {replayer.stats.documents} document version(s), {replayer.stats.acl_changes} permission "
            f"change(s) applied to {target} in {time.monotonic() - t0:.1f}s ({replayer.stats.failed} skipped)")
        # 2. verify (edits in flight show as drift until applied: see settled_drift)
        def check() -> tuple[int, dict[str, int], list[str]]:
            if replayer.error is not None:
                raise ReindexError(f"the replay failed: {type(replayer.error).__name__}: {replayer.error}")
            return verify_collection(new, target, source_ids)

        listed, stayed = settled_drift(check, verify_timeout)
        if stayed:
            raise ReindexError(f"{target} still differs from the sources after {verify_timeout:.0f}s "
                               f"({len(stayed)} document(s): {'; '.join(stayed[:3])}); the alias was not moved. "
                               f"See `ragstream verify`; `ragstream reindex --gc` drops the new collection.")
        if listed:
            say(f"verify: {target} holds what the sources hold ({sum(listed.values())} document(s), no drift "
                "that is not in flight)")
        else:
            say(f"verify: no source of this home can be listed (webhooks, or none declared), so {target} was "
                "not compared with any; the swap rests on the replay having caught up (lag 0)")
        if before_swap is not None:
            before_swap()
        # 3. swap
        swapped_at = datetime.now(timezone.utc)
        before = alias_index.point_alias(target)
        cat = Catalog(settings)
        cat.swapped(settings.collection, before, target)
        cat.save()
        say(f"alias {settings.collection}: {before} → {target}")
        # 4. hand the live workers over (the replayer keeps following meanwhile)
        stages = DOWNSTREAM[topic]
        running = _local_workers(settings, stages + INDEX_HOLDERS)
        handed: list[str] = []
        if running:
            handed = _handover(settings, new, stages, running, replayer, say, model_changed)
        else:
            # The replayer stops with this command; what changes until the workers run with the
            # new settings reaches only the previous collection, and they resume past it.
            since = (swapped_at - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
            say("no live workers of this home to hand over: restart the "
                f"{', '.join(stages + INDEX_HOLDERS)} workers with these settings ({_env_line(new)}); "
                "until then they write the previous collection. Then replay what changed meanwhile into "
                f"the new one: ragstream reindex --since {since}")
        return Outcome(settings.collection, before, target, replayer.stats.documents, time.monotonic() - t0,
                       handed, listed)
    finally:
        progress.close()
        replayer.end()


def _env_line(s: Settings) -> str:
    return " ".join(f"RAGSTREAM_{k.upper()}={v}" for k, v in profile_of(s).items() if v is not None)


def _handover(settings: Settings, new: Settings, stages: tuple[str, ...], running: list[str], replayer: Replayer,
              say: Callable[[str], None], model_changed: bool) -> list[str]:
    """Stop the first downstream worker, let the others drain into the old collection, stop
    them, wait for the replayer, start them all again with the new settings."""
    from infra.stack import Stack
    from ragstream.admin import wait_drained

    def of(stage: str) -> list[str]:  # the stage's workers: its own and `ragstream scale`'s extra ones
        return [n for n in running if n == f"worker-{stage}" or n.startswith(f"worker-{stage}-")]

    first = tuple(dict.fromkeys([f"worker-{stages[0]}", *of(stages[0])]))
    Stack(settings, first).down()
    if not wait_drained(settings, timeout=600, stages=stages[1:]):
        raise ReindexError(f"the {', '.join(stages[1:])} workers did not drain within 10 minutes; the alias "
                           "points at the new collection, the replayer stopped; restart them by hand")
    names = tuple(n for s in (*stages[1:], *INDEX_HOLDERS) for n in of(s))
    if names:  # (Stack(settings, ()) means the infrastructure)
        Stack(settings, names).down()
    deadline = time.monotonic() + 600
    while replayer.lag() != 0:
        if replayer.error is not None or time.monotonic() > deadline:
            raise ReindexError("the replayer stopped following during the handover; run `ragstream reindex "
                               "--since <the swap time>` once the workers run")
        time.sleep(0.3)
    # The replayer stops before the workers start again: two writers of one collection could
    # interleave the version guard's read and write (an older ACL over a newer one). The
    # restarted workers resume from their groups' committed offsets, so nothing after the
    # replayer's position is missed.
    replayer.end()
    start = (*first, *names) + (("api",) if model_changed and "api" in _running_api(settings) else ())
    if "api" in start:
        Stack(settings, ("api",)).down()
    Stack(new, start).up()
    wait_drained(new, timeout=600, stages=stages)
    say(f"handed over: {', '.join(start)} run with {_env_line(new)}")
    return list(start)


def _running_api(settings: Settings) -> list[str]:
    from infra.stack import Stack

    return [st.name for st in Stack(settings, ("api",)).status() if st.state != "stopped"]


def new_collection_name(settings: Settings, existing: Iterable[str]) -> str:
    taken, n = set(existing), int(time.time())
    while f"{settings.collection}_{n}" in taken:
        n += 1
    return f"{settings.collection}_{n}"


def reindex(settings: Settings, changes: dict[str, Any], *, source: str = "documents",
            say: Callable[[str], None], **kw: Any) -> Outcome:
    """Replay ``rag.<source>`` into a new collection with the settings ``changes`` make,
    then swap (see the module docstring)."""
    topic = {"documents": topics.DOCUMENTS, "chunks": topics.CHUNKS}[source]
    if topic == topics.CHUNKS and any(k.startswith("chunk_") and v != getattr(settings, k)
                                      for k, v in changes.items()):
        raise ReindexError("--from chunks keeps the chunks as they are: chunker settings need --from documents")
    idx = _index(settings)
    current = idx.behind_alias()
    if current is None:
        raise ReindexError(f"nothing is indexed yet (no alias {settings.collection}); `ragstream up` first")
    cat = Catalog(settings)
    cat.record(current, profile_of(settings), "live")
    base = with_profile(settings, cat.profile(current) or profile_of(settings))
    new = with_profile(base, changes)
    target = new_collection_name(settings, idx.chunk_collections())
    cat.record(target, profile_of(new), f"reindex from {topic}")
    cat.save()
    say(f"reindexing {settings.collection} ({current}) into {target} from {topic} with {_env_line(new)}")
    model_changed = (new.embed_backend, new.embed_model) != (base.embed_backend, base.embed_model)
    return switch(base, new, target, topic, say=say, model_changed=model_changed, **kw)


def rollback(settings: Settings, *, say: Callable[[str], None], margin_s: float = 60, **kw: Any) -> Outcome:
    """Move the alias back to where the last swap took it from, after replaying the edits
    made since (rag.documents from the swap time minus ``margin_s``) into it with its settings."""
    from ragstream.admin import offsets_at

    cat = Catalog(settings)
    last = cat.last_swap(settings.collection)
    idx = _index(settings)
    if last is None or not last["from"]:
        raise ReindexError(f"no earlier collection to roll back to: alias {settings.collection} was never swapped")
    if last["from"] not in idx.chunk_collections():
        raise ReindexError(f"{last['from']} was dropped (`--gc`); reindex instead")
    current = idx.behind_alias()
    base = with_profile(settings, cat.profile(current) or profile_of(settings)) if current else settings
    old = with_profile(settings, cat.profile(last["from"]) or profile_of(settings))
    since_ms = int(last["at_ms"] - margin_s * 1000)
    say(f"rolling back {settings.collection}: {current} → {last['from']} (replaying edits since "
        f"{datetime.fromtimestamp(since_ms / 1000, timezone.utc).isoformat(timespec='seconds')})")
    model_changed = (old.embed_backend, old.embed_model) != (base.embed_backend, base.embed_model)
    return switch(base, old, last["from"], topics.DOCUMENTS, say=say, model_changed=model_changed,
                  start=offsets_at(settings, topics.DOCUMENTS, since_ms),
                  acl_start=offsets_at(settings, topics.ACL, since_ms),
                  group=f"ragstream-rollback-{last['from']}-{int(time.time())}", **kw)


def repair_since(settings: Settings, since: datetime, *, say: Callable[[str], None],
                 progress: ReplayProgress | None = None, timeout: float = 3600) -> ReplayStats:
    """Replay rag.documents and rag.acl from ``since`` to now into the collection behind the
    alias, with its settings (the version guards skip what it holds already)."""
    from ragstream.admin import offsets_at

    idx = _index(settings)
    current = idx.behind_alias()
    if current is None:
        raise ReindexError(f"nothing is indexed yet (no alias {settings.collection})")
    s = with_profile(settings, Catalog(settings).profile(current) or profile_of(settings))
    ms = int(since.timestamp() * 1000)
    replayer = Replayer(s, current, topics.DOCUMENTS, f"ragstream-repair-{current}-{int(time.time())}",
                        start=offsets_at(settings, topics.DOCUMENTS, ms), acl_start=offsets_at(settings, topics.ACL, ms),
                        until_end=True)
    progress = progress or ReplayProgress(f"repair {current}")
    replayer.begin()
    deadline = time.monotonic() + timeout
    try:
        while replayer.running and time.monotonic() < deadline:
            done, total = replayer.progress() if replayer._assigned.is_set() else (0, 0)
            progress.update(done, total)
            time.sleep(0.5)
        if replayer.error is not None:
            raise ReindexError(f"the repair failed: {type(replayer.error).__name__}: {replayer.error}")
        if replayer.running:
            raise ReindexError(f"the repair did not finish within {timeout:.0f}s")
    finally:
        progress.close()
        replayer.end()
    say(f"repaired {current} from {since.isoformat(timespec='seconds')}: {replayer.stats.documents} document "
        f"version(s), {replayer.stats.acl_changes} permission change(s) replayed, {replayer.stats.failed} skipped")
    return replayer.stats


def gc(settings: Settings, *, say: Callable[[str], None]) -> list[str]:
    """Drop the alias's collections it does not point at; return their names."""
    idx = _index(settings)
    current = idx.behind_alias()
    cat = Catalog(settings)
    dropped = []
    for name in idx.chunk_collections():
        if name != current:
            idx.drop(name)
            cat.forget(name)
            dropped.append(name)
            say(f"dropped {name}")
    cat.save()
    if not dropped:
        say(f"nothing to drop: {settings.collection} → {current} is the only collection")
    return dropped
