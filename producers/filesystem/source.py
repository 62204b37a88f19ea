"""File-system producer: a folder's files as change events on ``rag.changes``.

Two ways in, one code path (:meth:`FilesystemSource.sync`):

* a **reconciliation scan** at start-up compares the folder with the persisted scan state
  (path → sha256, size, mtime, version), so changes made while ragstream was down —
  deletes and renames included — are published;
* **watchdog** reports live changes; bursts (an editor's save dance) are debounced and
  synced together.

The state is saved only after the broker acknowledged the events it records, so a crash
can repeat an event (harmless downstream) but never lose one. A rename is a delete of the
old ``doc_id`` and an upsert of the new one.

Unsupported or unreadable files are skipped with a logged, counted reason, and so are
files above ``RAGSTREAM_MAX_DOCUMENT_BYTES`` (not even read) and texts above
``RAGSTREAM_MAX_TEXT_BYTES``; a supported file that cannot be read (a corrupt PDF) is
dead-lettered to ``rag.dlq.ingest`` so that ``ragstream dlq replay ingest`` retries it once
fixed. Neither stops the watcher. The reasons stay in the scan state (``skipped``), where
``ragstream verify`` reads them. A file that was indexed and is now skipped is deleted from
the index: what is searchable is never older than what the source holds.

``doc_id`` is ``<source_id>:<relative path>``. A path with control characters (a newline
in a file name) cannot be an id as it is; it becomes ``<source_id>:/<percent-encoded
path>`` — a relative path never starts with ``/``, so the two forms cannot collide.

ACLs come from ownership and mode bits: ``user:<owner>`` if the owner may read,
``group:<group>`` if the group may; "others may read" maps to ``public`` only when
``world_readable_is_public`` is set. A file nobody may read gets an empty ACL: fail closed.
"""

from __future__ import annotations

import fnmatch
import grp
import hashlib
import json
import os
import pwd
import queue
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

from producers.extract import ExtractionError, UnsupportedContent, content_type_for, extract
from producers.listing import Excluded, ListedDocument
from producers.publisher import Publisher
from ragstream.blobs import BlobStore
from ragstream.logging import get_logger
from ragstream.metrics import SOURCE_EVENTS, SOURCE_SKIPPED
from ragstream.settings import Settings
from schemas import topics
from schemas.events import Acl, AclChange, ChangeEvent, DocMetadata, InlineContent, Op, SourceKind

log = get_logger(__name__)

DEFAULT_EXCLUDE = ("**/.*", ".*", "**/~$*", "**/*.tmp", "**/*.swp", "**/*~", "**/#*#")
_TITLE = re.compile(r"^#\s+(.+)$", re.MULTILINE)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class SyncStats:
    upserts: int = 0
    deletes: int = 0
    unchanged: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    acl_changes: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped_by_reason.items()))
        return (f"{self.upserts} upserted, {self.acl_changes} permission-only, {self.deletes} deleted, "
                f"{self.unchanged} unchanged, {self.skipped} skipped{f' ({why})' if why else ''}, "
                f"{self.dead_lettered} dead-lettered")


@dataclass
class _Pending:
    rel: str
    entry: dict | None  # None: remove from state


