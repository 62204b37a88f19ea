"""The source connector contract: one shape for every source.

A connector turns one source (a folder, a SharePoint site, an S3 bucket, a Confluence
space, …) into change events on ``rag.changes`` and permission changes on ``rag.acl``. It
lives in its own package, ``producers/<kind>/``, with the same files every time::

    producers/<kind>/__init__.py   CONNECTOR = <the Connector subclass>; the module docstring
                                   says what the source is and how it maps to documents
    producers/<kind>/source.py     the Connector subclass (sync, full listing, watch)
    producers/<kind>/…             helpers only this source needs (API client, ACL mapping)

The runtime never names a concrete source: DLQ replay, DSR rectification and ``ragstream
verify`` find a source's connector through :func:`open_source` (as the sources file declares
it, else by the kind its cursor records), ``ragstream up`` and ``ragstream sources`` through
:func:`declared_sources`, and all use only what is declared here, guided by the connector's
:class:`Capability` set. Connectors are discovered among the packages under ``producers/``
and the extra packages named in ``RAGSTREAM_CONNECTOR_MODULES`` (a plugin, or a test's toy
source), so adding one changes nothing outside its own package.

Three rules, taken from what works in the field:

* **The cursor moves only with acknowledged messages** (quix-streams' ``StatefulSource``):
  a :class:`Cursor` records what a sync published only once the broker acknowledged it, and
  an incremental position (a delta token) only when everything before it was acknowledged.
  A crash can repeat an event — harmless, every effect downstream is idempotent — but never
  lose one.
* **Declared capabilities** (Onyx's connector mixins): what a source cannot do is said, not
  faked — ``verify`` reports "cannot list" for a source without a full listing.
* **One update-statistics type** (:class:`UpdateStats`) for every source, so ``up``'s
  progress, logs and metrics read the same whatever the source.

Example: a minimal connector over a dict of texts (``tests/toy_source/`` is one that runs
in the suite, with a full listing and dead letters)::

    class Notes(Connector):
        kind = "notes"
        capabilities = frozenset({Capability.deletes})

        def __init__(self, settings, texts, source_id="notes", publisher=None):
            self.texts = texts
            super().__init__(settings, source_id, {}, publisher)

        @classmethod
        def open(cls, settings, source_id, identity, publisher=None):
            raise ConnectorError("notes live in memory: nothing to reopen")

        def sync(self, native_ids=None, *, force=False, progress=None, on_publish=None):
            stats = UpdateStats()
            for nid in sorted(set(self.texts) | set(self.cursor.items)):
                if nid in self.texts:
                    self.publish_upsert(nid, self.texts[nid], stats=stats, acl=Acl(principals=("group:team",)))
                else:
                    self.publish_delete(nid, stats=stats)
            return self.finish(stats)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pkgutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Callable, ClassVar, Iterable, Iterator

from pydantic import BaseModel

from ragstream.logging import get_logger
from ragstream.metrics import SOURCE_EVENTS, SOURCE_SKIPPED
from ragstream.publisher import Publisher
from ragstream.settings import Settings
from schemas import topics
from schemas.events import Acl, AclChange, ChangeEvent, DocMetadata, InlineContent, Op

log = get_logger(__name__)


class Capability(StrEnum):
    #: Can list every document it holds now, from the source itself (``verify``, full syncs).
    full_listing = "full_listing"
    #: Can follow changes after a sync (a watcher, a delta token, polling) — ``watch``.
    incremental = "incremental"
    #: Publishes permission-only changes to ``rag.acl`` (nothing is re-embedded).
    permission_sync = "permission_sync"
    #: Notices documents deleted at the source and publishes their deletion.
    deletes = "deletes"


class ConnectorError(ValueError):
    """A source cannot be opened: unknown id, unknown kind, a cursor of another source."""


# ------------------------------------------------------------------------------------------ stats
@dataclass
class UpdateStats:
    """What one sync did, the same for every source."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    permission_only: int = 0
    skipped: int = 0
    #: Could not be read although supported (a corrupt file): dead-lettered to rag.dlq.ingest.
    failed: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def published(self) -> int:
        return self.added + self.changed + self.deleted + self.permission_only

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1

    def __add__(self, other: UpdateStats) -> UpdateStats:
        reasons = dict(self.skipped_by_reason)
        for r, n in other.skipped_by_reason.items():
            reasons[r] = reasons.get(r, 0) + n
        return UpdateStats(self.added + other.added, self.changed + other.changed, self.unchanged + other.unchanged,
                           self.deleted + other.deleted, self.permission_only + other.permission_only,
                           self.skipped + other.skipped, self.failed + other.failed, reasons)

    def __str__(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped_by_reason.items()))
        return (f"{self.added} added, {self.changed} changed, {self.permission_only} permission-only, "
                f"{self.deleted} deleted, {self.unchanged} unchanged, "
                f"{self.skipped} skipped{f' ({why})' if why else ''}, {self.failed} dead-lettered")


