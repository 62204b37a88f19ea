"""The file-system connector (see the package docstring)."""

from __future__ import annotations

import fnmatch
import grp
import hashlib
import os
import pwd
import queue
import re
import stat
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pydantic import BaseModel, ConfigDict

from producers.extract import ExtractionError, UnsupportedContent, content_type_for, extract
from ragstream.connector import Capability, Connector, Excluded, ListedDocument, UpdateStats
from ragstream.logging import get_logger
from ragstream.publisher import Publisher
from ragstream.settings import Settings
from schemas.events import Acl
from schemas.principals import PUBLIC, Principal

log = get_logger(__name__)

DEFAULT_EXCLUDE = ("**/.*", ".*", "**/~$*", "**/*.tmp", "**/*.swp", "**/*~", "**/#*#")
_TITLE = re.compile(r"^#\s+(.+)$", re.MULTILINE)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FilesystemConfig(BaseModel):
    """``[sources.<id>] kind = "filesystem"`` in the sources file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path
    include: tuple[str, ...] = ("**",)
    #: Added to the hidden, temporary and editor files that are always skipped.
    exclude: tuple[str, ...] = ()
    world_readable_is_public: bool = False


class FilesystemSource(Connector):
    """A folder. ``include``/``exclude`` are glob patterns on the path relative to ``root``."""

    Config = FilesystemConfig

    kind = "filesystem"
    capabilities = frozenset({Capability.full_listing, Capability.incremental, Capability.permission_sync,
                              Capability.deletes})

    def __init__(self, settings: Settings, root: Path, source_id: str | None = None, *,
                 include: tuple[str, ...] = ("**",), exclude: tuple[str, ...] = DEFAULT_EXCLUDE,
                 debounce_s: float = 0.3, world_readable_is_public: bool = False,
                 publisher: Publisher | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a folder")
        if source_id is None:
            slug = re.sub(r"[^a-z0-9]+", "-", self.root.name.lower()).strip("-")[:40] or "root"
            source_id = f"fs-{slug}-{hashlib.sha256(str(self.root).encode()).hexdigest()[:6]}"
        self.include, self.exclude = include, exclude
        self.debounce_s, self.world_readable_is_public = debounce_s, world_readable_is_public
        super().__init__(settings, source_id, {"root": str(self.root)}, publisher)
        self.cursor.config.update(include=list(include), exclude=list(exclude),
                                  world_readable_is_public=world_readable_is_public)

    @classmethod
    def open(cls, settings: Settings, source_id: str, identity: dict, publisher: Publisher | None = None
             ) -> FilesystemSource:
        from ragstream.connector import Cursor

        saved = Cursor(settings, source_id, cls.kind, identity).config  # as it was last opened
        return cls(settings, Path(identity["root"]), source_id=source_id, publisher=publisher,
                   include=tuple(saved.get("include", ("**",))), exclude=tuple(saved.get("exclude", DEFAULT_EXCLUDE)),
                   world_readable_is_public=bool(saved.get("world_readable_is_public", False)))

    @classmethod
    def from_config(cls, settings: Settings, source_id: str, config: FilesystemConfig,
                    publisher: Publisher | None = None) -> FilesystemSource:
        return cls(settings, config.root, source_id=source_id, include=config.include,
                   exclude=DEFAULT_EXCLUDE + config.exclude, world_readable_is_public=config.world_readable_is_public,
                   publisher=publisher)

    def estimate(self) -> int:
        return len(set(self.listing()) | set(self.files) | set(self.skipped_files))

    def test_connection(self) -> str:
        return f"{self.root}: {len(self.listing())} file(s) selected"

    @property
    def files(self) -> dict[str, dict]:
        """rel → what was last published for it and acknowledged (the cursor's items)."""
        return self.cursor.items

    # -- selection ------------------------------------------------------------------------
    def doc_id(self, rel: str) -> str:
        if _CONTROL.search(rel):
            from urllib.parse import quote

            return f"{self.source_id}:/{quote(rel, safe='/')}"
        return f"{self.source_id}:{rel}"

    def native_id(self, doc_id: str) -> str:
        """The relative path a doc_id of this source names (inverse of :meth:`doc_id`)."""
        native = super().native_id(doc_id)
        if native.startswith("/"):
            from urllib.parse import unquote

            return unquote(native[1:])
        return native

    @property
    def skipped_files(self) -> dict[str, dict]:
        """rel → {reason, detail, ...} of the files the last syncs skipped or dead-lettered."""
        return self.cursor.skipped

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
    def sync(self, native_ids: Iterable[str] | None = None, *, force: bool = False,
             progress: Callable[[int], None] | None = None,
             on_publish: Callable[[str, int], None] | None = None) -> UpdateStats:
        """Publish what changed among the relative paths ``native_ids`` (None: the whole
        folder, deletions included).

        ``progress(1)`` is called per file considered, ``on_publish(doc_id, version)`` per
        event handed to the publisher (``ragstream up``'s progress display uses both)."""
        stats = UpdateStats()
        self._on_publish = on_publish
        if native_ids is None:
            candidates = sorted(set(self.listing()) | set(self.files) | set(self.skipped_files))
        else:
            candidates = sorted(set(native_ids))
        for rel in candidates:
            path = self.root / rel
            if not (path.is_file() and self.selected(rel)):
                self.skipped_files.pop(rel, None)
                if rel in self.files:
                    self.publish_delete(rel, stats=stats)
            elif not self._consider(rel, path, stats, force) and rel in self.files:
                # skipped or dead-lettered: its indexed version is no longer what the source holds
                self.publish_delete(rel, stats=stats)
            if progress:
                progress(1)
        return self.finish(stats)

    def _consider(self, rel: str, path: Path, stats: UpdateStats, force: bool) -> bool:
        """Publish the file if it changed; False if it is skipped or dead-lettered."""
        try:
            st = path.stat()
            prev = self.files.get(rel)
            if not force and prev and prev["size"] == st.st_size and prev["mtime_ns"] == st.st_mtime_ns:
                self._acl_only(rel, prev, st, stats)
                return True
            if st.st_size > self.settings.max_document_bytes:
                was = self.skipped_files.get(rel, {})
                if not force and (was.get("reason"), was.get("size"), was.get("mtime_ns")) == (
                        "too_large", st.st_size, st.st_mtime_ns):
                    stats.skip("too_large")  # logged when first seen
                    return False
                return self._skip(rel, None, "too_large",
                                  f"{_mib(st.st_size)} is above RAGSTREAM_MAX_DOCUMENT_BYTES "
                                  f"({_mib(self.settings.max_document_bytes)}); raise it to index this file",
                                  stats, size=st.st_size, mtime_ns=st.st_mtime_ns)
            data = path.read_bytes()
        except OSError as exc:
            return self._skip(rel, None, "unreadable", f"cannot read: {exc.strerror}", stats)
        sha = hashlib.sha256(data).hexdigest()
        prev = self.files.get(rel)
        if not force and prev and prev["sha256"] == sha:
            prev.update(size=st.st_size, mtime_ns=st.st_mtime_ns)  # touched, not changed
            self._acl_only(rel, prev, st, stats)
            return True
        was = self.skipped_files.get(rel, {})
        if not force and was.get("sha256") == sha:
            stats.skip(was.get("reason", "unreadable"))  # same bytes that failed before; logged then
            return False
        ctype = content_type_for(rel)
        try:
            if ctype is None:
                raise UnsupportedContent(f"file type {Path(rel).suffix or '(none)'} is not indexed")
            text = extract(data, ctype)
        except UnsupportedContent as exc:
            return self._skip(rel, sha, "unsupported", str(exc), stats)
        except RecursionError:
            return self._skip(rel, sha, "unsupported", "the document is nested too deeply to extract its text", stats)
        except ExtractionError as exc:
            self.dead_letter(rel, data, exc, stats=stats, sha256=sha)
            return False
        text_bytes = len(text.encode("utf-8", errors="replace"))
        if text_bytes > self.settings.max_text_bytes:
            return self._skip(rel, sha, "text_too_large",
                              f"its text is {_mib(text_bytes)}, above RAGSTREAM_MAX_TEXT_BYTES "
                              f"({_mib(self.settings.max_text_bytes)}); raise it to index this file", stats)
        title_match = _TITLE.search(text)
        mtime = datetime.fromtimestamp(st.st_mtime, timezone.utc)
        self.publish_upsert(rel, text, stats=stats, acl=self.acl_for(st), content_type=ctype,
                            title=title_match.group(1).strip() if title_match else Path(rel).name,
                            uri=path.as_uri(), author=user_name(st.st_uid), changed_at=mtime,
                            extra={"path": rel, "size": str(st.st_size)}, force=True, fingerprint=sha,
                            remember={"size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return True

    def _acl_only(self, rel: str, prev: dict, st: os.stat_result, stats: UpdateStats) -> None:
        """Same content; if only the permissions changed (chmod, chown), publish just the
        new ACL to ``rag.acl``: the index rewrites the rows' ACL, nothing is re-embedded."""
        acl = self.acl_for(st)
        if "acl" not in prev or prev["acl"] == list(acl.principals):
            stats.unchanged += 1  # state from before ACLs were tracked: its content event carried the ACL
            return
        self.publish_acl(rel, acl, stats=stats)

    def _skip(self, rel: str, sha: str | None, reason: str, detail: str, stats: UpdateStats, **seen: int) -> bool:
        # The sha256 (or size and mtime for a file too large to read) lets the next sync skip
        # the same bytes without a new log line.
        self.record_skip(rel, reason, detail, stats=stats, sha256=sha, **seen)
        return False

    def acl_for(self, st: os.stat_result) -> Acl:
        """The owner's and the group's principals (local names, written as they are: the
        host's logins, as LDAP and ``names = "local"`` issuers name the same people)."""
        principals = []
        if st.st_mode & stat.S_IRUSR:
            principals.append(Principal.as_is("user", user_name(st.st_uid)).text)
        if st.st_mode & stat.S_IRGRP:
            principals.append(Principal.as_is("group", group_name(st.st_gid)).text)
        if self.world_readable_is_public and st.st_mode & stat.S_IROTH:
            principals.append(PUBLIC.text)
        return Acl(principals=tuple(principals))

    # -- full listing (ragstream verify) ---------------------------------------------------
    def full_listing(self) -> Iterator[ListedDocument | Excluded]:
        """What the folder holds now, against what this source last published (see
        :mod:`ragstream.connector`). Reads a file only when its size or mtime changed."""
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
    def watch(self, stop: threading.Event, on_sync: Callable[[UpdateStats], None] | None = None,
              interval_s: float = 30.0) -> None:
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
            if on_sync and stats.published:
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