@dataclass
class FilesystemSource:
    settings: Settings
    root: Path
    source_id: str | None = None
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    debounce_s: float = 0.3
    world_readable_is_public: bool = False
    publisher: Publisher | None = None
    _state: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.root = self.root.expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a folder")
        if self.source_id is None:
            slug = re.sub(r"[^a-z0-9]+", "-", self.root.name.lower()).strip("-")[:40] or "root"
            self.source_id = f"fs-{slug}-{hashlib.sha256(str(self.root).encode()).hexdigest()[:6]}"
        self.blobs = BlobStore(self.settings.blob_dir)
        self.state_path = self.settings.home / "sources" / f"{self.source_id}.json"
        self._state = self._load_state()
        if self.publisher is None:
            self.publisher = Publisher(self.settings, client_id=f"ragstream-{self.source_id}")

    # -- state ----------------------------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"root": str(self.root), "files": {}, "skipped": {}}
        if data.get("root") != str(self.root):
            raise ValueError(f"{self.state_path} belongs to {data.get('root')}, not {self.root}")
        return data

    def _save_state(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    @property
    def files(self) -> dict[str, dict]:
        return self._state["files"]

    # -- selection ------------------------------------------------------------------------
    def doc_id(self, rel: str) -> str:
        if _CONTROL.search(rel):
            from urllib.parse import quote

            return f"{self.source_id}:/{quote(rel, safe='/')}"
        return f"{self.source_id}:{rel}"

    def rel_of(self, doc_id: str) -> str:
        """The relative path a doc_id of this source names (inverse of :meth:`doc_id`)."""
        native = doc_id.removeprefix(f"{self.source_id}:")
        if native.startswith("/"):
            from urllib.parse import unquote

            return unquote(native[1:])
        return native

    @property
    def skipped_files(self) -> dict[str, dict]:
        """rel → {reason, detail, ...} of the files the last syncs skipped or dead-lettered."""
        return self._state["skipped"]

    def rel(self, path: str | Path) -> str | None:
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def selected(self, rel: str) -> bool:
        def m(patterns: tuple[str, ...]) -> bool:
            return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, p.removeprefix("**/"))
                       for p in patterns)

        return m(self.include) and not m(self.exclude)

    def listing(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                rel = (Path(dirpath) / name).relative_to(self.root).as_posix()
                if self.selected(rel):
                    out.append(rel)
        return sorted(out)

    # -- the one code path ------------------------------------------------------------------
    def sync(self, rels: Iterable[str] | None = None, *, progress: Callable[[int], None] | None = None,
             force: bool = False, on_publish: Callable[[str, int], None] | None = None) -> SyncStats:
        """Publish what changed among ``rels`` (None: the whole folder, deletions included).

        ``progress(1)`` is called per file considered, ``on_publish(doc_id, version)`` per
        event handed to the publisher (``ragstream up``'s progress display uses both)."""
        stats = SyncStats()
        self._on_publish = on_publish
        if rels is None:
            on_disk = self.listing()
            candidates = sorted(set(on_disk) | set(self.files) | set(self._state["skipped"]))
        else:
            candidates = sorted(set(rels))
        pending: list[_Pending] = []
        acked: set[str] = set()
        failed: list[str] = []

        def on_delivery(rel: str) -> Callable:
            def cb(err: object, _msg: object) -> None:
                (failed.append(rel) if err is not None else acked.add(rel))
            return cb

        for rel in candidates:
            path = self.root / rel
            exists = path.is_file() and self.selected(rel)
            if not exists:
                self._state["skipped"].pop(rel, None)
                if rel in self.files:
                    self._publish_delete(rel, on_delivery(rel))
                    pending.append(_Pending(rel, None))
                    stats.deletes += 1
            else:
                result = self._consider(rel, path, on_delivery(rel), force)
                if isinstance(result, dict):
                    acl_only = result.pop("acl_only", False)
                    pending.append(_Pending(rel, result))
                    if acl_only:
                        stats.acl_changes += 1
                    else:
                        stats.upserts += 1
                elif result == "unchanged":
                    stats.unchanged += 1
                else:
                    if result == "dead-lettered":
                        stats.dead_lettered += 1
                    else:
                        stats.skipped += 1
                        reason = self._state["skipped"].get(rel, {}).get("reason", "unreadable")
                        stats.skipped_by_reason[reason] = stats.skipped_by_reason.get(reason, 0) + 1
                    if rel in self.files:  # its indexed version is no longer what the source holds
                        self._publish_delete(rel, on_delivery(rel))
                        pending.append(_Pending(rel, None))
                        stats.deletes += 1
            if progress:
                progress(1)
        assert self.publisher is not None
        try:
            self.publisher.flush()
        finally:
            # Record only what the broker acknowledged; the rest is retried next sync.
            for p in pending:
                if p.rel not in acked:
                    continue
                if p.entry is None:
                    self.files.pop(p.rel, None)
                else:
                    self.files[p.rel] = p.entry
            self._save_state()
        return stats

    def _consider(self, rel: str, path: Path, cb: Callable, force: bool) -> dict | str:
        try:
            st = path.stat()
            prev = self.files.get(rel)
            if not force and prev and prev["size"] == st.st_size and prev["mtime_ns"] == st.st_mtime_ns:
                return self._acl_only(rel, prev, st, cb)
            if st.st_size > self.settings.max_document_bytes:
                was = self._state["skipped"].get(rel, {})
                if not force and (was.get("reason"), was.get("size"), was.get("mtime_ns")) == (
                        "too_large", st.st_size, st.st_mtime_ns):
                    return "skipped"  # logged when first seen
                return self._skip(rel, None, "too_large",
                                  f"{_mib(st.st_size)} is above RAGSTREAM_MAX_DOCUMENT_BYTES "
                                  f"({_mib(self.settings.max_document_bytes)}); raise it to index this file",
                                  size=st.st_size, mtime_ns=st.st_mtime_ns)
            data = path.read_bytes()
        except OSError as exc:
            return self._skip(rel, None, "unreadable", f"cannot read: {exc.strerror}")
        sha = hashlib.sha256(data).hexdigest()
        prev = self.files.get(rel)
        if not force and prev and prev["sha256"] == sha:
            prev.update(size=st.st_size, mtime_ns=st.st_mtime_ns)  # touched, not changed
            return self._acl_only(rel, prev, st, cb)
        if not force and self._state["skipped"].get(rel, {}).get("sha256") == sha:
            return "skipped"  # same bytes that failed before; logged then
        ctype = content_type_for(rel)
        try:
            if ctype is None:
                raise UnsupportedContent(f"file type {Path(rel).suffix or '(none)'} is not indexed")
            text = extract(data, ctype)
        except UnsupportedContent as exc:
            return self._skip(rel, sha, "unsupported", str(exc))
        except RecursionError:
            return self._skip(rel, sha, "unsupported", "the document is nested too deeply to extract its text")
        except ExtractionError as exc:
            self._skip(rel, sha, "extraction_failed", str(exc))
            assert self.publisher is not None
            self.publisher.dead_letter("ingest", topic=topics.CHANGES, partition=-1, offset=-1,
                                       key=self.doc_id(rel), value=data if len(data) <= self.settings.inline_max_bytes else b"",
                                       error=exc)
            return "dead-lettered"
        text_bytes = len(text.encode("utf-8", errors="replace"))
        if text_bytes > self.settings.max_text_bytes:
            return self._skip(rel, sha, "text_too_large",
                              f"its text is {_mib(text_bytes)}, above RAGSTREAM_MAX_TEXT_BYTES "
                              f"({_mib(self.settings.max_text_bytes)}); raise it to index this file")
        self._state["skipped"].pop(rel, None)
        version = max(time.time_ns(), (prev or {}).get("version", 0) + 1)
        content = (InlineContent.of(text) if text_bytes <= self.settings.inline_max_bytes
                   else self.blobs.put(text))
        title_match = _TITLE.search(text)
        mtime = datetime.fromtimestamp(st.st_mtime, timezone.utc)
        event = ChangeEvent(
            source=self.source_id, source_kind=SourceKind.filesystem, doc_id=self.doc_id(rel), op=Op.upsert,
            version=version, changed_at=mtime, content=content, content_type=ctype,
            metadata=DocMetadata(title=(title_match.group(1).strip() if title_match else Path(rel).name)[:1024],
                                 uri=path.as_uri(), author=user_name(st.st_uid), modified_at=mtime,
                                 extra={"path": rel, "size": str(st.st_size)}),
            acl=self.acl_for(st),
        )
        assert self.publisher is not None
        self.publisher.publish(topics.CHANGES, event, on_delivery=cb)
        self._published(event.doc_id, version)
        SOURCE_EVENTS.labels(self.source_id, "upsert").inc()
        log.info("change published", doc_id=event.doc_id, event_id=event.event_id, op="upsert", version=version)
        return {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": version,
                "acl": list(event.acl.principals)}

    def _acl_only(self, rel: str, prev: dict, st: os.stat_result, cb: Callable) -> dict | str:
        """Same content; if only the permissions changed (chmod, chown), publish just the
        new ACL to ``rag.acl``: the index rewrites the rows' ACL, nothing is re-embedded."""
        acl = self.acl_for(st)
        if "acl" not in prev or prev["acl"] == list(acl.principals):
            return "unchanged"  # state from before ACLs were tracked: its content event carried the ACL
        version = max(time.time_ns(), prev["version"] + 1)
        change = AclChange(source=self.source_id, doc_id=self.doc_id(rel), version=version, acl=acl)
        assert self.publisher is not None
        self.publisher.publish(topics.ACL, change, on_delivery=cb)
        self._published(change.doc_id, version)
        SOURCE_EVENTS.labels(self.source_id, "acl").inc()
        log.info("permission change published", doc_id=change.doc_id, event_id=change.event_id, version=version)
        return {**prev, "version": version, "acl": list(acl.principals), "acl_only": True}

    def _publish_delete(self, rel: str, cb: Callable) -> None:
        prev = self.files[rel]
        event = ChangeEvent(source=self.source_id, source_kind=SourceKind.filesystem, doc_id=self.doc_id(rel),
                            op=Op.delete, version=max(time.time_ns(), prev["version"] + 1),
                            changed_at=datetime.now(timezone.utc))
        assert self.publisher is not None
        self.publisher.publish(topics.CHANGES, event, on_delivery=cb)
        self._published(event.doc_id, event.version)
        SOURCE_EVENTS.labels(self.source_id, "delete").inc()
        log.info("change published", doc_id=event.doc_id, event_id=event.event_id, op="delete")

    def _published(self, doc_id: str, version: int) -> None:
        hook = getattr(self, "_on_publish", None)
        if hook is not None:
            hook(doc_id, version)

    def _skip(self, rel: str, sha: str | None, reason: str, detail: str, **seen: int) -> str:
        SOURCE_SKIPPED.labels(self.source_id, reason).inc()
        log.warning("file skipped", doc_id=self.doc_id(rel), reason=reason, detail=detail)
        # Kept for `ragstream verify` and the summary; the sha256 (or size and mtime for a
        # file too large to read) lets the next sync skip the same bytes without a new line.
        self._state["skipped"][rel] = {"sha256": sha, "reason": reason, "detail": detail, **seen}
        return "skipped"

    def acl_for(self, st: os.stat_result) -> Acl:
        principals = []
        if st.st_mode & stat.S_IRUSR:
            principals.append(f"user:{user_name(st.st_uid)}")
        if st.st_mode & stat.S_IRGRP:
            principals.append(f"group:{group_name(st.st_gid)}")
        if self.world_readable_is_public and st.st_mode & stat.S_IROTH:
            principals.append("public")
        return Acl(principals=tuple(principals))

    # -- full listing (ragstream verify) ---------------------------------------------------
    def full_listing(self) -> Iterator[ListedDocument | Excluded]:
        """What the folder holds now, against what this source last published (see
        :mod:`producers.listing`). Reads a file only when its size or mtime changed."""
        for rel in self.listing():
            path = self.root / rel
            try:
                st = path.stat()
            except OSError:
                continue  # gone while listing
            prev = self.files.get(rel)
            skip = self.skipped_files.get(rel)
            same_stat = prev is not None and (prev["size"], prev["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
            sha = None
            if not same_stat and (skip is None or skip.get("sha256") is not None):
                try:
                    sha = hashlib.sha256(path.read_bytes()).hexdigest()
                except OSError:
                    sha = None
            if skip is not None:
                current = (skip.get("sha256") == sha if skip.get("sha256") is not None else
                           (skip.get("size"), skip.get("mtime_ns")) == (st.st_size, st.st_mtime_ns)
                           or skip["reason"] == "unreadable")
                if current:
                    kind = "dead_lettered" if skip["reason"] == "extraction_failed" else "skipped"
                    yield Excluded(self.doc_id(rel), kind, f"{skip['reason']}: {skip.get('detail', '')}")
                    continue
            acl = tuple(self.acl_for(st).principals)
            if prev is None:
                yield ListedDocument(self.doc_id(rel), None, acl, changed_since_published=True)
                continue
            unchanged = same_stat or prev["sha256"] == sha
            yield ListedDocument(self.doc_id(rel), prev["version"], tuple(prev.get("acl", acl)),
                                 changed_since_published=not unchanged or list(acl) != prev.get("acl", list(acl)))

    # -- live -----------------------------------------------------------------------------
    def watch(self, stop: threading.Event, on_sync: Callable[[SyncStats], None] | None = None) -> None:
        """Watch until ``stop`` is set; debounce bursts, then sync the touched paths."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        touched: queue.Queue[str | None] = queue.Queue()

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                if event.is_directory and event.event_type in ("moved", "deleted", "created"):
                    touched.put(None)  # a whole subtree moved: rescan
                    return
                for p in (event.src_path, getattr(event, "dest_path", "")):
                    if p:
                        touched.put(os.fsdecode(p))

        observer = Observer()
        observer.schedule(Handler(), str(self.root), recursive=True)
        observer.start()
        try:
            # Changes made before the observer started (e.g. between a start-up scan and
            # now) produce no event: reconcile once now that nothing can slip through.
            stats = self.sync()
            if on_sync and (stats.upserts or stats.deletes or stats.acl_changes):
                on_sync(stats)
            while not stop.is_set():
                try:
                    first = touched.get(timeout=0.2)
                except queue.Empty:
                    continue
                batch: set[str | None] = {first}
                deadline = time.monotonic() + self.debounce_s
                while time.monotonic() < deadline:  # quiet period: absorb the burst
                    try:
                        batch.add(touched.get(timeout=max(deadline - time.monotonic(), 0.01)))
                        deadline = time.monotonic() + self.debounce_s
                    except queue.Empty:
                        break
                if None in batch:
                    stats = self.sync()
                else:
                    rels = {r for p in batch if p and (r := self.rel(p)) is not None}
                    stats = self.sync(rels)
                if on_sync:
                    on_sync(stats)
        finally:
            observer.stop()
            observer.join()


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid-{uid}"


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid-{gid}"


def load_source(settings: Settings, source_id: str, publisher: Publisher | None = None) -> FilesystemSource:
    """The source a doc_id's prefix names, from its saved state (dead-letter replay, verify)."""
    path = settings.home / "sources" / f"{source_id}.json"
    try:
        root = json.loads(path.read_text())["root"]
    except FileNotFoundError:
        raise ValueError(f"no file-system source {source_id!r} is known here ({path} is missing)") from None
    except (KeyError, ValueError):
        raise ValueError(f"{path} is not the state of a file-system source") from None
    return FilesystemSource(settings, Path(root), source_id=source_id, publisher=publisher)


def known_sources(settings: Settings) -> list[str]:
    """The ids of the file-system sources that ever synced into this home."""
    out = []
    for path in sorted((settings.home / "sources").glob("*.json")):
        try:
            if "root" in json.loads(path.read_text()):  # another kind of source keeps other state
                out.append(path.stem)
        except (OSError, ValueError):
            continue
    return out