# ---------------------------------------------------------------------------------------- listing
@dataclass(frozen=True)
class ListedDocument:
    """A document the source holds now and that should be searchable."""

    doc_id: str
    #: The version the source last published for this document; None if it never did.
    version: int | None
    #: The principals the source grants read access to, as published (fail closed: () = nobody).
    acl: tuple[str, ...]
    #: The source changed since it last published this document (content or permissions):
    #: the index cannot be current until the source publishes again.
    changed_since_published: bool = False


@dataclass(frozen=True)
class Excluded:
    """A document the source holds but, on purpose, does not index."""

    doc_id: str
    #: ``skipped`` (too large, unsupported, unreadable) or ``dead_lettered`` (ingestion failed).
    kind: str
    reason: str


# ----------------------------------------------------------------------------------------- cursor
class Cursor:
    """A source's persistent state, committed only together with acknowledged messages.

    ``items`` maps a native id to what was last published for it and acknowledged (at least
    ``version``, ``acl`` and a content fingerprint); ``skipped`` holds the reasons of what
    was not indexed (``verify`` reads them); ``position`` holds incremental positions (a
    delta token). A sync stages its changes with :meth:`stage` / :meth:`advance` and makes
    them durable with :meth:`commit` after the publisher's flush: an item whose message was
    not acknowledged keeps its old entry (the next sync sends it again), and positions move
    only if every staged message was acknowledged.
    """

    def __init__(self, settings: Settings, source_id: str, kind: str, identity: dict[str, Any]) -> None:
        self.path = settings.home / "sources" / f"{source_id}.json"
        self.source_id, self.kind, self.identity = source_id, kind, identity
        self._staged: list[tuple[str, dict | None, list[bool]]] = []
        self._advance: dict[str, Any] = {}
        data = self._load()
        if data is None:
            data = {"kind": kind, "identity": identity, "items": {}, "skipped": {}, "position": {}}
        elif data.get("kind") != kind or data.get("identity") != identity:
            raise ConnectorError(f"{self.path} is the cursor of a {data.get('kind')} source "
                                 f"{data.get('identity')}, not of this {kind} source {identity}")
        self._data = data

    def _load(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            raise ConnectorError(f"{self.path} is not a source cursor (not JSON); move it away to start over") from None
        return upgrade(data)

    @property
    def items(self) -> dict[str, dict]:
        return self._data["items"]

    @property
    def skipped(self) -> dict[str, dict]:
        return self._data["skipped"]

    @property
    def position(self) -> dict[str, Any]:
        return self._data["position"]

    @property
    def config(self) -> dict[str, Any]:
        """The source's settings as last opened (not part of its identity): what ``open``
        restores when the runtime reopens a source that is not in the sources file."""
        return self._data.setdefault("config", {})

    def stage(self, native_id: str, entry: dict | None) -> Callable[[Any, Any], None]:
        """Record ``entry`` (None: forget the item) once its message is acknowledged; returns
        the delivery callback to pass to the publisher."""
        acked: list[bool] = []
        self._staged.append((native_id, entry, acked))

        def delivered(err: Any, _msg: Any) -> None:
            acked.append(err is None)
        return delivered

    def advance(self, key: str, value: Any) -> None:
        """Move an incremental position on commit, if every staged message was acknowledged."""
        self._advance[key] = value

    def commit(self) -> None:
        """Apply what the broker acknowledged (call after the publisher's flush) and save."""
        complete = True
        for native_id, entry, acked in self._staged:
            if not (acked and acked[0]):
                complete = False
                continue
            if entry is None:
                self.items.pop(native_id, None)
            else:
                self.items[native_id] = entry
        if complete:
            self.position.update(self._advance)
        self._staged, self._advance = [], {}
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def upgrade(data: dict) -> dict:
    """Cursors written before the contract: a file-system source's ``{root, files, skipped}``."""
    if "kind" not in data and "root" in data:
        return {"kind": "filesystem", "identity": {"root": data["root"]}, "items": data.get("files", {}),
                "skipped": data.get("skipped", {}), "position": {}}
    return data


# -------------------------------------------------------------------------------------- connector
class Connector(ABC):
    """One source. Subclasses set ``kind`` and ``capabilities`` and implement :meth:`sync`
    (and :meth:`full_listing` if they declare it); :meth:`open` re-opens a source from its
    cursor for the runtime (DLQ replay, DSR, verify)."""

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    #: The pydantic model of this kind's section in the sources file (``extra="forbid"``
    #: recommended, so a misspelt key is an error); None: the kind cannot be declared there.
    Config: ClassVar[type[BaseModel] | None] = None

    def __init__(self, settings: Settings, source_id: str, identity: dict[str, Any],
                 publisher: Publisher | None = None) -> None:
        self.settings, self.source_id = settings, source_id
        self.cursor = Cursor(settings, source_id, self.kind, identity)
        if publisher is None:  # sources write as the producer principal (the local broker's ACLs), wherever they run
            from ragstream.kafka import PRODUCER

            publisher = Publisher(settings.model_copy(update={"kafka_principal": PRODUCER}),
                                  client_id=f"ragstream-{source_id}")
        self.publisher = publisher
        self._on_publish: Callable[[str, int], None] | None = None

    # -- what every connector provides -------------------------------------------------------
    @classmethod
    @abstractmethod
    def open(cls, settings: Settings, source_id: str, identity: dict[str, Any],
             publisher: Publisher | None = None) -> Connector:
        """The source ``source_id`` again, from what its cursor recorded (``identity``)."""

    @classmethod
    def from_config(cls, settings: Settings, source_id: str, config: Any,
                    publisher: Publisher | None = None) -> Connector:
        """The source a sources-file section declares (``config`` is a validated ``Config``)."""
        raise NotImplementedError(f"a {cls.kind} source cannot be declared in the sources file")

    def estimate(self) -> int | None:
        """How many items a full sync will consider, if cheap to know (progress displays)."""
        return None

    def test_connection(self) -> str:
        """Reach the source with its credentials and say what was found (``ragstream sources
        test``); raise a ConnectorError that says what is wrong otherwise."""
        return "no connection test for this kind of source"

    @abstractmethod
    def sync(self, native_ids: Iterable[str] | None = None, *, force: bool = False,
             progress: Callable[[int], None] | None = None,
             on_publish: Callable[[str, int], None] | None = None) -> UpdateStats:
        """Publish what changed among ``native_ids`` (None: everything, deletions included
        when the source declares ``deletes``); ``force`` republishes even unchanged items.
        ``progress(1)`` per item considered, ``on_publish(doc_id, version)`` per event."""

    def full_listing(self) -> Iterator[ListedDocument | Excluded]:
        """Every document the source holds now, read from the source (not the cursor)."""
        raise NotImplementedError(f"a {self.kind} source cannot list its documents")

    def watch(self, stop: Any, on_sync: Callable[[UpdateStats], None] | None = None,
              interval_s: float = 30.0) -> None:
        """Follow changes until ``stop`` (a threading.Event) is set. Default: a sync every
        ``interval_s``; connectors with a native change feed override it."""
        while not stop.is_set():
            stats = self.sync()
            if on_sync and stats.published:
                on_sync(stats)
            stop.wait(interval_s)

    # -- ids --------------------------------------------------------------------------------
    def doc_id(self, native_id: str) -> str:
        return f"{self.source_id}:{native_id}"

    def native_id(self, doc_id: str) -> str:
        """The source's own id for a doc_id of this source (inverse of :meth:`doc_id`)."""
        prefix = f"{self.source_id}:"
        if not doc_id.startswith(prefix):
            raise ConnectorError(f"{doc_id!r} is not a document of source {self.source_id}")
        return doc_id[len(prefix):]

    def reread(self, doc_ids: Iterable[str]) -> UpdateStats:
        """Publish these documents again from the source as it is now (DLQ replay, DSR
        rectification): a document gone at the source is published as deleted."""
        return self.sync([self.native_id(d) for d in doc_ids], force=True)

    # -- helpers for implementations ----------------------------------------------------------
    def next_version(self, native_id: str) -> int:
        """Monotonic per document, across restarts (nanoseconds, above the last published)."""
        return max(time.time_ns(), self.cursor.items.get(native_id, {}).get("version", 0) + 1)

    def publish_upsert(self, native_id: str, text: str, *, stats: UpdateStats, acl: Acl,
                       content_type: str = "text/plain", title: str | None = None, uri: str | None = None,
                       author: str | None = None, changed_at: datetime | None = None,
                       extra: dict[str, str] | None = None, force: bool = False,
                       fingerprint: str | None = None, remember: dict[str, Any] | None = None) -> None:
        """Publish ``text`` as the document's new content, or only its ACL if the content is
        the same, or nothing if neither changed (unless ``force``). ``fingerprint`` names
        the content (default: the text's sha256; a connector may hash the raw bytes);
        ``remember`` adds fields to the cursor entry (e.g. size and mtime for a cheap check)."""
        prev = self.cursor.items.get(native_id)
        sha = fingerprint or hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
        principals = list(acl.principals)
        if not force and prev and prev.get("sha256") == sha:
            if prev.get("acl") == principals:
                stats.unchanged += 1
                return
            if Capability.permission_sync in self.capabilities:
                self.publish_acl(native_id, acl, stats=stats)
                return
            # No permission-only path: the whole document goes again, with its new ACL.
        self.cursor.skipped.pop(native_id, None)
        version = self.next_version(native_id)
        changed_at = changed_at or datetime.now(timezone.utc)
        size = len(text.encode("utf-8", errors="replace"))
        content = InlineContent.of(text) if size <= self.settings.inline_max_bytes else self._blobs().put(text)
        event = ChangeEvent(source=self.source_id, source_kind=self.kind, doc_id=self.doc_id(native_id),
                            op=Op.upsert, version=version, changed_at=changed_at, content=content,
                            content_type=content_type,
                            metadata=DocMetadata(title=(title or native_id)[:1024], uri=uri, author=author,
                                                 modified_at=changed_at, extra=extra or {}),
                            acl=acl)
        self.publisher.publish(topics.CHANGES, event, on_delivery=self.cursor.stage(
            native_id, {**(remember or {}), "sha256": sha, "version": version, "acl": principals}))
        if prev:
            stats.changed += 1
        else:
            stats.added += 1
        self._published(event.doc_id, version, "upsert", event.event_id)

    def publish_acl(self, native_id: str, acl: Acl, *, stats: UpdateStats) -> None:
        prev = self.cursor.items[native_id]
        version = self.next_version(native_id)
        change = AclChange(source=self.source_id, doc_id=self.doc_id(native_id), version=version, acl=acl)
        self.publisher.publish(topics.ACL, change, on_delivery=self.cursor.stage(
            native_id, {**prev, "version": version, "acl": list(acl.principals)}))
        stats.permission_only += 1
        self._published(change.doc_id, version, "acl", change.event_id)

    def publish_delete(self, native_id: str, *, stats: UpdateStats) -> None:
        version = self.next_version(native_id)
        event = ChangeEvent(source=self.source_id, source_kind=self.kind, doc_id=self.doc_id(native_id),
                            op=Op.delete, version=version, changed_at=datetime.now(timezone.utc))
        self.publisher.publish(topics.CHANGES, event, on_delivery=self.cursor.stage(native_id, None))
        stats.deleted += 1
        self._published(event.doc_id, version, "delete", event.event_id)

    def record_skip(self, native_id: str, reason: str, detail: str, *, stats: UpdateStats, **seen: Any) -> None:
        """Not indexed, on purpose: counted, logged once, kept for ``verify``."""
        SOURCE_SKIPPED.labels(self.source_id, reason).inc()
        log.warning("document skipped", doc_id=self.doc_id(native_id), reason=reason, detail=detail)
        self.cursor.skipped[native_id] = {"reason": reason, "detail": detail, **seen}
        stats.skip(reason)

    def dead_letter(self, native_id: str, data: bytes, error: BaseException, *, stats: UpdateStats,
                    sha256: str | None = None) -> None:
        """An item the source holds but cannot read (a corrupt PDF): kept for ``verify`` as
        ``extraction_failed`` and sent to ``rag.dlq.ingest`` (its bytes when small enough), so
        ``ragstream dlq replay ingest`` reads it again once fixed."""
        SOURCE_SKIPPED.labels(self.source_id, "extraction_failed").inc()
        log.warning("document dead-lettered", doc_id=self.doc_id(native_id), error=str(error))
        self.cursor.skipped[native_id] = {"sha256": sha256, "reason": "extraction_failed", "detail": str(error)}
        self.publisher.dead_letter("ingest", topic=topics.CHANGES, partition=-1, offset=-1, key=self.doc_id(native_id),
                                   value=data if len(data) <= self.settings.inline_max_bytes else b"", error=error)
        stats.failed += 1

    def finish(self, stats: UpdateStats) -> UpdateStats:
        """Wait for every acknowledgement, then commit the cursor (only what was acknowledged)."""
        try:
            self.publisher.flush()
        finally:
            self.cursor.commit()
        return stats

    def _published(self, doc_id: str, version: int, op: str, event_id: str) -> None:
        SOURCE_EVENTS.labels(self.source_id, op).inc()
        log.info("change published", doc_id=doc_id, event_id=event_id, op=op, version=version)
        if self._on_publish is not None:
            self._on_publish(doc_id, version)

    def _blobs(self) -> Any:
        from ragstream.blobs import BlobStore

        return BlobStore(self.settings.blob_dir)


# --------------------------------------------------------------------------------------- registry
def connector_classes(settings: Settings) -> dict[str, type[Connector]]:
    """kind → Connector class: every package under ``producers/`` that defines ``CONNECTOR``,
    and the packages ``RAGSTREAM_CONNECTOR_MODULES`` names.

    This is the one place the foundation reaches sources, by name at run time, the way a
    plugin is found (tests/test_layers.py names it as the sanctioned exception). A bundled
    package that fails to import is logged and left out — one broken connector does not
    take the others down; a package named in RAGSTREAM_CONNECTOR_MODULES must load."""
    explicit = [n.strip() for n in settings.connector_modules.split(",") if n.strip()]
    bundled = []
    try:
        producers = importlib.import_module("producers")
        bundled = [f"producers.{m.name}" for m in pkgutil.iter_modules(producers.__path__) if m.ispkg]
    except ImportError:  # an installation without the bundled connectors
        pass
    found: dict[str, type[Connector]] = {}
    for name in bundled + explicit:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - whatever a broken package raises
            if name not in explicit:
                log.error("a bundled connector package cannot be loaded; its sources are unavailable",
                          package=name, error=f"{type(exc).__name__}: {exc}")
                continue
            raise ConnectorError(f"cannot load the connector package {name!r}: {exc}; "
                                 "check RAGSTREAM_CONNECTOR_MODULES") from exc
        cls = getattr(module, "CONNECTOR", None)
        if cls is None:
            if name in explicit:
                raise ConnectorError(f"{name} defines no CONNECTOR (a Connector subclass)")
            continue
        found[cls.kind] = cls
    return found


def known_sources(settings: Settings) -> dict[str, str]:
    """source_id → kind of every source whose cursor is in this home."""
    out = {}
    for path in sorted((settings.home / "sources").glob("*.json")):
        try:
            data = upgrade(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "kind" in data:
            out[path.stem] = data["kind"]
    return out


def open_source(settings: Settings, source_id: str, publisher: Publisher | None = None) -> Connector:
    """The source ``source_id`` (a doc_id's prefix): as the sources file declares it if it
    does, else from its cursor in this home."""
    if settings.sources_file is not None:
        for declared in declared_sources(settings, publisher=publisher):
            if declared.source_id == source_id:
                return declared
    path = settings.home / "sources" / f"{source_id}.json"
    try:
        data = upgrade(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConnectorError(f"no source {source_id!r} is known here ({path} is missing)") from None
    except ValueError:
        raise ConnectorError(f"{path} is not a source cursor") from None
    classes = connector_classes(settings)
    cls = classes.get(data.get("kind", ""))
    if cls is None:
        raise ConnectorError(f"source {source_id!r} is a {data.get('kind')!r} source and no connector for that kind "
                             f"is loaded (known: {', '.join(sorted(classes)) or 'none'}); "
                             "set RAGSTREAM_CONNECTOR_MODULES to its package")
    return cls.open(settings, source_id, data.get("identity", {}), publisher=publisher)


class SourcesFileError(SystemExit):
    """The sources file is missing, not TOML, or a section is invalid: says which and what to do."""


def declared_sources(settings: Settings, publisher: Publisher | None = None) -> list[Connector]:
    """The sources ``RAGSTREAM_SOURCES_FILE`` declares, validated (all sections, before any
    source is opened), in file order. The file::

        [sources.team-docs]          # the source id: lower case, digits, '.', '_' and '-'
        kind = "s3"                  # a connector kind (see connector_classes)
        bucket = "team-docs"         # ... the keys of that kind's Config model

    Credentials are never written in the file: a kind's Config names an environment
    variable or a secret file to read them from.
    """
    if settings.sources_file is None:
        return []
    import re
    import tomllib

    from pydantic import ValidationError

    path = settings.sources_file
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourcesFileError(f"sources file {path} does not exist: create it or unset RAGSTREAM_SOURCES_FILE") from None
    except tomllib.TOMLDecodeError as exc:
        raise SourcesFileError(f"sources file {path} is not valid TOML: {exc}") from None
    sections = data.pop("sources", None)
    if data or not isinstance(sections, dict):
        raise SourcesFileError(f"sources file {path}: declare each source as a [sources.<id>] table "
                               f"(unexpected: {', '.join(data) or 'no [sources.*] table'})")
    classes = connector_classes(settings)
    problems: list[str] = []
    validated: list[tuple[str, type[Connector], Any]] = []
    for source_id, section in sections.items():
        where = f"[sources.{source_id}]"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", source_id):
            problems.append(f"{where}: the id must be lower case letters, digits, '.', '_' or '-' (at most 64)")
            continue
        if not isinstance(section, dict):
            problems.append(f"{where}: must be a table")
            continue
        section = dict(section)
        kind = section.pop("kind", None)
        cls = classes.get(kind or "")
        if cls is None or cls.Config is None:
            declarable = sorted(k for k, c in classes.items() if c.Config is not None)
            problems.append(f"{where} kind: {kind!r} is not a kind of source that can be declared "
                            f"(declarable: {', '.join(declarable) or 'none'})")
            continue
        try:
            validated.append((source_id, cls, cls.Config.model_validate(section)))
        except ValidationError as exc:
            problems += [f"{where} {'.'.join(str(p) for p in e['loc']) or '(section)'}: {e['msg']}" for e in exc.errors()]
    if problems:
        raise SourcesFileError(f"sources file {path} is invalid:\n  " + "\n  ".join(problems))
    return [cls.from_config(settings, sid, cfg, publisher=publisher) for sid, cls, cfg in validated]


def source_of(doc_id: str) -> str:
    return doc_id.partition(":")[0]
